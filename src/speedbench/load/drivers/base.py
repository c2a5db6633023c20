"""What a load driver is: one signature (``Driver``) and who sends the load (``Clients``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from speedbench.config import EngineSpec
from speedbench.data.sample import Sample
from speedbench.engines.base import Engine
from speedbench.load.generator import LoadResult, LoadSettings
from speedbench.records import RequestRecord


@dataclass(frozen=True)
class Clients:
    """Who sends a run's load: ``procs`` client processes (1: this process; 0: auto, from the warm-up), as Ray actors
    on the cluster at ``ray`` (None: on this host); ``spec``: the engine's spec, from which workers attach to the
    parent's server (``procs.worker_spec``)."""

    spec: EngineSpec
    procs: int = 1
    ray: str | None = None


class Driver(Protocol):
    """Send every turn still to run (``done``: the final attempt of each turn already on disk, ``--resume``), hand
    each finished record to ``on_record`` in this process (the one writer), and say how the load went."""

    async def __call__(
        self,
        engine: Engine,
        samples: Sequence[Sample],
        settings: LoadSettings,
        on_record: Callable[[RequestRecord], None],
        done: dict[tuple[str, int], RequestRecord],
        clients: Clients,
    ) -> LoadResult: ...
