"""The Engine protocol is complete: every built-in engine class has each of its members (the engine clock and
``preconnect`` included, with their defaults from EngineBase), and the load generator reads them directly."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

from speedbench.config import EngineSpec
from speedbench.engines import registry
from speedbench.engines.base import Engine, EngineBase
from speedbench.load.generator import clock_of

MEMBERS = {n for n in Engine.__annotations__} | {
    n for n, v in vars(Engine).items() if inspect.isfunction(v) and not n.startswith("_")
}
HTTP = {"base_url": "http://127.0.0.1:9/v1"}
SPECS = {"mock": {}, "reference": {}, "openai": HTTP, "vllm": HTTP, "llamacpp": HTTP, "sglang": HTTP, "trtllm": HTTP}


def test_the_protocol_names_the_clock_and_preconnect():
    assert {"clock_ns", "preconnect", "start", "stream", "counters", "close", "describe", "counter_error"} <= MEMBERS
    assert inspect.iscoroutinefunction(EngineBase.preconnect) and EngineBase.clock_ns is None


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))
def test_every_built_in_engine_has_every_protocol_member(name):
    assert name in SPECS, "a new built-in engine: add the spec it is built from here"
    cls = registry.resolve(name)
    assert issubclass(cls, EngineBase)
    for member in ("preconnect", "start", "stream", "counters", "close", "describe"):
        assert callable(getattr(cls, member)), member
    engine = cls(EngineSpec(kind=name, **SPECS[name]))  # built, never started
    assert isinstance(engine, Engine) and all(hasattr(engine, m) for m in MEMBERS)
    assert engine.clock_ns is None and clock_of(engine) is time.perf_counter_ns  # the wall clock by default
    if engine.capabilities.in_process:  # nothing kept alive to open
        assert asyncio.run(engine.preconnect(4)) == 0


def test_an_engine_that_simulates_time_lends_its_clock():
    engine = registry.resolve("mock")(EngineSpec(kind="mock", options={"cost": "batch", "clock": "virtual"}))
    assert engine.clock_ns is not None and clock_of(engine) is engine.clock_ns and clock_of(engine)() == 0
