"""``speedbench sweep --adaptive --slo ... --max-cells N`` (docs/model.md "Adaptive sweep"): measure a coarse grid,
fit the speedup model, measure the configuration it names under the SLO (and the cells it says to measure next),
refit, until a measured cell confirms the answer or the budget is spent.

Each round is an ordinary sweep in ``<out>/round-<n>/`` (so every tool reads it, and an interrupted round resumes
with ``speedbench sweep --resume <out>/round-<n>``); the model is fitted on the complete cells of every round;
``<out>/adaptive.json`` records each round's cells, fit and answer.  One SD method; the grid's concurrency and
draft length lists are the space searched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speedbench.analysis.slo import SloAnswer, answer_slo, parse_slo
from speedbench.analysis.speedup_model import BASELINE, CellObs, ModelError, fit, sweep_observations
from speedbench.atomic import atomic_write
from speedbench.usecases.sweep import plan as plan_uc
from speedbench.usecases.sweep import runner

ADAPTIVE_FILE = "adaptive.json"


@dataclass
class AdaptiveResult:
    out: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    answer: SloAnswer | None = None
    cells_run: int = 0
    stop: str = ""  # why it stopped: confirmed, budget, nothing left to measure, a round failed, interrupted
    exit_status: int = 0


def coarse(values: list[int]) -> list[int]:
    """The ends and the middle of a sorted grid axis."""
    v = sorted(values)
    return sorted({v[0], v[len(v) // 2], v[-1]})


def _observations(out: Path) -> list[CellObs]:
    cells: list[CellObs] = []
    for d in sorted(out.glob("round-*")):
        if (d / "sweep.json").is_file():
            cells += sweep_observations(d)
    return cells


def _measured(cells: list[CellObs]) -> set[tuple[int, int]]:
    return {(c.k, c.concurrency) for c in cells}


def run_adaptive(
    config: plan_uc.SweepConfig,
    slo: str,
    max_cells: int,
    out: str | Path,
    on_event: Callable[[runner.SweepEvent], None] | None = None,
    say: Callable[[str], None] = print,
    signals: tuple[int, ...] = (),
    seed: int = 0,
) -> AdaptiveResult:
    """Run the adaptive loop (see the module docstring); ``say`` gets one line per round."""
    terms = parse_slo(slo)
    methods = [m for m in config.grid.sd if m != BASELINE]
    if len(methods) != 1 or config.urls:
        raise plan_uc.SweepConfigError(
            "--adaptive searches one SD method (--sd METHOD) of a launched or in-process engine"
        )
    if max_cells < 3:
        raise plan_uc.SweepConfigError(f"--max-cells {max_cells}: the coarse grid alone needs at least 3 cells")
    sd = methods[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = AdaptiveResult(out)
    cs, ks = sorted(config.grid.concurrency), sorted(config.grid.draft_length)
    todo: list[tuple[list[int], list[int]]] = [(coarse(cs), sorted({ks[0], ks[-1]}))]
    while True:
        grid_c, grid_k = todo.pop(0)
        n = len(result.rounds)
        grid = config.grid.model_copy(update={"concurrency": grid_c, "draft_length": grid_k, "sd": [sd]})
        measured = _measured(_observations(out))
        # a round's cells: its SD cells, and the baselines the model does not have yet at those concurrencies
        baseline = any((0, c) not in measured for c in grid_c)
        grid = grid.model_copy(update={"baseline": baseline})
        sub = config.model_copy(update={"grid": grid, "out": str(out / f"round-{n}")})
        plan = plan_uc.build_plan(sub, out / f"round-{n}")
        if result.cells_run + len(plan.cells) > max_cells:
            result.stop = f"budget: the next round needs {len(plan.cells)} cells, {max_cells - result.cells_run} left"
            break
        sdir, manifest = plan_uc.create(plan)
        final = runner.run_sweep(plan, sdir, manifest, on_event, signals=signals)
        result.cells_run += sum(1 for c in final.cells if c.status in ("complete", "failed"))
        status = runner.exit_status(final)
        cells = _observations(out)
        record: dict[str, Any] = {
            "round": n,
            "dir": f"round-{n}",
            "concurrency": grid_c,
            "draft_length": grid_k,
            "baseline": baseline,
            "cells": len(plan.cells),
            "status": final.status,
        }
        result.rounds.append(record)
        if status == runner.EXIT_INTERRUPTED:
            result.stop, result.exit_status = "interrupted", status
            break
        try:
            model = fit(cells, sd, seed=seed)
        except ModelError as e:
            record["fit_error"] = str(e)
            result.stop, result.exit_status = f"the model cannot be fitted: {e}", runner.EXIT_FAILED
            break
        answer = answer_slo(model, cells, terms, cs)
        result.answer = answer
        a = answer.answer
        record["answer"] = None if a is None else {"k": a.k, "concurrency": a.concurrency, "output_tps": a.output_tps}
        record["confirmed"] = answer.confirmed
        say(
            f"round {n}: {len(plan.cells)} cells ({result.cells_run} in all); model answer: "
            + ("none meets the SLO" if a is None else f"k {a.k}, concurrency {a.concurrency}")
            + (" (confirmed by measurement)" if answer.confirmed else "")
        )
        if status != runner.EXIT_OK:
            result.stop, result.exit_status = f"round {n} had failed cells (see {out / f'round-{n}'})", status
            break
        if answer.confirmed:
            result.stop = "confirmed: the answer's own cell was measured and meets every term"
            break
        measured = _measured(cells)
        nxt = [(c.k, c.concurrency) for c in answer.next_cells if (c.k, c.concurrency) not in measured]
        if not nxt:
            result.stop = "nothing left to measure: the model names no unmeasured configuration"
            break
        k, c = nxt[0]
        todo.append(([c], [k] if k > 0 else [ks[0]]))
    _write(result, slo, config)
    return result


def _write(result: AdaptiveResult, slo: str, config: plan_uc.SweepConfig) -> None:
    a = result.answer.answer if result.answer is not None else None
    data = {
        "slo": slo,
        "grid": config.grid.model_dump(mode="json"),
        "rounds": result.rounds,
        "cells_run": result.cells_run,
        "stop": result.stop,
        "answer": None
        if a is None
        else {
            "k": a.k,
            "concurrency": a.concurrency,
            "output_tps": list(a.output_tps),
            "user_tps": list(a.user_tps),
            "measured_cell": a.measured_cell,
            "confirmed": bool(result.answer and result.answer.confirmed),
        },
    }
    atomic_write(result.out / ADAPTIVE_FILE, json.dumps(data, indent=2) + "\n")
