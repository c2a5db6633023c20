"""The pipeline proven end to end (issue 12): a sweep on the in-process mock whose step time depends on the batch
it really holds (-E cost=batch) and that runs on a virtual clock (-E clock=virtual: every timestamp is modelled
time, so a busy CI machine cannot move a figure) recovers the speedup its cost model implies, within the paired
bootstrap interval, and shows SD stop paying once the batch is past the knee."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from speedbench.analysis.sweep_report import sweep_tables
from speedbench.cli import app
from speedbench.engines.mock import MockEngineSettings
from speedbench.results.loader import load_run

COST = {"cost": "batch", "clock": "virtual", "base_ms": "10", "per_token_ms": "0.1", "knee_tokens": "16"}
COST |= {"per_token_ms_after": "2", "ttft_ms": "5"}
K = 3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recover") / "sweep"
    opts = [x for key, v in COST.items() for x in ("-E", f"{key}={v}")]
    args = ["sweep", "--engine", "mock", *opts, "--sd", "ngram", "-k", str(K), "-c", "1,8", "-n", "22"]
    args += ["--output-len", "48", "--ignore-eos", "--warmup", "0", "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def _model() -> MockEngineSettings:
    return MockEngineSettings.from_options(dict(COST), K, "mock")


def test_virtual_clock_timestamps_are_the_modelled_step_ends(sweep: Path) -> None:
    """Concurrency 1: one request in the batch at every step, so every gap between chunks is exactly one step."""
    m = _model()
    for cell, k in (("sd-none_k-0_c-1_ds-starter", 0), (f"sd-ngram_k-{K}_c-1_ds-starter", K)):
        run = load_run(sweep / "cells" / cell)
        assert run.records and all(r.ok for r in run.records)
        for r in run.records:
            gaps = {round((b - a) / 1e6, 6) for a, b in zip(r.chunk_ns, r.chunk_ns[1:], strict=False)}
            assert gaps == {round(m.step_time_ms(1, k), 6)}, (cell, gaps)
            assert (r.chunk_ns[0] - r.start_ns) / 1e6 == pytest.approx(m.step_time_ms(1, k) + m.ttft_ms)


def test_the_sweep_recovers_the_speedup_of_its_cost_model(sweep: Path) -> None:
    m = _model()
    report = sweep_tables(sweep, resamples=1000, seed=0)
    by = {(c.sd, c.concurrency): c for c in report.cells}
    # batch 1: per-user tok/s = tokens per step / step time, so speedup = mean over requests of
    # (tokens after the first / decode steps) x step(1, 0) / step(1, k)
    sd1 = load_run(sweep / "cells" / f"sd-ngram_k-{K}_c-1_ds-starter")
    per_request_al = [(r.tokens - 1) / (len(r.chunk_ns) - 1) for r in sd1.records]
    expected = sum(per_request_al) / len(per_request_al) * m.step_time_ms(1, 0) / m.step_time_ms(1, K)
    s1 = by[("ngram", 1)].speedup
    assert s1 is not None and s1.point is not None and s1.lo is not None and s1.hi is not None
    assert s1.point == pytest.approx(expected, rel=1e-6)
    assert s1.lo <= expected <= s1.hi and s1.lo > 1.0  # SD pays at batch 1, significantly
    # the closed form with the mock's configured acceptance (AL = 1 + 0.8 + 0.8*0.6 + 0.8*0.6*0.4 = 2.472)
    assert s1.point == pytest.approx(2.472 * m.step_time_ms(1, 0) / m.step_time_ms(1, K), rel=0.08)
    # concurrency 8: 32 tokens a step, past the 16-token knee: the model says SD costs more than it gains.  The
    # batch really held shrinks as conversations run out (22 conversations at concurrency 8), so every step time
    # must be the model's for some batch of 1..8 (the cost follows the batch held, not the nominal concurrency)
    # and the measured speedup lies between the closed forms at the smallest and largest batch it held
    held: list[int] = []
    for cell, k in (("sd-none_k-0_c-8_ds-starter", 0), (f"sd-ngram_k-{K}_c-8_ds-starter", K)):
        # a step in which a request joined also pays its prefill (ttft_ms)
        steps = {round(m.step_time_ms(b, k) + j * m.ttft_ms, 6): b for b in range(1, 9) for j in (0, 1)}
        for r in load_run(sweep / "cells" / cell).records:
            for a, b in zip(r.chunk_ns, r.chunk_ns[1:], strict=False):
                gap = round((b - a) / 1e6, 6)
                assert gap in steps, (cell, gap)
                held.append(steps[gap])
    assert max(held) == 8 and sum(held) / len(held) > 4
    closed = {b: 2.472 * m.step_time_ms(b, 0) / m.step_time_ms(b, K) for b in (min(held), 8)}
    assert closed[8] < 1.0
    s8 = by[("ngram", 8)].speedup
    assert s8 is not None and s8.point is not None and s8.hi is not None
    assert s8.hi < 1.0  # SD no longer pays, significantly
    assert closed[8] * 0.95 <= s8.point <= closed[min(held)]
