"""The in-process mock's batched step-time model (-E cost=batch) on its virtual clock (-E clock=virtual).

Everything asserts on the engine's modelled step times (``MockEngine.virtual_times`` / ``step_log``), never
on wall time, so a busy CI machine cannot change a result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from speedbench.config import EngineSpec
from speedbench.engines.base import Request
from speedbench.engines.mock import MockEngine, MockEngineSettings, MockSettings, MockSimulator, prompt_key
from speedbench.records import Event


def _engine(sd: str | None = None, **options: Any) -> MockEngine:
    return MockEngine(EngineSpec(kind="mock", sd=sd, options={k: str(v) for k, v in options.items()}))


def _request(qid: str, max_tokens: int, turn: int = 0) -> Request:
    return Request(
        question_id=qid,
        category="c",
        turn=turn,
        messages=[{"role": "user", "content": f"question {qid}"}],
        max_tokens=max_tokens,
    )


async def _collect(engine: MockEngine, req: Request) -> list[Event]:
    return [ev async for ev in engine.stream(req)]


def _run_together(engine: MockEngine, reqs: list[Request]) -> list[list[Event]]:
    async def main() -> list[list[Event]]:
        try:
            return list(await asyncio.gather(*(_collect(engine, r) for r in reqs)))
        finally:
            await engine.close()

    return asyncio.run(main())


BATCH = {"cost": "batch", "clock": "virtual", "base_ms": 10, "per_token_ms": 1, "ttft_ms": 4}


@pytest.mark.parametrize(
    ("sd", "options", "step"),
    [
        # SD off: one token per step, step(b) = 10 + b * 1
        ("none", {}, lambda b: 10 + b),
        # k = 2, every draft accepted: 3 tokens per step, step(b) = 10 + b * 3
        (None, {"k": 2, "acceptance": "1,1"}, lambda b: 10 + 3 * b),
    ],
)
def test_step_times_follow_the_batch_really_held(sd: str | None, options: dict[str, Any], step: Any) -> None:
    eng = _engine(sd, **BATCH, **options)
    per_step = 1 if sd == "none" else 3
    # output lengths giving 2, 3 and 5 chunks (prefill token + steps): the batch shrinks 3 -> 2 -> 1
    lengths = [1 + per_step * n for n in (1, 2, 4)]
    results = _run_together(eng, [_request(q, n) for q, n in zip("abc", lengths, strict=True)])
    for evs, n in zip(results, lengths, strict=True):
        assert evs[-1].kind == "final" and sum(e.n_tokens for e in evs if e.kind == "chunk") == n
    # hand-computed: step 1 holds all 3 and their prefill (+ ttft_ms 4); a leaves after step 2, b after 3
    t1 = step(3) + 4
    t2 = t1 + step(3)
    t3 = t2 + step(2)
    t4 = t3 + step(1)
    t5 = t4 + step(1)
    assert eng.virtual_times("a", 0) == [t1, t2]
    assert eng.virtual_times("b", 0) == [t1, t2, t3]
    assert eng.virtual_times("c", 0) == [t1, t2, t3, t4, t5]
    assert [b for b, _, _ in eng.step_log()] == [3, 3, 2, 1, 1]
    assert eng.virtual_now_ms == t5


def test_knee_and_noise() -> None:
    s = MockEngineSettings(cost="batch", k=3, base_ms=10, per_token_ms=0.1, knee_tokens=32, per_token_ms_after=1)
    assert s.step_time_ms(1) == pytest.approx(10.4)
    assert s.step_time_ms(16, 0) == pytest.approx(11.6)
    assert s.step_time_ms(16) == pytest.approx(10 + 3.2 + 32)  # 64 tokens: 32 before the knee, 32 after
    # noise: seeded, bounded, mean ~1
    eng = _engine(None, **{**BATCH, "ttft_ms": 0}, k=0, noise=0.2, seed=5)
    _run_together(eng, [_request("a", 200)])
    ratios = [d / 11 for _, d, _ in eng.step_log()]
    assert all(0.8 <= r <= 1.2 for r in ratios) and len(set(ratios)) > 1
    assert abs(sum(ratios) / len(ratios) - 1) < 0.05
    eng2 = _engine(None, **{**BATCH, "ttft_ms": 0}, k=0, noise=0.2, seed=5)
    _run_together(eng2, [_request("a", 200)])
    assert eng2.step_log() == eng.step_log()


KNEE = {"cost": "batch", "clock": "virtual", "base_ms": 10, "per_token_ms": 0.1, "knee_tokens": 32,
        "per_token_ms_after": 1, "ttft_ms": 0, "acceptance": "0.8,0.6,0.4"}  # fmt: skip


def _per_user_rate(b: int, sd: str | None, k: int, output_len: int = 600) -> tuple[float, float]:
    """Mean per-user decode rate (tokens after the first per virtual second) of b requests run together,
    and their realised acceptance length."""
    options = dict(KNEE, **({} if sd == "none" else {"k": k}))
    eng = _engine(sd, **options)
    results = _run_together(eng, [_request(f"q{i}", output_len) for i in range(b)])
    rates, tokens, steps = [], 0, 0
    for i, evs in enumerate(results):
        t = eng.virtual_times(f"q{i}", 0)
        n = sum(e.n_tokens for e in evs if e.kind == "chunk")
        assert n == output_len and len(t) == len(evs) - 1
        rates.append((n - 1) / ((t[-1] - t[0]) / 1000))
        tokens += n - 1
        steps += len(t) - 1
    return sum(rates) / len(rates), tokens / steps


@pytest.mark.parametrize("b", [1, 16])
def test_sd_speedup_matches_the_closed_form(b: int) -> None:
    s = MockEngineSettings(**KNEE, k=3)
    off, al_off = _per_user_rate(b, "none", 0)
    on, al = _per_user_rate(b, None, 3)
    assert al_off == 1
    speedup = on / off
    # against the realised acceptance length: exact but for the shrinking batch at the tail
    assert speedup == pytest.approx(al * s.step_time_ms(b, 0) / s.step_time_ms(b, 3), rel=0.03)
    # against the known acceptance: AL(k) * step(b, 0) / step(b, k)
    closed = s.expected_al() * s.step_time_ms(b, 0) / s.step_time_ms(b, 3)
    assert speedup == pytest.approx(closed, rel=0.08)


def test_sd_speedup_shrinks_as_the_batch_grows() -> None:
    speedups = []
    for b in (1, 4, 8, 16):
        off, _ = _per_user_rate(b, "none", 0, 300)
        on, _ = _per_user_rate(b, None, 3, 300)
        speedups.append(on / off)
    assert speedups == sorted(speedups, reverse=True) and len(set(speedups)) == 4
    assert speedups[0] > 2 and speedups[-1] < 1  # past the knee (32 tokens a step) SD stops paying


def test_clients_that_send_again_join_the_next_step() -> None:
    """Closed loop: a client whose reply ended sends its next turn at once, and it joins the next step."""
    eng = _engine("none", **BATCH)

    async def client(qid: str, n: int) -> None:
        for turn in range(2):
            await _collect(eng, _request(qid, n, turn))

    async def main() -> None:
        await asyncio.gather(client("a", 2), client("b", 4))

    asyncio.run(main())
    a0, a1, b0 = eng.virtual_times("a", 0), eng.virtual_times("a", 1), eng.virtual_times("b", 0)
    assert a1[0] == a0[-1] + 10 + 2 + 4  # a's second turn joined b's third step (b = 2, with its prefill)
    assert b0[2] == a1[0]
    assert [b for b, _, _ in eng.step_log()][:4] == [2, 2, 2, 2]


def test_batch_options_need_cost_batch() -> None:
    with pytest.raises(ValueError, match="need cost=batch"):
        _engine(None, clock="virtual")
    with pytest.raises(ValueError, match="base_ms"):
        _engine(None, base_ms=3)


def _events(engine: MockEngine, reqs: list[Request]) -> list[list[tuple[Any, ...]]]:
    return [
        [(e.kind, e.n_tokens, e.text, e.token_ids, e.finish_reason, e.usage, e.sd) for e in evs]
        for evs in _run_together(engine, reqs)
    ]


def test_defaults_unchanged() -> None:
    """Without the new options: the same settings, description, replies, stats and counters as before."""
    opts = {"step_ms": 0, "ttft_ms": 0, "seed": 7}
    reqs = [_request(f"q{i}", 40) for i in range(4)]
    default = _engine("ngram", **opts)
    assert "cost" not in default.describe()["settings"]
    assert default.describe()["settings"] == MockSettings.from_options({**opts, "k": 3}).model_dump()
    got = _events(default, reqs)
    # computed the other way: the simulation's plans, as serve-mock streams them
    sim = MockSimulator(MockSettings.from_options({**opts, "k": 3}))
    for req, evs in zip(reqs, got, strict=True):
        plan = sim.plan(prompt_key(req.messages), req.max_tokens)
        assert [e[3] for e in evs[:-1]] == plan.chunks
        assert evs[-1][6] == plan.sd
        sim.account(plan.sd)
    assert asyncio.run(default.counters()) == sim.snapshot()
    # cost=batch changes only the timing: the same replies, stats and counters
    batch = _engine("ngram", **opts, cost="batch", clock="virtual")
    assert _events(batch, reqs) == got
    assert asyncio.run(batch.counters()) == sim.snapshot()
    # and cost=fixed said explicitly is the default
    fixed = _engine("ngram", **opts, cost="fixed")
    assert fixed.describe() == default.describe()
    assert _events(fixed, reqs) == got
