"""The load generator with a scripted engine: multi-turn history, concurrency bound, warm-up, timeout."""

import asyncio

from conftest import make_samples
from speedbench.engines.base import Capabilities, EngineBase, Request
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import LoadSettings
from speedbench.load.seeds import request_seed
from speedbench.records import Event


class ScriptedEngine(EngineBase):
    name = "scripted"
    capabilities = Capabilities()

    def __init__(self, delay=0.01, hang_on=None):
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = delay
        self.hang_on = hang_on
        self.counter_calls = 0

    async def start(self):
        pass

    async def close(self):
        pass

    def describe(self):
        return {}

    async def counters(self):
        self.counter_calls += 1
        return {"calls": self.counter_calls, "seen": len(self.requests)}

    async def stream(self, request):
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.question_id == self.hang_on:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.delay)
            yield Event("chunk", n_tokens=1, text=f"reply[{request.question_id}/{request.turn}]", token_ids=[1])
            await asyncio.sleep(self.delay)
            yield Event("chunk", n_tokens=2, text="+", token_ids=[2, 3])
            yield Event("final", finish_reason="stop", usage={"completion_tokens": 3})
        finally:
            self.in_flight -= 1


def _go(engine, samples, **kw):
    records = []
    settings = LoadSettings(**{"concurrency": 4, "warmup": 0, "timeout_s": 5, **kw})
    res = asyncio.run(run_load(engine, samples, settings, records.append))
    return records, res


def test_multi_turn_sends_the_models_own_replies():
    eng = ScriptedEngine()
    records, _ = _go(eng, make_samples(3, turns=3))
    assert len(records) == 9
    third = [r for r in eng.requests if r.question_id == "q1" and r.turn == 2][0]
    assert [m["role"] for m in third.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert third.messages[1]["content"] == "reply[q1/0]+"
    assert third.messages[3]["content"] == "reply[q1/1]+"
    assert third.messages[4]["content"] == "q1 turn 2: tell me something"
    # chunks are timestamped in arrival order, tokens counted per chunk
    r = records[0]
    assert r.chunk_tokens == [1, 2] and r.start_ns < r.chunk_ns[0] < r.chunk_ns[1] <= r.end_ns
    assert r.output_token_ids == [1, 2, 3] and r.completion_tokens == 3


def test_closed_loop_respects_concurrency():
    eng = ScriptedEngine()
    records, _ = _go(eng, make_samples(20), concurrency=4)
    assert len(records) == 20 and eng.max_in_flight == 4


def test_warmup_requests_are_not_recorded_and_precede_the_counter_window():
    eng = ScriptedEngine()
    records, res = _go(eng, make_samples(5), warmup=3)
    assert len(eng.requests) == 8 and len(records) == 5
    assert res.counters_before == {"calls": 1, "seen": 3}  # snapshot taken after warm-up
    assert res.counters_after == {"calls": 2, "seen": 8}


def test_timeout_becomes_an_error_record():
    eng = ScriptedEngine(hang_on="q2")
    records, _ = _go(eng, make_samples(4), timeout_s=0.3)
    by_q = {r.question_id: r for r in records}
    assert by_q["q2"].error["cause"] == "timeout"
    assert all(by_q[q].ok for q in ("q0", "q1", "q3"))


def test_each_request_carries_its_seed_from_the_run_seed_question_and_turn():
    eng = ScriptedEngine(delay=0)
    _go(eng, make_samples(3, turns=2), seed=9, warmup=2)
    assert len(eng.requests) == 8
    for r in eng.requests:  # warm-up requests too: the same derivation
        assert r.seed == request_seed(9, r.question_id, r.turn)
    assert len({r.seed for r in eng.requests[2:]}) == 6
