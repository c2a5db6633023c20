"""Fault injection on the HTTP mock: every request ends as exactly one record with the right cause."""

import asyncio
from collections import Counter

import aiohttp

from conftest import make_samples, serve_mock
from speedbench.config import EngineSpec
from speedbench.engines.base import Request
from speedbench.engines.mock import MockSettings, MockSimulator, prompt_key
from speedbench.engines.openai import OpenAIEngine
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import LoadSettings, send
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.sources import DecodeBasis

FAULTS = {"fail_500": "0.1", "fail_reset": "0.1", "fail_stall": "0.05", "fail_malformed": "0.05"}
CAUSE = {None: None, "500": "http_500", "reset": "reset", "stall": "timeout", "malformed": "malformed_stream"}


def _load(url, samples, timeout_s=2.0, output_len=64):
    records = []

    async def go():
        eng = OpenAIEngine(EngineSpec(kind="openai", base_url=url, model="mock", draft_length=3))
        await eng.start()
        try:
            await run_load(
                eng,
                samples,
                LoadSettings(concurrency=32, output_len=output_len, warmup=0, timeout_s=timeout_s),
                records.append,
            )
        finally:
            await eng.close()

    asyncio.run(go())
    return records


def test_every_request_is_one_complete_or_error_record_with_the_right_cause():
    samples = make_samples(200)
    args = [a for kv in FAULTS.items() for a in ("-E", f"{kv[0]}={kv[1]}")]
    with serve_mock("--ttft-ms", "1", "--step-ms", "1", "--seed", "7", *args) as url:
        records = _load(url, samples)
    # what the server decided for each prompt (same seeded simulation, first sighting of each prompt)
    sim = MockSimulator(MockSettings(seed=7, ttft_ms=1, step_ms=1, **FAULTS))
    expected = {
        s.question_id: sim.plan(prompt_key([{"role": "user", "content": s.turns[0]}]), 64).fault for s in samples
    }
    keys = [(r.question_id, r.turn) for r in records]
    assert len(keys) == len(set(keys)) == 200  # none lost, none double-counted
    got = {r.question_id: (r.error or {}).get("cause") for r in records}
    assert got == {q: CAUSE[f] for q, f in expected.items()}
    counts = Counter(expected.values())
    assert counts["500"] >= 10 and counts["reset"] >= 10 and counts["stall"] >= 4 and counts["malformed"] >= 4
    for r in records:
        if r.ok:
            assert r.completion_tokens == 64 and r.sd is not None and r.finish_reason == "length"
        else:
            assert r.error["detail"] is not None
    summary = summarize(records, DecodeBasis(3)).to_dict()  # the summary.json form
    assert summary["overall"]["requests"] + summary["overall"]["errors"] == 200
    assert summary["errors_by_cause"] == {CAUSE[f]: n for f, n in counts.items() if f is not None}
    # failed requests are excluded from latency statistics
    assert summary["overall"]["e2e_s"]["n"] == summary["overall"]["requests"]


def test_failed_turn_marks_later_turns_failed_not_lost():
    samples = make_samples(40, turns=3)
    with serve_mock("--ttft-ms", "0", "--step-ms", "0", "-E", "fail_500=0.3") as url:
        records = _load(url, samples, output_len=16)
    keys = Counter((r.question_id, r.turn) for r in records)
    assert len(keys) == 120 and set(keys.values()) == {1}
    by_q = {}
    for r in records:
        by_q.setdefault(r.question_id, {})[r.turn] = r
    saw_prior = 0
    for turns in by_q.values():
        for t in range(3):
            r = turns[t]
            if r.error and r.error["cause"] == "http_500":
                for later in range(t + 1, 3):
                    assert turns[later].error["cause"] == "prior_turn_failed"
                    saw_prior += 1
                break
    assert saw_prior > 0


def test_unreachable_server_is_a_connect_error_record():
    async def go():
        eng = OpenAIEngine(EngineSpec(kind="openai", base_url="http://127.0.0.1:9/v1", model="m"))
        eng._session = aiohttp.ClientSession()  # start() would refuse: the server is down
        try:
            req = Request("q", "c", 0, [{"role": "user", "content": "hi"}], max_tokens=4)
            return await send(eng, req, 5.0)
        finally:
            await eng.close()

    rec = asyncio.run(go())
    assert rec.error["cause"] == "connect_error" and "127.0.0.1:9" in rec.error["detail"]
