"""``speedbench report`` and ``speedbench model``: what a directory is, and everything those commands compute and
write, for the command line to print.

- ``is_sweep(dir)``: a sweep directory holds sweep.json; anything else given to ``report`` is a run directory.
- ``open_runs(dirs)``: one run, or two compared like for like (A = the baseline, first): each run loaded with its
  summary recomputed from records + manifest and rewritten (summary.json, summary.csv), the pairing (refused when
  the runs are not like for like, unless ``force``) and the paired comparison with its bootstrap intervals.
- ``open_sweep(dir)``: the sweep report (``analysis.sweep_report``; sweep.json read once); ``report_sweep`` also
  writes its pareto.csv, speedups.csv and synthetic_vs_real.csv.
- ``fit_model(dir, ...)``: the fitted speedup model (``analysis.model_summary``) as ``results.model_file.ModelFile``,
  written as SWEEP_DIR/model.json.
- ``write_runs_page`` / ``write_sweep_page`` / ``write_model_page``: the HTML page of each (``report/``; a sweep's
  shows its fitted model when model.json is there), written with its ``--figures`` files.

Every file is written by ``results/`` (rundir, sweep_files, model_file, pages).  Errors are raised (``ReportError``
and the loaders' one-line errors); the command line turns them into one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from speedbench.analysis.pairing import compare_paired, pair_runs
from speedbench.analysis.stats import RESAMPLES, al_by_category
from speedbench.analysis.sweep_report import sweep_tables
from speedbench.errors import InvalidInput
from speedbench.results.comparison import Comparison, Pairing
from speedbench.results.loader import RunResult, load_run
from speedbench.results.manifest import FreshServer
from speedbench.results.model_file import ModelFile, read_model, write_model
from speedbench.results.pages import write_page
from speedbench.results.rundir import RunDir
from speedbench.results.sweep_figures import SweepReport
from speedbench.results.sweep_files import write_files
from speedbench.results.sweep_manifest import SWEEP_FILE

if TYPE_CHECKING:
    from speedbench.report.html import Page

MODEL_PAGE = "model.html"
SWEEP_PAGE = "report.html"


class ReportError(InvalidInput):
    """Runs that cannot be reported as asked (two runs not like for like without ``force``)."""


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


# ---- runs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runs:
    """One run, or two compared (``names[0]`` = A, the baseline): the loaded runs and, for two, the pairing of
    their requests and the comparison over the paired ones."""

    names: tuple[str, ...]
    results: tuple[RunResult, ...]
    resamples: int
    seed: int
    pairing: Pairing | None = None
    comparison: Comparison | None = None

    def unlike(self) -> str:
        """What makes the two runs not like for like ('' when they are, or there is one run)."""
        if self.pairing is None or not self.pairing.differences:
            return ""
        what = "; ".join(str(d) for d in self.pairing.differences)
        return f"{self.names[0]} (A) and {self.names[1]} (B) are not like for like: {what}"

    def cautions(self) -> list[str]:
        """What may make the comparison's verdict wrong, one line per cause (none for one run): a side whose speed
        drifted during its measured window (summary.json ``drift``), and one side on a freshly started engine
        when the other was not (manifest ``fresh_server``)."""
        if len(self.results) != 2:
            return []
        return comparison_cautions((self.names[0], self.names[1]), (self.results[0], self.results[1]))


def comparison_cautions(names: tuple[str, str], results: tuple[RunResult, RunResult]) -> list[str]:
    """``Runs.cautions`` of two runs (A, B)."""
    from speedbench.report.console import drifted_figures

    sides = ("A", "B")
    out = []
    for side, name, r in zip(sides, names, results, strict=True):
        d = r.summary.drift
        if d is not None and d.drifted:
            out.append(
                f"DRIFT in {side} ({name}): {drifted_figures(d)}: its speed changed during the run, so the "
                f"comparison holds a server that was not in one state; rerun {side} (a longer --warmup when it got "
                "faster) before trusting the verdict below"
            )
    fresh = [
        r.manifest.fresh_server or FreshServer(why="not recorded (a run written before speedbench kept it)")
        for r in results
    ]
    if [f.fresh for f in fresh].count(True) == 1:
        cold = 0 if fresh[0].fresh else 1
        warm = 1 - cold
        other = "was not" if fresh[warm].fresh is False else "may not have been"
        out.append(
            f"COLD vs WARM: {sides[cold]} ({names[cold]}) ran on a freshly started engine ({fresh[cold].why}), "
            f"{sides[warm]} ({names[warm]}) {other} ({fresh[warm].why}): a fresh server is slower at first; rerun "
            f"{sides[cold]} on a warm server (or with a longer --warmup), or run both on fresh servers or both on "
            "warm ones"
        )
    return out


def open_runs(dirs: Sequence[str], force: bool = False, resamples: int = RESAMPLES, seed: int = 0) -> Runs:
    """Load one or two run directories (their summaries recomputed and rewritten); two are paired and compared,
    refused when they are not like for like unless ``force``."""
    results = tuple(load_run(d) for d in dirs)
    runs = Runs(tuple(dirs), results, resamples, seed)
    if len(results) == 2:
        runs = Runs(runs.names, results, resamples, seed, pair_runs(results[0], results[1]))
        if runs.unlike() and not force:
            raise ReportError(f"{runs.unlike()}; compare runs of the same prompts and settings, or pass --force")
    for d, r in zip(dirs, results, strict=True):
        RunDir(d).write_summary(r.summary)
    if runs.pairing is None:
        return runs
    comparison = compare_paired(results[0], results[1], runs.pairing, resamples, seed)
    return Runs(runs.names, results, resamples, seed, runs.pairing, comparison)


# ---- pages --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageWritten:
    """A page written: where, its size, its figures and the figure files written beside (``--figures``)."""

    path: Path
    size: int  # bytes of UTF-8
    charts: int
    figures_dir: Path | None = None
    saved: tuple[Path, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        saved = f"; {len(self.saved)} figure files in {self.figures_dir}" if self.saved else ""
        return f"wrote {self.path} ({self.size / 1e6:.2f} MB, {self.charts} figures{saved})"


def write_html(build: Callable[[], Page], out: str | Path) -> PageWritten:
    """Build the page (its figures need the ``report`` extra: ``extras.MissingExtra`` when it is missing), render
    it and write it with its figure files."""
    page = build()
    path = Path(out)
    text = page.render()
    saved = write_page(path, text, page.figures_dir, page.figure_files())
    return PageWritten(path, len(text.encode("utf-8")), len(page.charts), page.figures_dir, tuple(saved))


def write_runs_page(runs: Runs, out: str | Path, figures_dir: Path | None = None) -> PageWritten:
    """The run's page (its AL per category with bootstrap intervals), or the comparison's."""
    from speedbench.report.pages import comparison_page, run_page

    def build() -> Page:
        if runs.pairing is None or runs.comparison is None:
            r = runs.results[0]
            m = r.manifest
            intervals = al_by_category(r.records, m.basis, runs.resamples, runs.seed)
            return run_page(r, intervals, figures_dir, runs.resamples)
        names = (runs.names[0], runs.names[1])
        pair = (runs.results[0], runs.results[1])
        rows = runs.comparison.rows
        return comparison_page(names, pair, runs.pairing, rows, runs.resamples, runs.seed, figures_dir, runs.cautions())

    return write_html(build, out)


# ---- a sweep ------------------------------------------------------------------------------------------------


def open_sweep(sweep_dir: str | Path, resamples: int = RESAMPLES, seed: int = 0) -> SweepReport:
    """The sweep report: every configuration's figures from its cells' run directories (read-only)."""
    return sweep_tables(sweep_dir, resamples, seed)


def report_sweep(
    sweep_dir: str | Path, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[SweepReport, tuple[Path, ...]]:
    """``report SWEEP_DIR``: the sweep report, and its files written (SWEEP_DIR/pareto.csv, speedups.csv and, when
    there is a synthetic-vs-real comparison, synthetic_vs_real.csv)."""
    report = sweep_tables(sweep_dir, resamples, seed)
    return report, write_files(report)


def write_sweep_page(
    report: SweepReport, out: str | Path | None = None, figures_dir: Path | None = None
) -> PageWritten:
    """The sweep's page (default SWEEP_DIR/report.html), with its fitted model's figures when SWEEP_DIR/model.json
    is there."""
    from speedbench.report.sweep_page import sweep_page

    return write_html(
        lambda: sweep_page(report, read_model(report.path), figures_dir),
        report.path / SWEEP_PAGE if out is None else out,
    )


# ---- the model ----------------------------------------------------------------------------------------------


def fit_model(
    sweep_dir: str | Path,
    sd: str | None = None,
    dataset: str | None = None,
    holdout: str | None = None,
    batches: Sequence[float] | None = None,
    knee: bool | None = None,
    per_request: bool | None = None,
    slo: str | None = None,
    seed: int = 0,
) -> tuple[ModelFile, Path]:
    """Fit the speedup model of one SD method on one dataset of the sweep and write SWEEP_DIR/model.json; returns the
    model and the file's path."""
    from speedbench.analysis.model_summary import model_summary

    data = model_summary(sweep_dir, sd, dataset, holdout, batches, knee, seed, per_request, slo)
    model = ModelFile.model_validate(data)
    return model, write_model(sweep_dir, model)


def write_model_page(model: ModelFile, sweep_dir: str | Path) -> PageWritten:
    """SWEEP_DIR/model.html: the model's page."""
    from speedbench.report.sweep_page import model_page

    return write_html(lambda: model_page(model), Path(sweep_dir) / MODEL_PAGE)
