"""``speedbench report``: recompute summaries from run directories and print them; with two directories,
compare them like for like (paired requests only); a sweep directory: the sweep report.  What a directory is and
every figure and file come from ``usecases/report.py``; this module parses the flags and prints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from speedbench.cli.common import fail, one_line, print_page, user_errors

if TYPE_CHECKING:
    from rich.console import Console

    from speedbench.results.comparison import Comparison
    from speedbench.usecases.report import Runs


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
    from speedbench.report.console import make_console
    from speedbench.report.sweep import print_sweep_report
    from speedbench.usecases import report as uc

    if len(run_dirs) > 2:
        fail("report takes one run directory, or two to compare")
    if figures is not None and html is None:
        fail("--figures goes with --html (the figures are the page's)")
    folder = None if figures is None else Path(figures)
    if len(run_dirs) == 1 and uc.is_sweep(run_dirs[0]):
        errors: tuple[type[BaseException], ...] = (*user_errors(), OSError)
        try:
            sweep, files = uc.report_sweep(run_dirs[0], resamples, seed)
        except errors as e:
            fail(one_line(e))
            raise  # unreachable: fail exits
        console = make_console()
        print_sweep_report(sweep, console, [str(f) for f in files])
        if html is not None:
            print_page(lambda: uc.write_sweep_page(sweep, html, folder), html, console)
        return
    try:
        runs = uc.open_runs(run_dirs, force, resamples, seed)
    except user_errors() as e:
        fail(one_line(e))
        raise  # unreachable: fail exits
    console = make_console()
    _print_runs(runs, console)
    if runs.comparison is not None:
        _print_comparison(runs, runs.comparison, console)
    if html is not None:
        print_page(lambda: uc.write_runs_page(runs, html, folder), html, console)


def _warn_unlike(runs: Runs, console: Console, where: str) -> None:
    from rich.markup import escape

    if runs.unlike():
        console.print(
            escape(f"WARNING (--force): {runs.unlike()}; the comparison {where} is NOT like for like"),
            style="bold red",
            soft_wrap=True,
        )


def _print_runs(runs: Runs, console: Console) -> None:
    """Each run's state first (not complete, torn records, no success), then each run's tables."""
    from rich.markup import escape

    from speedbench.report.console import print_status_lines, print_summary

    for r in runs.results:
        print_status_lines(r, console)
    _warn_unlike(runs, console, "below")
    for d, r in zip(runs.names, runs.results, strict=True):
        console.print(f"[bold]{escape(d)}[/bold]")
        print_summary(r.summary, console)


def _print_comparison(runs: Runs, comparison: Comparison, console: Console) -> None:
    from rich.markup import escape

    from speedbench.report.console import comparison_table, ratios_table
    from speedbench.results.estimates import TARGET_HALF_WIDTH

    for line in runs.cautions():  # before the verdict: what may make it wrong
        console.print(escape(line), style="bold red", soft_wrap=True)
    console.print(ratios_table(comparison.rows, "A", "B", TARGET_HALF_WIDTH))
    console.print(comparison_table(comparison.rows, "A", "B"))
    by_note: dict[str, list[str]] = {}
    for r in comparison.rows:
        if r.stats.note:
            by_note.setdefault(r.stats.note, []).append(r.category)
    notes = [f"{', '.join(cats)}: {note}" for note, cats in by_note.items()]
    console.print(
        escape(
            f"A = {runs.names[0]}, B = {runs.names[1]}; {comparison.pairing.describe()}; the tables' figures are over "
            "the paired requests only; speedup = mean user tok/s B / A over them; 95% intervals: percentile bootstrap "
            f"over conversations, {runs.resamples} resamples, seed {runs.seed}: they cover prompt sampling, not "
            "run-to-run noise (docs/statistics.md)" + "".join(f"; {n}" for n in notes)
        ),
        soft_wrap=True,
    )
    _warn_unlike(runs, console, "above")
