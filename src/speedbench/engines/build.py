"""An engine from its spec: built (validated, not started) or opened (started, closed on exit).  Shared by a run
(usecases/run.py), a sweep's launch groups (usecases/sweep/) and the client workers that attach to a run's server
(load/drivers/)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from speedbench.config import EngineSpec
from speedbench.engines import registry
from speedbench.engines.base import Engine
from speedbench.errors import InvalidInput


def build_engine(spec: EngineSpec) -> Engine:
    """The engine for a spec (``RunConfig.engine_spec()``), not started; its constructor validates the spec
    (``-E`` keys and types, ``--sd``, launch settings) before anything starts."""
    if spec.launch and not registry.capabilities(spec.kind).can_launch:
        raise InvalidInput(
            f"engine {spec.kind!r} cannot --launch a server (engines that can: {', '.join(registry.launchable())})"
        )
    engine: Engine = registry.resolve(spec.kind)(spec)
    return engine


@asynccontextmanager
async def open_engine(spec: EngineSpec) -> AsyncIterator[Engine]:
    """Build and start an engine, close it on exit: one engine (one launched server) can serve several runs
    in a row (``execute(..., engine=...)``); ``spec.max_concurrency`` must cover the largest of them."""
    engine = build_engine(spec)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.close()
