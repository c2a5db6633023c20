"""The figures of a sweep report (``speedbench report SWEEP_DIR``, docs/sweep.md "Report"): each configuration's
settings and figures, the concurrency x draft length tables per (SD method, dataset, engine options), the Pareto
front and the synthetic-vs-real comparisons.  Built by ``analysis/sweep_report.py``, drawn by ``report/``, written
as CSV by ``results/sweep_files.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speedbench.results.estimates import Estimate
from speedbench.results.sweep_manifest import SweepManifest

OptionKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CellFigures:
    """One cell's settings and figures (None: not known; ``note`` says why)."""

    id: str
    sd: str
    k: int
    concurrency: int
    dataset: str
    engine_options: OptionKey
    status: str
    baseline: str | None  # the baseline cell's id (None: this is a baseline)
    output_tps: float | None = None
    user_tps_mean: float | None = None
    speedup: Estimate | None = None  # SD cells only
    al: Estimate | None = None
    paired: int | None = None  # SD cells: paired (question_id, turn)
    baseline_output_tps: float | None = None
    baseline_user_tps_mean: float | None = None
    note: str = ""  # why there is no figure (or why some repeats were left out)
    repeats: int = 1  # the repeats its figures pool (usable ones)
    baseline_repeats: int = 0  # SD cells: its baseline's usable repeats
    cells: tuple[str, ...] = ()  # every repeat's cell id

    @property
    def is_baseline(self) -> bool:
        return self.sd == "none"

    @property
    def options_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.engine_options)


@dataclass(frozen=True)
class SweepTable:
    """One (SD method, dataset, engine options): rows concurrency, columns draft length, each entry a cell (or
    absent); ``best_k`` per concurrency: the draft length marked best (None: no speedup in that row)."""

    sd: str
    dataset: str
    engine_options: OptionKey
    concurrencies: tuple[int, ...]
    ks: tuple[int, ...]
    cells: dict[tuple[int, int], CellFigures]
    best_k: dict[int, int | None]

    @property
    def title(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.engine_options)
        return f"{self.sd} on {self.dataset}" + (f" ({opts})" if opts else "")


@dataclass(frozen=True)
class SyntheticBias:
    """Real vs synthetic prompts of one ISL under one SD configuration: each side's AL (``al_b``: mean over its SD
    cell's paired requests of 1 + accepted/steps) and speedup over its own baseline, with intervals, and the ratio
    synthetic / real of each with its unpaired interval (> 1: random tokens overstate it, < 1: understate)."""

    sd: str
    k: int
    concurrency: int
    engine_options: OptionKey
    isl: int
    real: str
    synthetic: str
    al_real: Estimate
    al_synthetic: Estimate
    al_ratio: Estimate
    speedup_real: Estimate
    speedup_synthetic: Estimate
    speedup_ratio: Estimate
    conversations: tuple[int, int]  # real, synthetic (paired conversations of each side)


@dataclass(frozen=True)
class SweepReport:
    """The sweep report: every configuration's figures (``cells``), the tables, the Pareto front, synthetic vs
    real; ``manifest``: the sweep.json they were read from (the page's facts)."""

    path: Path
    manifest: SweepManifest
    cells: tuple[CellFigures, ...]
    tables: tuple[SweepTable, ...]
    on_front: dict[str, bool]  # cell id -> on the Pareto front
    resamples: int  # the bootstrap's
    seed: int
    repeats: int  # the grid's
    bias: tuple[SyntheticBias, ...]  # synthetic vs real, per SD configuration and ISL

    @property
    def notes(self) -> dict[str, str]:
        """Each cell without figures: why."""
        return {c.id: c.note for c in self.cells if c.note}
