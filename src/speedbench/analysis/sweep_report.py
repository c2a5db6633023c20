"""The sweep report: every cell's figures from its run directory alone, each SD cell against its paired
baseline cell, laid out per (SD method, dataset, engine options) as concurrency x draft length tables, plus
the throughput / per-user-speed Pareto front (docs/sweep.md "Report").

``sweep.json`` only says which cells there are, their settings, their baseline and their status; every figure
is recomputed from the cell's run directory (``results.loader.load_run``):

- speedup: ``analysis.pairing.compare_paired`` of the baseline cell (A) and the SD cell (B), overall row: mean user
  tok/s B / A over the paired requests, with its 95% interval (paired bootstrap over conversations);
- AL: the paired statistics' ``al_b`` (mean over the SD cell's paired requests of 1 + accepted/steps) with its
  interval when it has one; else the run summary's AL over drafted steps (no interval);
- output tok/s and mean user tok/s: the cell's run summary (overall).

A cell counts only when the sweep recorded it ``complete`` and its run directory loads with a ``complete`` run;
an SD cell also needs such a baseline.  Anything else has no figure and a note saying why.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from speedbench.analysis.pairing import compare_paired, pair_runs
from speedbench.analysis.stats import RESAMPLES, Estimate
from speedbench.results.loader import RunResult, load_run
from speedbench.results.rundir import RunDirError
from speedbench.results.sweep_manifest import SweepCell, read_sweep

PARETO_CSV = "pareto.csv"
SPEEDUPS_CSV = "speedups.csv"
PARETO_COLUMNS = (
    "cell_id",
    "sd",
    "k",
    "concurrency",
    "dataset",
    "output_tps",
    "user_tps_mean",
    "speedup",
    "speedup_lo",
    "speedup_hi",
    "al",
    "on_front",
)
SPEEDUP_COLUMNS = (
    "cell_id",
    "sd",
    "k",
    "concurrency",
    "dataset",
    "engine_options",
    "baseline",
    "paired",
    "speedup",
    "speedup_lo",
    "speedup_hi",
    "significant",
    "al",
    "al_lo",
    "al_hi",
    "output_tps",
    "baseline_output_tps",
    "user_tps_mean",
    "baseline_user_tps_mean",
    "note",
)

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
    note: str = ""  # why there is no figure

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
class SweepReport:
    path: Path
    cells: tuple[CellFigures, ...]
    tables: tuple[SweepTable, ...]
    on_front: dict[str, bool] = field(default_factory=dict)  # cell id -> on the Pareto front
    resamples: int = RESAMPLES
    seed: int = 0

    @property
    def notes(self) -> dict[str, str]:
        """Each cell without figures: why."""
        return {c.id: c.note for c in self.cells if c.note}


# ---- the Pareto front -----------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """Which points are on the Pareto front when both coordinates are maximised: no other point is at least as
    high in both and higher in one.  A point with a missing coordinate is never on it (nor dominates)."""
    known = [(i, (x, y)) for i, (x, y) in enumerate(points) if x is not None and y is not None]
    out = [False] * len(points)
    for i, (x, y) in known:
        out[i] = not any(ox >= x and oy >= y and (ox > x or oy > y) for j, (ox, oy) in known if j != i)
    return out


# ---- best draft length -----------------------------------------------------------------------------------


def best_draft_length(row: dict[int, Estimate | None]) -> int | None:
    """The draft length with the highest point speedup among the significantly faster ones (interval above 1);
    when none is, the highest point speedup; None when the row has no speedup."""
    known = {k: e for k, e in row.items() if e is not None and e.point is not None}
    if not known:
        return None
    faster = {k: e for k, e in known.items() if e.significant and e.lo is not None and e.lo > 1.0}
    pool = faster or known
    return max(sorted(pool), key=lambda k: pool[k].point or 0.0)


# ---- reading the cells -----------------------------------------------------------------------------------


def _load(sweep_dir: Path, cell: SweepCell) -> tuple[RunResult | None, str]:
    """The cell's run when it is usable, else why not."""
    if cell.status != "complete":
        return None, f"{cell.status}" + (f": {cell.cause}" if cell.cause else "")
    try:
        run = load_run(sweep_dir / cell.dir)
    except (RunDirError, OSError) as e:
        return None, f"run directory unreadable: {e}"
    if run.manifest.status != "complete":
        return None, f"run {run.manifest.status}"
    return run, ""


def _options(cell: SweepCell) -> OptionKey:
    return tuple(sorted(cell.settings.engine_options.items()))


def _tps(run: RunResult | None) -> tuple[float | None, float | None]:
    if run is None:
        return None, None
    o = run.summary.overall
    return o.output_tps, o.user_tps.mean


def _summary_al(run: RunResult) -> Estimate:
    o = run.summary.overall
    point = o.acceptance_length_drafted_steps
    return Estimate(point if point is not None else o.acceptance_length)


def _cell_figures(
    cell: SweepCell, runs: dict[str, tuple[RunResult | None, str]], resamples: int, seed: int
) -> CellFigures:
    s = cell.settings
    run, why = runs[cell.id]
    out_tps, user_tps = _tps(run)
    base = CellFigures(
        cell.id, s.sd, s.k, s.concurrency, s.dataset, _options(cell), cell.status, cell.baseline, out_tps, user_tps
    )
    if s.sd == "none":
        return _replace(base, note=why)
    if run is None:
        return _replace(base, note=why)
    if cell.baseline is None or cell.baseline not in runs:
        return _replace(base, al=_summary_al(run), note="no baseline cell (--no-baseline)")
    brun, bwhy = runs[cell.baseline]
    if brun is None:
        return _replace(base, al=_summary_al(run), note=f"baseline {cell.baseline} {bwhy}")
    pairing = pair_runs(brun, run)
    if pairing.differences:
        what = "; ".join(str(d) for d in pairing.differences)
        return _replace(base, al=_summary_al(run), note=f"not like for like with its baseline: {what}")
    overall = compare_paired(brun, run, pairing, resamples, seed).overall
    al_b = overall.stats["al_b"]
    al = al_b if al_b.point is not None and al_b.lo is not None else _summary_al(run)
    b_out, b_user = _tps(brun)
    return _replace(
        base,
        speedup=overall.stats["speedup"],
        al=al,
        paired=pairing.paired,
        baseline_output_tps=b_out,
        baseline_user_tps_mean=b_user,
        note="" if overall.stats["speedup"].point is not None else overall.stats.note or "no speedup",
    )


def _replace(c: CellFigures, **update: object) -> CellFigures:
    return replace(c, **update)  # type: ignore[arg-type]


def _tables(cells: Sequence[CellFigures]) -> tuple[SweepTable, ...]:
    groups: dict[tuple[str, str, OptionKey], list[CellFigures]] = {}
    for c in cells:
        if not c.is_baseline:
            groups.setdefault((c.sd, c.dataset, c.engine_options), []).append(c)
    out = []
    for (sd, dataset, opts), members in groups.items():
        by = {(c.concurrency, c.k): c for c in members}
        concurrencies = tuple(sorted({c.concurrency for c in members}))
        ks = tuple(sorted({c.k for c in members}))
        best = {
            conc: best_draft_length({k: by[(conc, k)].speedup for k in ks if (conc, k) in by}) for conc in concurrencies
        }
        out.append(SweepTable(sd, dataset, opts, concurrencies, ks, by, best))
    return tuple(out)


def sweep_tables(sweep_dir: str | Path, resamples: int = RESAMPLES, seed: int = 0) -> SweepReport:
    """Every cell's figures and the tables of the sweep in ``sweep_dir`` (read-only)."""
    path = Path(sweep_dir)
    manifest = read_sweep(path)
    runs = {c.id: _load(path, c) for c in manifest.cells}
    cells = tuple(_cell_figures(c, runs, resamples, seed) for c in manifest.cells)
    front = pareto_front([(c.output_tps, c.user_tps_mean) for c in cells])
    on_front = {c.id: f for c, f in zip(cells, front, strict=True)}
    return SweepReport(path, cells, _tables(cells), on_front, resamples, seed)


# ---- files -----------------------------------------------------------------------------------------------


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _est(e: Estimate | None) -> tuple[str, str, str]:
    if e is None:
        return "", "", ""
    return _num(e.point), _num(e.lo), _num(e.hi)


def write_files(report: SweepReport) -> tuple[Path, Path]:
    """SWEEP_DIR/pareto.csv (every cell) and SWEEP_DIR/speedups.csv (every SD cell); returns their paths."""
    pareto = report.path / PARETO_CSV
    with pareto.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PARETO_COLUMNS)
        for c in report.cells:
            sp = _est(c.speedup)
            al = "" if c.al is None else _num(c.al.point)
            row = [c.id, c.sd, c.k, c.concurrency, c.dataset, _num(c.output_tps), _num(c.user_tps_mean), *sp, al]
            w.writerow([*row, str(report.on_front.get(c.id, False)).lower()])
    speedups = report.path / SPEEDUPS_CSV
    with speedups.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SPEEDUP_COLUMNS)
        for c in report.cells:
            if c.is_baseline:
                continue
            sig = "" if c.speedup is None or c.speedup.significant is None else str(c.speedup.significant).lower()
            w.writerow(
                [
                    c.id,
                    c.sd,
                    c.k,
                    c.concurrency,
                    c.dataset,
                    c.options_text,
                    c.baseline or "",
                    "" if c.paired is None else c.paired,
                    *_est(c.speedup),
                    sig,
                    *_est(c.al),
                    _num(c.output_tps),
                    _num(c.baseline_output_tps),
                    _num(c.user_tps_mean),
                    _num(c.baseline_user_tps_mean),
                    c.note,
                ]
            )
    return pareto, speedups
