"""Warm-up until steady state (issue 23, part 4): the default warm-up is one full wave at the run's concurrency,
``--resume`` warms up too, the warm-up's own figures are kept apart (the manifest's ``warmup``, never in a figure),
and the mock can be slow for its first requests (``cold_requests`` / ``cold_factor``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import serve_mock
from speedbench.config import EngineSpec, RunConfig
from speedbench.engines.mock import MockEngine, MockSettings
from speedbench.load.generator import LoadSettings, warmup_requests
from speedbench.metrics.latency import ttft_s
from speedbench.results.loader import load_run
from speedbench.results.manifest import WarmupInfo
from speedbench.usecases import run as uc

# the mock's batched cost on its virtual clock: a step that a request joins takes base_ms + ttft_ms (per_token_ms
# 0), so every TTFT is exactly that: 10 + 4 = 14 ms warm, 5 x 14 = 70 ms while one of the first 8 requests is held
COLD = {"cost": "batch", "clock": "virtual", "base_ms": "10", "ttft_ms": "4", "cold_requests": "8", "cold_factor": "5"}
WARM_TTFT_S, COLD_TTFT_S = 0.014, 0.070


def _cfg(out: Path, warmup: int | None = None, **options: str) -> RunConfig:
    return RunConfig(
        engine=EngineSpec(kind="mock", sd="none", options={**COLD, **options}),  # one token a step
        dataset={"num_requests": 8, "max_turns": 1},  # type: ignore[arg-type]
        concurrency=8,
        output_len=24,
        warmup=warmup,
        out=str(out),
    )


def _engine(cfg: RunConfig) -> MockEngine:
    engine = MockEngine(cfg.engine_spec())
    asyncio.run(engine.start())
    return engine


# ---------------------------------------------------------------------------------------------- the resolution


def test_warmup_requests_default_is_one_wave() -> None:
    assert warmup_requests(LoadSettings(concurrency=8)) == 8  # None: one full wave at the concurrency
    assert warmup_requests(LoadSettings(concurrency=8, warmup=0)) == 0  # 0: none
    assert warmup_requests(LoadSettings(concurrency=8, warmup=3)) == 3  # N: N
    assert warmup_requests(LoadSettings(concurrency=1, warmup=5)) == 5
    # open loop: the cap when there is one, else one second's arrivals at the rate, 2 to 32
    assert warmup_requests(LoadSettings(concurrency=32, request_rate=5.0, cap=6)) == 6
    assert warmup_requests(LoadSettings(request_rate=5.5)) == 6
    assert warmup_requests(LoadSettings(request_rate=0.2)) == 2
    assert warmup_requests(LoadSettings(request_rate=500.0)) == 32
    assert warmup_requests(LoadSettings(request_rate=500.0, warmup=1)) == 1
    assert RunConfig().warmup is None
    assert uc.warmup_count(RunConfig(concurrency=5)) == 5
    assert uc.warmup_count(RunConfig(concurrency=5, request_rate=2.0, rate_cap=True)) == 5


def test_warmup_flag_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError):
        RunConfig(warmup=-1)


# ---------------------------------------------------------------------------------------------- the cold mock


def test_cold_mock_defaults_leave_the_dump_as_it_was() -> None:
    plain = MockSettings()
    assert "cold_requests" not in plain.model_dump() and "cold_factor" not in plain.model_dump()
    cold = MockSettings(cold_requests=8, cold_factor=5)
    assert cold.model_dump()["cold_requests"] == 8 and cold.model_dump()["cold_factor"] == 5.0
    with pytest.raises(ValueError):
        MockSettings(cold_factor=0.5)


def test_default_warmup_absorbs_a_cold_start(tmp_path: Path) -> None:
    """The default warm-up (8 requests at concurrency 8) is spent on the cold mock's 8 slow requests: every
    measured TTFT is the warm figure; the warm-up's records hold the slow ones."""
    cfg = _cfg(tmp_path / "run")
    engine = _engine(cfg)
    end = asyncio.run(uc.run(cfg, engine=engine))
    records = end.result.records
    assert len(records) == 8 and all(r.ok for r in records)
    assert [ttft_s(r) for r in records] == pytest.approx([WARM_TTFT_S] * 8)
    assert engine.sim.served == 16  # 8 warm-up + 8 measured
    (warm,) = end.result.manifest.warmup
    assert warm.segment == 0 and warm.requests == 8 and warm.failed == 0
    assert warm.ttft_ms_p50 == pytest.approx(COLD_TTFT_S * 1000)
    assert warm.tpot_ms_p50 == pytest.approx(5 * 10)  # every step of the warm-up held a cold request
    assert end.result.summary.overall.tpot_s.p50 == pytest.approx(0.010)
    assert warm.line().startswith("warm-up: 8 requests, TTFT p50 70.0 ms, TPOT p50 50.0 ms")
    # never in a figure: the summary's TTFT is the measured requests' alone
    assert end.result.summary.overall.ttft_s.p50 == pytest.approx(WARM_TTFT_S)
    assert end.result.summary.overall.requests == 8
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk["warmup"][0]["requests"] == 8 and on_disk["warmup"][0]["ttft_ms_p50"] == pytest.approx(70.0)
    assert on_disk["config"]["warmup"] is None


def test_no_warmup_measures_the_cold_start(tmp_path: Path) -> None:
    """``--warmup 0``: the first measured requests are the cold ones."""
    cfg = _cfg(tmp_path / "run", warmup=0)
    engine = _engine(cfg)
    end = asyncio.run(uc.run(cfg, engine=engine))
    assert [ttft_s(r) for r in end.result.records] == pytest.approx([COLD_TTFT_S] * 8)
    assert engine.sim.served == 8
    assert end.result.manifest.warmup == []
    assert "warmup" not in json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_an_explicit_count_keeps_its_meaning(tmp_path: Path) -> None:
    """``--warmup 3``: three warm-up requests (today's meaning); the 5 cold requests left are measured."""
    cfg = _cfg(tmp_path / "run", warmup=3)
    engine = _engine(cfg)
    end = asyncio.run(uc.run(cfg, engine=engine))
    assert engine.sim.served == 11 and end.result.manifest.warmup[0].requests == 3
    # the 8 measured requests share their first step with the 5 cold ones left
    assert [ttft_s(r) for r in end.result.records] == pytest.approx([COLD_TTFT_S] * 8)


def test_warmup_requests_ask_for_as_many_tokens_as_measured_ones(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run").model_copy(update={"ignore_eos": True})
    seen: list[Any] = []
    engine = _engine(cfg)
    real = engine.stream

    def spy(request: Any) -> Any:
        seen.append(request)
        return real(request)

    engine.stream = spy  # type: ignore[method-assign]
    asyncio.run(uc.run(cfg, engine=engine))
    assert len(seen) == 16
    assert {(r.max_tokens, r.ignore_eos) for r in seen} == {(24, True)}
    # the warm-up's prompts are the measured ones led by a mark of their own: no prefix cache serves a measured
    # turn from the warm-up's prefill
    warm, measured = seen[:8], seen[8:]
    prompts = {m.question_id: m.messages[0]["content"] for m in measured}
    for i, w in enumerate(warm):
        assert w.messages[0]["content"] == f"(warm-up {i}) " + prompts[w.question_id]
    assert not {w.messages[0]["content"] for w in warm} & {m.messages[0]["content"] for m in measured}


# ---------------------------------------------------------------------------------------------- resume


def test_resume_warms_up_again(tmp_path: Path) -> None:
    """A resumed run talks to a server that may be cold again: it sends its own warm-up wave (recorded as the
    segment's), then only the turns it retries."""
    out = tmp_path / "run"
    cfg = _cfg(out, fail_500="0.4", seed="3")
    first = asyncio.run(uc.run(cfg, engine=_engine(cfg)))
    failed = first.retryable_failures
    assert failed > 0, "the seed gives no 500 to retry"
    started: list[uc.Started] = []
    engine = _engine(cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"options": COLD})}))
    again = asyncio.run(uc.run(cfg, str(out), {}, engine=engine, on_start=started.append))
    assert started[0].to_retry == failed
    # a fresh (cold) engine: the wave of 8, then the retried turns
    assert engine.sim.served == 8 + failed
    segments = [w.segment for w in again.result.manifest.warmup]
    assert segments == [0, 1] and again.result.manifest.warmup[1].requests == 8
    # the retried turns ran warm
    retried = [r for r in again.result.records if r.segment == 1]
    assert len(retried) == failed and [ttft_s(r) for r in retried] == pytest.approx([WARM_TTFT_S] * failed)


def test_resume_may_change_the_warmup(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = _cfg(out, fail_500="0.4", seed="3")
    first = asyncio.run(uc.run(cfg, engine=_engine(cfg)))
    failed = first.retryable_failures
    engine = _engine(cfg)
    flags = cfg.model_copy(update={"warmup": 2})
    again = asyncio.run(uc.run(flags, str(out), {"warmup": "--warmup"}, engine=engine))
    assert again.result.manifest.segment_changes[-1].changes == {"warmup": [None, 2]}
    assert again.result.manifest.config.warmup == 2
    assert again.result.manifest.warmup[-1].requests == 2 and engine.sim.served == 2 + failed


# ---------------------------------------------------------------------------------------------- the manifest


def test_warmup_info_of_records() -> None:
    from speedbench.records import RequestRecord

    ok = RequestRecord("a", "c", 0, start_ns=0, end_ns=30_000_000, chunk_ns=[10_000_000, 20_000_000, 30_000_000],
                       chunk_tokens=[1, 1, 1])  # fmt: skip
    bad = RequestRecord("b", "c", 0, start_ns=5_000_000, end_ns=40_000_000, error={"cause": "http_500", "detail": ""})
    info = WarmupInfo.of([ok, bad], segment=2)
    assert (info.segment, info.requests, info.failed) == (2, 2, 1)
    assert info.ttft_ms_p50 == pytest.approx(10.0) and info.tpot_ms_p50 == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(0.04)
    assert info.line() == "warm-up: 2 requests, 1 failed, TTFT p50 10.0 ms, TPOT p50 10.0 ms (not in the figures)"
    slow = info.model_copy(update={"ttft_ms_p50": 2600.0, "failed": 0})
    assert "TTFT p50 2.60 s" in slow.line()


def test_client_procs_auto_records_its_warmup(tmp_path: Path) -> None:
    """``--client-procs auto`` decides from the warm-up it sends (the resolved wave, at least 2): its records are
    the run's warm-up, recorded like any other."""
    log = tmp_path / "requests.jsonl"
    with serve_mock("--ttft-ms", "1", "--step-ms", "1", "-E", f"request_log={log}") as url:
        cfg = RunConfig(
            engine=EngineSpec(kind="openai", base_url=url),
            dataset={"num_requests": 6, "max_turns": 1},  # type: ignore[arg-type]
            concurrency=3,
            output_len=8,
            client_procs=0,
            out=str(tmp_path / "run"),
        )
        end = asyncio.run(uc.run(cfg))
    (warm,) = end.result.manifest.warmup
    assert warm.requests == 3 and warm.failed == 0 and warm.ttft_ms_p50 is not None
    assert len(end.result.records) == 6
    assert len(log.read_text().splitlines()) == 3 + 6  # the warm-up once, then the measured turns
    assert end.result.manifest.arrivals[-1]["client_procs"] == 1


def test_per_category_windows_warm_up_once(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run").model_copy(update={"per_category_windows": "on"})
    engine = _engine(cfg)
    end = asyncio.run(uc.run(cfg, engine=engine))
    assert end.result.manifest.per_category_windows
    (warm,) = end.result.manifest.warmup
    assert warm.requests == 8 and engine.sim.served == 16
    assert [ttft_s(r) for r in end.result.records] == pytest.approx([WARM_TTFT_S] * 8)


# ---------------------------------------------------------------------------------------------- sweeps


def _sweep_config(order: str = "grid", **grid: Any) -> Any:
    from speedbench.config.sweep import SweepGrid
    from speedbench.usecases.sweep import plan as plan_uc

    run = RunConfig(engine=EngineSpec(kind="mock", options=dict(COLD)), output_len=8, dataset={"num_requests": 2})  # type: ignore[arg-type]
    defaults = {"concurrency": [1, 4], "draft_length": [1, 2], "sd": ["ngram"]}
    return plan_uc.SweepConfig(grid=SweepGrid(**{**defaults, **grid}), run=run, order=order)  # type: ignore[arg-type]


def test_abba_interleaves_each_sd_cell_with_its_baseline(tmp_path: Path) -> None:
    from speedbench.usecases.sweep import plan as plan_uc

    grid_cells, grid_groups = plan_uc.expand(_sweep_config(), tmp_path)
    assert [c.id for c in grid_cells] == [
        "sd-none_k-0_c-1_ds-starter", "sd-none_k-0_c-4_ds-starter",
        "sd-ngram_k-1_c-1_ds-starter", "sd-ngram_k-1_c-4_ds-starter",
        "sd-ngram_k-2_c-1_ds-starter", "sd-ngram_k-2_c-4_ds-starter",
    ]  # fmt: skip
    cells, groups = plan_uc.expand(_sweep_config("abba"), tmp_path)
    # the blocks (one per concurrency) in grid order, every other one reversed
    assert [c.id for c in cells] == [
        "sd-none_k-0_c-1_ds-starter", "sd-ngram_k-1_c-1_ds-starter", "sd-ngram_k-2_c-1_ds-starter",
        "sd-ngram_k-2_c-4_ds-starter", "sd-ngram_k-1_c-4_ds-starter", "sd-none_k-0_c-4_ds-starter",
    ]  # fmt: skip
    assert groups == grid_groups  # the same launch groups, the same cells in each
    assert {c.id: c for c in cells} == {c.id: c for c in grid_cells}
    # one SD setting: A B B A A B
    pair, _ = plan_uc.expand(_sweep_config("abba", draft_length=[1], concurrency=[1, 2, 4]), tmp_path)
    assert [(c.settings.sd, c.settings.concurrency) for c in pair] == [
        ("none", 1),
        ("ngram", 1),
        ("ngram", 2),
        ("none", 2),
        ("none", 4),
        ("ngram", 4),
    ]
    # one side only (no baseline, one SD setting): as the grid has it
    alone = _sweep_config("abba", draft_length=[1], baseline=False)
    assert [c.id for c in plan_uc.expand(alone, tmp_path)[0]] == [
        c.id for c in plan_uc.expand(_sweep_config(draft_length=[1], baseline=False), tmp_path)[0]
    ]
    # repeats: the blocks repeat by repeat, the alternation going on across them
    reps, _ = plan_uc.expand(_sweep_config("abba", draft_length=[1], concurrency=[1], repeats=2), tmp_path)
    assert [(c.settings.sd, c.settings.repeat) for c in reps] == [("none", 1), ("ngram", 1), ("ngram", 2), ("none", 2)]


def test_abba_sweep_runs_in_its_order_and_warms_up_each_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from speedbench.usecases.sweep import plan as plan_uc
    from speedbench.usecases.sweep import runner as sweep_uc

    opened: list[str | None] = []
    real_open = uc.open_engine

    def counting_open(spec: EngineSpec) -> Any:
        opened.append(spec.sd)
        return real_open(spec)

    monkeypatch.setattr(uc, "open_engine", counting_open)
    plan = plan_uc.build_plan(_sweep_config("abba", draft_length=[1], concurrency=[1, 2, 4]), tmp_path / "sweep")
    # the plan counts the resolved warm-up: one wave at each cell's concurrency
    assert [plan.work[c.id].warmup for c in plan.cells] == [c.settings.concurrency for c in plan.cells]
    sdir, manifest = plan_uc.create(plan)
    assert manifest.order == "abba" and json.loads(sdir.sweep_path.read_text())["order"] == "abba"
    started: list[str] = []
    final = sweep_uc.run_sweep(
        plan, sdir, manifest, on_event=lambda e: started.append(e.cell or "") if e.kind == "cell_start" else None
    )
    assert sweep_uc.exit_status(final) == 0
    assert started == [c.id for c in plan.cells]  # A B B A A B
    assert opened == ["none", "ngram"]  # each group's engine started once, both held while their cells alternate
    assert [g.starts for g in final.groups] == [1, 1]
    for c in final.cells:
        run = load_run(sdir.path / c.dir)
        (warm,) = run.manifest.warmup  # every cell's run warms up with one wave at its concurrency
        assert warm.requests == c.settings.concurrency
    # a resumed abba sweep keeps its order (sweep.json)
    again, _, saved = plan_uc.resume_plan(sdir.path)
    assert again.config.order == "abba" and [c.id for c in again.cells] == [c.id for c in saved.cells]


def test_grid_order_is_recorded_and_unchanged(tmp_path: Path) -> None:
    from speedbench.usecases.sweep import plan as plan_uc

    plan = plan_uc.build_plan(_sweep_config(), tmp_path / "sweep")
    assert plan.config.order == "grid"
    sdir, manifest = plan_uc.create(plan)
    assert json.loads(sdir.sweep_path.read_text())["order"] == "grid"
    assert [c.id for c in manifest.cells] == [cid for g in plan.groups for cid in g.cells]


def test_abba_with_ray_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from speedbench.cli import app

    args = ["sweep", "--engine", "mock", "-n", "2", "--output-len", "8", "-k", "1", "-c", "1", "--order", "abba"]
    res = CliRunner().invoke(app, [*args, "--ray", "local", "--plan", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--order abba with --ray" in res.output
    res = CliRunner().invoke(app, [*args, "--plan", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0 and "order: abba" in res.output
    res = CliRunner().invoke(app, [*args[:-1], "zigzag", "--plan", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2


def test_cold_requests_on_the_wall_clock_and_in_serve_mock() -> None:
    """The default cost model (cost=fixed, wall clock) and serve-mock: the first N requests are planned slow, and
    their chunks are due F times later (only lower bounds on the wall clock: a busy machine is never faster)."""
    import time
    from types import SimpleNamespace

    from speedbench.engines.base import Request
    from speedbench.engines.mock import MockSimulator
    from speedbench.engines.mock_server import StepClock

    settings = MockSettings(ttft_ms=10, step_ms=2, cold_requests=2, cold_factor=5)
    sim = MockSimulator(settings)
    assert [sim.plan(f"p{i}", 8).slow for i in range(4)] == [5.0, 5.0, 1.0, 1.0]
    clock = StepClock(settings)
    cold, warm = (
        SimpleNamespace(arrival=100.0, i=3, plan=SimpleNamespace(slow=5.0)),
        SimpleNamespace(arrival=100.0, i=3, plan=SimpleNamespace(slow=1.0)),
    )
    assert clock.due(cold) == pytest.approx(100.0 + 5 * (10 + 3 * 2) / 1000)  # type: ignore[arg-type]
    assert clock.due(warm) == pytest.approx(100.0 + (10 + 3 * 2) / 1000)  # type: ignore[arg-type]

    engine = MockEngine(EngineSpec(kind="mock", options={"ttft_ms": "10", "step_ms": "1", "cold_requests": "1",
                                                          "cold_factor": "5"}))  # fmt: skip
    assert engine.describe()["settings"]["cold_requests"] == 1

    async def first_chunk_s(qid: str) -> float:
        req = Request(qid, "c", 0, [{"role": "user", "content": qid}], 4, 0.0, False, 0)
        t0 = time.perf_counter()
        async for _ in engine.stream(req):
            return time.perf_counter() - t0
        raise AssertionError("no chunk")

    assert asyncio.run(first_chunk_s("a")) >= 0.050  # cold: 5 x 10 ms
    assert asyncio.run(first_chunk_s("b")) >= 0.010
