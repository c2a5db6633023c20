"""The sweep report's files in the sweep directory (docs/sweep.md "Report"): pareto.csv (every configuration),
speedups.csv (every SD configuration) and, when the sweep compares synthetic and real prompts,
synthetic_vs_real.csv.  Numbers as ``repr(float)``, empty when not known."""

from __future__ import annotations

import csv
from pathlib import Path

from speedbench.results.estimates import Estimate
from speedbench.results.sweep_figures import SweepReport

PARETO_CSV = "pareto.csv"
SPEEDUPS_CSV = "speedups.csv"
BIAS_CSV = "synthetic_vs_real.csv"
BIAS_COLUMNS = (
    "sd",
    "k",
    "concurrency",
    "engine_options",
    "isl",
    "real_dataset",
    "synthetic_dataset",
    "al_real",
    "al_real_lo",
    "al_real_hi",
    "al_synthetic",
    "al_synthetic_lo",
    "al_synthetic_hi",
    "al_ratio",
    "al_ratio_lo",
    "al_ratio_hi",
    "speedup_real",
    "speedup_real_lo",
    "speedup_real_hi",
    "speedup_synthetic",
    "speedup_synthetic_lo",
    "speedup_synthetic_hi",
    "speedup_ratio",
    "speedup_ratio_lo",
    "speedup_ratio_hi",
    "conversations_real",
    "conversations_synthetic",
)
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
    "repeats",
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
    "repeats",
    "baseline_repeats",
    "note",
)


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _est(e: Estimate | None) -> tuple[str, str, str]:
    if e is None:
        return "", "", ""
    return _num(e.point), _num(e.lo), _num(e.hi)


def write_files(report: SweepReport) -> tuple[Path, ...]:
    """SWEEP_DIR/pareto.csv (every cell), SWEEP_DIR/speedups.csv (every SD cell) and, when the sweep has a
    synthetic-vs-real comparison, SWEEP_DIR/synthetic_vs_real.csv; returns their paths."""
    pareto = report.path / PARETO_CSV
    with pareto.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PARETO_COLUMNS)
        for c in report.cells:
            sp = _est(c.speedup)
            al = "" if c.al is None else _num(c.al.point)
            row = [c.id, c.sd, c.k, c.concurrency, c.dataset, _num(c.output_tps), _num(c.user_tps_mean), *sp, al]
            w.writerow([*row, c.repeats, str(report.on_front.get(c.id, False)).lower()])
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
                    c.repeats,
                    c.baseline_repeats,
                    c.note,
                ]
            )
    if not report.bias:
        return pareto, speedups
    bias = report.path / BIAS_CSV
    with bias.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(BIAS_COLUMNS)
        for b in report.bias:
            estimates = (b.al_real, b.al_synthetic, b.al_ratio, b.speedup_real, b.speedup_synthetic, b.speedup_ratio)
            opts = ",".join(f"{k}={v}" for k, v in b.engine_options)
            head = [b.sd, b.k, b.concurrency, opts, b.isl, b.real, b.synthetic]
            w.writerow([*head, *(x for e in estimates for x in _est(e)), *b.conversations])
    return pareto, speedups, bias
