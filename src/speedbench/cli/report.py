"""``speedbench report``: recompute summaries from run directories and print them; with two directories,
compare them like for like (paired requests only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from speedbench.cli.common import fail, one_line, user_errors

if TYPE_CHECKING:
    from rich.console import Console

    from speedbench.analysis.pairing import Comparison, Pairing
    from speedbench.analysis.stats import Estimate
    from speedbench.analysis.sweep_report import SweepReport
    from speedbench.report.html import Page
    from speedbench.results.loader import RunResult


def register(app: typer.Typer) -> None:
    app.command()(report)


def report(
    run_dirs: Annotated[
        list[str], typer.Argument(help="one run directory, or two to compare (baseline first), or one sweep directory")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="compare two runs even when they differ in dataset content, selected question ids, output "
            "length, temperature or ignore_eos (a loud warning says what differs)",
        ),
    ] = False,
    resamples: Annotated[
        int,
        typer.Option(
            "--resamples",
            min=1000,
            help="two directories or a sweep: bootstrap resamples of the conversations for the 95% intervals",
        ),
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="two directories or a sweep: the bootstrap's seed")] = 0,
    html: Annotated[
        Optional[str],
        typer.Option(
            "--html",
            help="also write one self-contained HTML page (figures inline, no network) of the run, the comparison "
            "or the sweep to this file (docs/report.md)",
        ),
    ] = None,
    figures: Annotated[
        Optional[str],
        typer.Option("--figures", help="also save every figure of the page as SVG and PNG into this folder"),
    ] = None,
) -> None:
    """Recompute summaries from records.jsonl + manifest.json and print the tables.  Two directories: the
    runs must match in dataset content hash, selected question ids, output length, temperature and
    ignore_eos (else refused, or with --force warned); only the (question_id, turn) successful in both
    are compared, with 95% intervals from a paired bootstrap over conversations (docs/statistics.md).  A sweep
    directory (it holds sweep.json): every SD cell against its baseline cell, per (method, dataset) tables of
    speedup, AL and output tok/s by concurrency x draft length, the Pareto front; writes pareto.csv and
    speedups.csv into it (docs/sweep.md "Report").  --html writes the same as a page with figures (and, for a
    sweep, its fitted model when model.json is there); --figures saves each figure as SVG and PNG."""
    from speedbench.analysis.pairing import pair_runs
    from speedbench.report.console import make_console

    if len(run_dirs) > 2:
        fail("report takes one run directory, or two to compare")
    if figures is not None and html is None:
        fail("--figures goes with --html (the figures are the page's)")
    if len(run_dirs) == 1 and _is_sweep(run_dirs[0]):
        _report_sweep(run_dirs[0], resamples, seed, html, figures)
        return
    results = [_load(d) for d in run_dirs]
    pairing = pair_runs(results[0], results[1]) if len(results) == 2 else None
    if pairing is not None and pairing.differences and not force:
        fail(f"{_unlike(run_dirs, pairing)}; compare runs of the same prompts and settings, or pass --force")
    console = make_console()
    _print_runs(run_dirs, results, pairing, console)
    comparison = None
    if pairing is not None:
        comparison = _print_comparison(run_dirs, results, pairing, console, resamples, seed)
    if html is not None:
        from speedbench.report.pages import comparison_page, run_page

        def page() -> Page:
            if pairing is None or comparison is None:
                return run_page(results[0], _al_intervals(results[0], resamples, seed), _folder(figures), resamples)
            names = (run_dirs[0], run_dirs[1])
            pair = (results[0], results[1])
            return comparison_page(names, pair, pairing, comparison.rows, resamples, seed, _folder(figures))

        write_html(page, html, console)


def _is_sweep(path: str) -> bool:
    return (Path(path) / "sweep.json").is_file()


def _report_sweep(path: str, resamples: int, seed: int, html: str | None, figures: str | None) -> None:
    from speedbench.analysis.sweep_report import sweep_tables, write_files
    from speedbench.report.console import make_console
    from speedbench.report.sweep import print_sweep_report

    errors: tuple[type[BaseException], ...] = (*user_errors(), OSError)
    try:
        report = sweep_tables(path, resamples, seed)
        files = write_files(report)
    except errors as e:
        fail(one_line(e))
        raise  # unreachable: fail exits
    console = make_console()
    print_sweep_report(report, console, [str(f) for f in files])
    if html is not None:
        write_html(lambda: sweep_html(report, figures), html, console)


def sweep_html(report: SweepReport, figures: str | None) -> Page:
    """The sweep's page, with its fitted model's figures when SWEEP_DIR/model.json is there."""
    import json

    from speedbench.report.sweep_page import sweep_page
    from speedbench.results.sweep_manifest import read_sweep

    model_json = report.path / "model.json"
    model = json.loads(model_json.read_text(encoding="utf-8")) if model_json.is_file() else None
    return sweep_page(report, read_sweep(report.path), model, _folder(figures))


def write_html(build: Callable[[], Page], out: str, console: Console, strict: bool = True) -> Path | None:
    """Build the page (figures need the ``report`` extra: one line naming it when missing) and write it
    atomically; say where it went and how big it is.  ``strict``: a failure exits 2 (the page was asked for);
    else it is one line and None (the page comes with a sweep or a model, whose own results stand)."""
    from rich.markup import escape

    from speedbench.atomic import atomic_write
    from speedbench.extras import MissingExtra

    errors: tuple[type[BaseException], ...] = (*user_errors(), OSError, MissingExtra)
    try:
        page = build()
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = page.render()
        atomic_write(path, text)
    except errors as e:
        if not strict:
            console.print(escape(f"no {out}: {one_line(e)}"), soft_wrap=True, highlight=False)
            return None
        fail(f"--html {out}: {one_line(e)}")
        raise  # unreachable: fail exits
    size = len(text.encode("utf-8")) / 1e6
    saved = f"; {len(page.saved)} figure files in {page.figures_dir}" if page.saved else ""
    console.print(escape(f"wrote {path} ({size:.2f} MB, {len(page.charts)} figures{saved})"), soft_wrap=True)
    return path


def _folder(figures: str | None) -> Path | None:
    return None if figures is None else Path(figures)


def _al_intervals(result: RunResult, resamples: int, seed: int) -> dict[str, Estimate]:
    from speedbench.analysis.stats import al_by_category

    m = result.manifest
    return al_by_category(result.records, m.basis, resamples, seed)


def _load(path: str) -> RunResult:
    from speedbench.results.loader import load_run

    try:
        return load_run(path)
    except user_errors() as e:
        fail(one_line(e))
        raise  # unreachable: fail exits


def _unlike(run_dirs: list[str], pairing: Pairing) -> str:
    what = "; ".join(str(d) for d in pairing.differences)
    return f"{run_dirs[0]} (A) and {run_dirs[1]} (B) are not like for like: {what}"


def _warn_unlike(run_dirs: list[str], pairing: Pairing, console: Console, where: str) -> None:
    from rich.markup import escape

    if pairing.differences:
        console.print(
            escape(f"WARNING (--force): {_unlike(run_dirs, pairing)}; the comparison {where} is NOT like for like"),
            style="bold red",
            soft_wrap=True,
        )


def _print_runs(run_dirs: list[str], results: list[RunResult], pairing: Pairing | None, console: Console) -> None:
    """Each run's state first (not complete, torn records, no success), then each run's tables; summary.json
    and summary.csv are rewritten from the records."""
    from rich.markup import escape

    from speedbench.report.console import print_status_lines, print_summary
    from speedbench.results.rundir import RunDir

    for r in results:
        print_status_lines(r, console)
    if pairing is not None:
        _warn_unlike(run_dirs, pairing, console, "below")
    for d, r in zip(run_dirs, results, strict=True):
        RunDir(d).write_summary(r.summary)
        console.print(f"[bold]{escape(d)}[/bold]")
        print_summary(r.summary, console)


def _print_comparison(
    run_dirs: list[str], results: list[RunResult], pairing: Pairing, console: Console, resamples: int, seed: int
) -> Comparison:
    from rich.markup import escape

    from speedbench.analysis.pairing import compare_paired
    from speedbench.analysis.stats import TARGET_HALF_WIDTH
    from speedbench.report.console import comparison_table, ratios_table

    comparison = compare_paired(results[0], results[1], pairing, resamples, seed)
    console.print(ratios_table(comparison.rows, "A", "B", TARGET_HALF_WIDTH))
    console.print(comparison_table(comparison.rows, "A", "B"))
    by_note: dict[str, list[str]] = {}
    for r in comparison.rows:
        if r.stats.note:
            by_note.setdefault(r.stats.note, []).append(r.category)
    notes = [f"{', '.join(cats)}: {note}" for note, cats in by_note.items()]
    console.print(
        escape(
            f"A = {run_dirs[0]}, B = {run_dirs[1]}; {pairing.describe()}; the tables' figures are over the paired "
            "requests only; speedup = mean user tok/s B / A over them; 95% intervals: percentile bootstrap over "
            f"conversations, {resamples} resamples, seed {seed}: they cover prompt sampling, not run-to-run noise "
            "(docs/statistics.md)" + "".join(f"; {n}" for n in notes)
        ),
        soft_wrap=True,
    )
    _warn_unlike(run_dirs, pairing, console, "above")
    return comparison
