"""model.json's data: the speedup model of one SD method on one dataset of a sweep (analysis/speedup_model.py) and,
with ``--slo``, its answer under the objective (analysis/slo.py), as plain JSON-ready data (``speedbench model``
writes it; report/model.py prints it).  It sits above both, so neither imports the other back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speedbench.analysis.slo import Candidate, SloAnswer, answer_slo, parse_slo
from speedbench.analysis.speedup_model import (
    BASELINE,
    COEF_NAMES,
    OVERALL,
    HeldOut,
    ModelError,
    acceptance_of,
    fit,
    holdout_rule,
    leviathan_alpha,
    leviathan_tau,
    sweep_observations,
    validate,
)
from speedbench.metrics.sources import DecodeBasis


def _r(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


def _band(b: tuple[float, float, float]) -> list[float]:
    return [_r(v) for v in b]


def _choose(flag: str, what: str, given: str | None, available: Sequence[str], missing: str) -> str:
    """The one value a sweep has, or the one given; one line when it is ambiguous or absent."""
    if given is None:
        if len(available) > 1:
            raise ModelError(f"the sweep has several {what} ({', '.join(available)}): choose one with {flag}")
        return available[0]
    if given not in available:
        raise ModelError(f"{flag} {given!r}: {missing} (the sweep has: {', '.join(available)})")
    return given


def model_summary(
    sweep_dir: str | Path,
    sd: str | None = None,
    dataset: str | None = None,
    holdout: str | None = None,
    batches: Sequence[float] | None = None,
    knee: bool | None = None,
    seed: int = 0,
    per_request: bool | None = None,
    slo: str | None = None,
) -> dict[str, Any]:
    """Fit the model of one SD method on one dataset of a sweep and say everything it predicts, as JSON-ready
    data: the acceptance per category (rates, tau, undrafted share) with Leviathan's i.i.d. closed form beside
    it and the cells measured at smaller k, the cost fit, predictions per batch x k with the best k, the best k
    per category, the batch beyond which SD stops paying, and the held-out validation."""
    all_cells = sweep_observations(sweep_dir)
    if not all_cells:
        raise ModelError(f"{sweep_dir}: no complete cell to fit")
    methods = sorted({c.sd for c in all_cells if c.sd != BASELINE})
    if not methods:
        raise ModelError(f"{sweep_dir}: no complete SD cell (only SD off): nothing to model")
    sd = _choose("--sd", "SD methods", sd, methods, "no complete cell of it")
    datasets = sorted({c.dataset for c in all_cells if c.sd == sd})
    dataset = _choose("--dataset", "datasets", dataset, datasets, f"no complete {sd} cell on it")
    cells = [c for c in all_cells if c.dataset == dataset and c.sd in (sd, BASELINE)]
    if not any(c.sd == BASELINE for c in cells):
        raise ModelError(f"no complete SD-off cell on {dataset}: the cost at k 0 (the speedup's baseline) is unknown")
    model = fit(cells, sd, knee, seed, per_request=per_request)
    validation = None
    if holdout:
        _, validation = validate(cells, sd, holdout_rule(holdout), knee, seed, per_request)
    measured_b = sorted({c.concurrency for c in cells})
    bs = list(batches) if batches else sorted({*measured_b, max(measured_b) * 2, max(measured_b) * 4})
    ks = list(range(0, model.k_max + 1))
    acc = model.acceptance
    overall = acc[OVERALL]
    alpha = leviathan_alpha(overall.tau(model.k_max), model.k_max)
    smaller = {}
    for k in ks[1:]:
        at_k = [c for c in cells if c.sd == sd and c.k == k]
        basis = DecodeBasis(k, all(c.chunks_are_steps for c in at_k))
        a_k = acceptance_of([r for c in at_k for r in c.records], basis)
        if a_k is not None:
            smaller[k] = a_k.tau(k)
    cost = model.cost
    names = [COEF_NAMES[term] for term in cost.terms]
    preds = []
    for b in bs:
        per_k: dict[str, Any] = {}
        row: dict[str, Any] = {"b": _r(b), "k": per_k}
        for k in ks:
            p = model.predict(b, k)
            per_k[str(k)] = {
                "user_tps": _band(p.user_tps),
                "output_tps": _band(p.output_tps),
                "speedup": _band(p.speedup),
            }
        best, gain = model.best_k(b)
        row["best_k"] = best
        row["best_speedup"] = _r(gain)
        preds.append(row)
    by_cat = {}
    for cat in acc:
        by_cat[cat] = {str(_r(b)): model.best_k(b, cat)[0] for b in bs}
    pays = model.pays_until()
    slo_part = None
    if slo:
        terms = parse_slo(slo)
        concurrencies = sorted({*measured_b, *(int(round(b)) for b in (batches or []))})
        slo_part = _slo_dict(answer_slo(model, cells, terms, concurrencies))
    return {
        "sweep": str(sweep_dir),
        "sd": sd,
        "dataset": dataset,
        "k_max": model.k_max,
        "cells": list(model.cells),
        "seed": seed,
        "acceptance": {
            cat: {
                "requests": a.requests,
                "drafted_steps": a.drafted_steps,
                "rates": [_r(x) for x in a.rates],
                "tau": {str(k): _r(a.tau(k)) for k in ks[1:]},
                "undrafted_share": _r(a.undrafted),
                "tokens_per_step": {str(k): _r(a.tokens_per_step(k)) for k in ks[1:]},
            }
            for cat, a in acc.items()
        },
        "leviathan": {
            "alpha": _r(alpha),
            "tau": {str(k): _r(leviathan_tau(alpha, k)) for k in ks[1:]},
            "per_position_tau": {str(k): _r(overall.tau(k)) for k in ks[1:]},
            "measured_tau": {str(k): _r(v) for k, v in smaller.items()},
        },
        "cost": {
            "form": cost.form,
            "coef": dict(zip(names, [_r(c, 9) for c in cost.coef], strict=True)),
            "stderr": dict(zip(names, [_r(e, 9) for e in cost.errors()], strict=True)),
            "knee_tokens": None if cost.knee is None else _r(cost.knee, 3),
            "residual_rel": _r(cost.sigma_rel),
            "cells": cost.cells,
            "x_range": [_r(x, 3) for x in cost.x_range],
            "measured": [
                {
                    "id": c.id,
                    "k": c.k,
                    "concurrency": c.concurrency,
                    "batch": _r(c.batch, 3),
                    "step_s": _r(c.step_s, 9),
                    "predicted_step_s": _r(float(cost.time(c.batch, c.k)[0]), 9),
                }
                for c in cells
            ],
        },
        "predictions": preds,
        "best_k_by_category": by_cat,
        "sd_pays_until_batch": None if pays is None else _r(pays, 2),
        "slo": slo_part,
        "validation": None
        if validation is None
        else {
            "holdout": holdout,
            "mape": None if validation.mape is None else _r(validation.mape),
            "worst": None if validation.worst is None else validation.worst.id,
            "inside_interval": sum(h.inside for h in validation.held_out),
            "cells": [_judged_dict(h) for h in validation.held_out],
            "fitted": [_judged_dict(h) for h in validation.fitted],
        },
    }


def _judged_dict(h: HeldOut) -> dict[str, Any]:
    return {
        "id": h.id,
        "k": h.k,
        "concurrency": h.concurrency,
        "batch": _r(h.batch, 3),
        "measured_user_tps": _r(h.measured),
        "predicted_user_tps": _band(h.predicted),
        "ape": _r(h.ape),
        "inside": h.inside,
    }


def _candidate_dict(c: Candidate) -> dict[str, Any]:
    return {
        "k": c.k,
        "concurrency": c.concurrency,
        "batch": _r(c.batch, 3),
        "user_tps": _band(c.user_tps),
        "output_tps": _band(c.output_tps),
        "measured_cell": c.measured_cell,
        "checks": dict(c.checks),
        "meets": c.meets,
        "sure": c.sure,
    }


def _slo_dict(a: SloAnswer) -> dict[str, Any]:
    return {
        "terms": [str(t) for t in a.terms],
        "answer": None if a.answer is None else _candidate_dict(a.answer),
        "confirmed": a.confirmed,
        "next": [_candidate_dict(c) for c in a.next_cells],
        "candidates": [_candidate_dict(c) for c in a.candidates],
        "note": a.note,
    }
