"""The sweep report: every cell's figures from its run directory alone, each SD cell against its paired
baseline cell, laid out per (SD method, dataset, engine options) as concurrency x draft length tables, plus
the throughput / per-user-speed Pareto front (docs/sweep.md "Report").

``sweep.json`` only says which cells there are, their settings, their baseline and their status; every figure
is recomputed from the cell's run directory (``results.loader.load_run``):

- speedup: ``analysis.pairing.compare_repeats`` of the baseline cell's repeats (A) and the SD cell's (B), overall:
  mean user tok/s B / A over the paired requests, with its 95% interval (paired bootstrap over conversations,
  crossed with repeats when there are several: docs/statistics.md);
- AL: the paired statistics' ``al_b`` (mean over the SD cell's paired requests of 1 + accepted/steps) with its
  interval when it has one; else the run summary's AL over drafted steps (no interval);
- output tok/s and mean user tok/s: the cell's run summary (overall), the mean over its repeats.

With ``--repeats`` a configuration (SD setting, concurrency, dataset, engine options) is one row of the report
whatever its number of repeats (``CellFigures.cells`` lists them; its id is the first repeat's without ``_r-1``).
A repeat counts only when the sweep recorded it ``complete`` and its run directory loads with a ``complete`` run;
an SD configuration also needs such a baseline repeat.  A configuration without any has no figure and a note
saying why; one with some repeats unusable uses the others and says so.

The figures' types are in ``results/sweep_figures.py`` (``report/`` draws them); ``results/sweep_files.py`` writes
them as pareto.csv, speedups.csv and synthetic_vs_real.csv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from speedbench.analysis.pairing import pair_runs, repeats_sample
from speedbench.analysis.stats import RESAMPLES, bootstrap
from speedbench.analysis.synthetic_vs_real import PromptSet, Side, compare_sides, prompt_set
from speedbench.results.estimates import Estimate
from speedbench.results.loader import RunResult, load_run
from speedbench.results.rundir import RunDirError
from speedbench.results.sweep_figures import CellFigures, OptionKey, SweepReport, SweepTable, SyntheticBias
from speedbench.results.sweep_manifest import SweepCell, read_sweep

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


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _tps(runs: Sequence[RunResult]) -> tuple[float | None, float | None]:
    """Output tok/s and mean user tok/s: each repeat's run summary (overall), averaged over the repeats."""
    return (_mean([r.summary.overall.output_tps for r in runs]), _mean([r.summary.overall.user_tps.mean for r in runs]))


def _summary_al(runs: Sequence[RunResult]) -> Estimate:
    def one(run: RunResult) -> float | None:
        o = run.summary.overall
        return (
            o.acceptance_length_drafted_steps if o.acceptance_length_drafted_steps is not None else o.acceptance_length
        )

    return Estimate(_mean([one(r) for r in runs]))


def config_key(cell: SweepCell) -> tuple[str, int, int, str, OptionKey]:
    """What a configuration is: everything a cell varies but the repeat."""
    s = cell.settings
    return (s.sd, s.k, s.concurrency, s.dataset, _options(cell))


def config_id(cell: SweepCell, repeats: int) -> str:
    """A configuration's id: a cell id without its repeat suffix (``_r-<r>``, only when the grid has repeats)."""
    return cell.id.removesuffix(f"_r-{cell.settings.repeat}") if repeats > 1 else cell.id


def _usable(
    cells: Sequence[SweepCell], runs: dict[str, tuple[RunResult | None, str]]
) -> tuple[list[RunResult], list[str]]:
    """The repeats that count, and why each other one does not (``cell id: why``)."""
    ok: list[RunResult] = []
    why: list[str] = []
    for c in cells:
        run, reason = runs[c.id]
        if run is not None:
            ok.append(run)
        else:
            why.append(f"{c.id}: {reason}" if len(cells) > 1 else reason)
    return ok, why


def _config_figures(
    members: Sequence[SweepCell],
    baselines: dict[str, list[SweepCell]],
    runs: dict[str, tuple[RunResult | None, str]],
    resamples: int,
    seed: int,
    repeats: int,
    paired: dict[str, Side],
) -> CellFigures:
    """One configuration's figures from its repeats (``members``, repeat order) against its baseline's."""
    first = members[0]
    s = first.settings
    sd_runs, why = _usable(members, runs)
    out_tps, user_tps = _tps(sd_runs)
    base = CellFigures(
        config_id(first, repeats),
        s.sd,
        s.k,
        s.concurrency,
        s.dataset,
        _options(first),
        first.status if len(members) == 1 else ",".join(sorted({c.status for c in members})),
        first.baseline,
        out_tps,
        user_tps,
        repeats=len(sd_runs),
        cells=tuple(c.id for c in members),
    )
    left_out = f"{len(members) - len(sd_runs)} of {len(members)} repeats left out ({'; '.join(why)})"
    if not sd_runs:
        return _replace(base, note="; ".join(why) if len(members) == 1 else left_out)
    note = left_out if why else ""
    if s.sd == "none":
        return _replace(base, note=note)
    if first.baseline is None or first.baseline not in runs:
        return _replace(base, al=_summary_al(sd_runs), note="no baseline cell (--no-baseline)")
    base_cells = baselines.get(first.baseline) or []
    base_runs, bwhy = _usable(base_cells, runs)
    baseline_name = config_id(base_cells[0], repeats) if base_cells else first.baseline
    if not base_runs:
        return _replace(base, al=_summary_al(sd_runs), note=f"baseline {baseline_name} {'; '.join(bwhy)}")
    if bwhy:
        note = "; ".join(x for x in (note, f"baseline: {len(bwhy)} of {len(base_cells)} repeats left out") if x)
    for run in sd_runs:
        differences = pair_runs(base_runs[0], run).differences
        if differences:
            what = "; ".join(str(d) for d in differences)
            return _replace(base, al=_summary_al(sd_runs), note=f"not like for like with its baseline: {what}")
    # the overall row of compare_repeats: the same sample and seed, without the per-category bootstraps
    sample = repeats_sample(base_runs, sd_runs)
    overall = bootstrap(sample, resamples, seed)
    paired[first.id] = Side(s.dataset, [*base_runs, *sd_runs], sample, overall)
    al_b = overall["al_b"]
    al = al_b if al_b.point is not None and al_b.lo is not None else _summary_al(sd_runs)
    b_out, b_user = _tps(base_runs)
    speed = overall["speedup"]
    return _replace(
        base,
        baseline=baseline_name,
        speedup=speed,
        al=al,
        paired=overall.turns,
        baseline_output_tps=b_out,
        baseline_user_tps_mean=b_user,
        baseline_repeats=len(base_runs),
        note=note if speed.point is not None else overall.note or "no speedup",
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
    configs: dict[tuple[str, int, int, str, OptionKey], list[SweepCell]] = {}
    for c in manifest.cells:
        configs.setdefault(config_key(c), []).append(c)
    for members in configs.values():
        members.sort(key=lambda c: c.settings.repeat)
    # a baseline cell id (any repeat's) -> every repeat of its configuration
    baselines = {c.id: members for members in configs.values() for c in members if c.settings.sd == "none"}
    reps = manifest.grid.repeats
    paired: dict[str, Side] = {}  # first cell id of each SD configuration that paired like for like -> its side
    cells = tuple(_config_figures(m, baselines, runs, resamples, seed, reps, paired) for m in configs.values())
    bias = synthetic_vs_real(configs, paired, resamples, seed)
    front = pareto_front([(c.output_tps, c.user_tps_mean) for c in cells])
    on_front = {c.id: f for c, f in zip(cells, front, strict=True)}
    return SweepReport(path, manifest, cells, _tables(cells), on_front, resamples, seed, reps, bias)


def synthetic_vs_real(
    configs: dict[tuple[str, int, int, str, OptionKey], list[SweepCell]],
    paired: dict[str, Side],
    resamples: int,
    seed: int,
) -> tuple[SyntheticBias, ...]:
    """Every SD configuration run on both a real and a synthetic prompt set of the same ISL (``prompt_set``):
    ``compare_sides`` of the two, over the repeats the tables paired (``paired``; a configuration without a
    usable SD and baseline repeat, or not like for like with its baseline, is not in it: its note says why)."""
    sides: dict[tuple[str, int, int, OptionKey], dict[str, Side]] = {}
    for (sd, k, c, ds, opts), members in configs.items():
        side = paired.get(members[0].id)
        if side is not None:
            sides.setdefault((sd, k, c, opts), {})[ds] = side
    kinds: dict[str, PromptSet | None] = {}
    for by_ds in sides.values():
        for ds, side in by_ds.items():
            kinds.setdefault(ds, prompt_set(ds, side.runs))
    out = []
    for key, by_ds in sides.items():
        for syn in by_ds:
            s = kinds[syn]
            if s is None or not s.synthetic:
                continue
            for real in by_ds:
                r = kinds[real]
                if r is not None and not r.synthetic and r.isl == s.isl:
                    out.append(compare_sides(by_ds[real], by_ds[syn], key, s.isl, resamples, seed))
    return tuple(out)
