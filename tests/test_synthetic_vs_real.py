"""Synthetic vs real (issue 12; analysis/synthetic_vs_real.py, docs/statistics.md "Unpaired comparisons"): the
AL and speedup measured on random-token prompts against those on real prompts of the same ISL, with their ratio's
interval from independent resampling of each side."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speedbench.analysis.stats import PairedSample, bootstrap, combine_repeats, unpaired_ratio
from speedbench.analysis.sweep_report import sweep_tables
from speedbench.analysis.synthetic_vs_real import PromptSet, prompt_set
from speedbench.cli import app
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import SDStats
from speedbench.results.sweep_files import BIAS_COLUMNS, write_files
from test_stats import rec

runner = CliRunner()


def _sample(speedups: list[float], k: int = 3, accepted: int = 0, prefix: str = "q") -> PairedSample:
    """Conversations of one turn each: baseline TPOT 10 ms, SD TPOT 10 / speedup ms; the SD requests' AL is
    1 + accepted / steps with 10 steps."""
    a = [rec(f"{prefix}{i}", 0, 10.0, start_ms=100.0 * i) for i in range(len(speedups))]
    sd = SDStats(drafted=10 * k, accepted=accepted, steps=10)
    b = [rec(f"{prefix}{i}", 0, 10.0 / s, start_ms=100.0 * i, sd=sd) for i, s in enumerate(speedups)]
    return combine_repeats([a], [b], DecodeBasis(0), DecodeBasis(k))


def test_unpaired_ratio_point_by_hand():
    real = _sample([2.0, 2.0, 2.0, 2.0], accepted=15)  # AL 1 + 15/10 = 2.5
    syn = _sample([1.0, 1.0, 1.0], accepted=2, prefix="s")  # AL 1.2
    e = unpaired_ratio(real, syn, "speedup", resamples=1000, seed=0)
    # every conversation alike on each side: every resample gives the same ratio, 1.0 / 2.0
    assert (e.point, e.lo, e.hi) == pytest.approx((0.5, 0.5, 0.5))
    assert e.significant is True
    al = unpaired_ratio(real, syn, "al_b", resamples=1000, seed=0)
    assert al.point == pytest.approx(1.2 / 2.5) and al.lo == pytest.approx(1.2 / 2.5)
    # fewer than 2 conversations on a side: the point only
    one = unpaired_ratio(real, _sample([1.0], prefix="s"), "speedup", resamples=1000, seed=0)
    assert one.point == pytest.approx(0.5) and one.lo is None and one.significant is None


def test_unpaired_ratio_is_wider_than_either_side_and_nominal_when_there_is_no_bias():
    """Two prompt sets drawn from one population (no bias): the ratio's interval holds 1 in about 95% of
    simulated experiments, and it is wider than each side's own paired interval (both sides' spreads add)."""
    rng = np.random.default_rng(7)
    holds = 0
    wider = 0
    n = 200
    for i in range(n):
        x = _sample(list(rng.lognormal(np.log(1.5), 0.2, 30)), prefix="r")
        y = _sample(list(rng.lognormal(np.log(1.5), 0.2, 30)), prefix="s")
        e = unpaired_ratio(x, y, "speedup", resamples=1000, seed=i)
        assert e.lo is not None and e.hi is not None
        holds += e.lo <= 1.0 <= e.hi
        bx, by = bootstrap(x, 1000, i)["speedup"], bootstrap(y, 1000, i)["speedup"]
        assert bx.half_width is not None and by.half_width is not None
        rel = (e.hi - e.lo) / 2 / e.point
        wider += rel > max(bx.half_width / bx.point, by.half_width / by.point)
    assert 0.90 * n <= holds <= n  # measured 188 of 200 (94%)
    assert wider == n


def test_prompt_sets_from_question_ids_and_names(tmp_path):
    class Run:  # the fields prompt_set reads
        def __init__(self, ids):
            self.records = [type("R", (), {"question_id": q})() for q in ids]

    assert prompt_set("x.jsonl", [Run(["synthetic-isl1000-0000", "synthetic-isl1000-0003"])]) == PromptSet(1000, True)
    assert prompt_set("y.parquet", [Run(["throughput_8k-mixed-0001"])]) == PromptSet(8000, False)
    assert prompt_set("speed:throughput_2k", [Run(["abc123"])]) == PromptSet(2000, False)
    assert prompt_set("starter", [Run(["starter-qa-01"])]) is None
    assert prompt_set("x", [Run(["synthetic-isl1000-0000", "synthetic-isl2000-0000"])]) is None  # two ISLs
    assert prompt_set("x", [Run([])]) is None


def _dataset(path: Path, ids: list[str], category: str) -> str:
    rows = [
        {
            "question_id": q,
            "category": category,
            "sub_category": None,
            "turns": [f"prompt {q} " * 20],
            "source": "test",
            "src_id": q,
            "difficulty": None,
            "multiturn": False,
        }
        for q in ids
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_sweep_on_real_and_synthetic_prompts_reports_their_bias(tmp_path):
    """The report's comparison is built from the cells alone: each side's figures are its cells' own, the ratios
    their quotients with unpaired intervals.  The mock draws acceptance from one distribution for every prompt, so
    the ratios are near 1; whether an interval holds 1 at the nominal rate is the simulation test above (with
    32 prompts a side, this seed's AL ratio at k 3 is 0.94 [0.89, 1.00]: prompt sampling alone moves it)."""
    real = _dataset(tmp_path / "throughput_1k.jsonl", [f"throughput_1k-mixed-{i:04d}" for i in range(32)], "mixed")
    syn = _dataset(tmp_path / "synthetic_1k.jsonl", [f"synthetic-isl1000-{i:04d}" for i in range(32)], "synthetic")
    out = tmp_path / "sweep"
    cost = ["-E", "cost=batch", "-E", "clock=virtual", "-E", "base_ms=10", "-E", "per_token_ms=0.1", "-E", "noise=0.2"]
    args = ["sweep", "--engine", "mock", *cost, "--sd", "ngram", "-k", "1,3", "-c", "4", "-d", real, "-d", syn]
    res = runner.invoke(app, [*args, "--output-len", "32", "--warmup", "0", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    report = sweep_tables(out, resamples=1000, seed=0)
    assert len(report.bias) == 2
    cells = {(c.k, c.dataset): c for c in report.cells}
    for b in report.bias:
        assert (b.isl, b.real, b.synthetic, b.concurrency) == (1000, real, syn, 4)
        assert b.conversations == (32, 32)
        assert b.speedup_real == cells[(b.k, real)].speedup and b.speedup_synthetic == cells[(b.k, syn)].speedup
        assert b.speedup_ratio.point == pytest.approx(b.speedup_synthetic.point / b.speedup_real.point)
        assert b.al_ratio.point == pytest.approx(b.al_synthetic.point / b.al_real.point)
        # unpaired: the ratio's interval is wider (relative to its point) than either side's own paired interval
        r = b.speedup_ratio
        assert r.lo is not None and r.hi is not None and r.lo < r.point < r.hi
        for side in (b.speedup_real, b.speedup_synthetic):
            assert side.half_width is not None and (r.hi - r.lo) / 2 / r.point > side.half_width / side.point
        assert 0.8 < r.point < 1.25 and 0.8 < b.al_ratio.point < 1.25
    files = write_files(report)
    rows = list(csv.DictReader(files[-1].open()))
    assert files[-1].name == "synthetic_vs_real.csv" and tuple(rows[0]) == BIAS_COLUMNS and len(rows) == 2
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0 and "Synthetic vs real (unpaired): ngram, ISL 1,000" in shown.output
    # the sweep's own report.html draws the two ratios, one row per configuration, and tabulates both sides
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'data-chart="bias-al"' in page and 'data-chart="bias-speedup"' in page
    for b in report.bias:
        assert f"ngram k={b.k} c=4 ISL 1000" in page
