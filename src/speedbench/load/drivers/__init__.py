"""Load drivers: who sends a run's requests, behind one signature (``base.Driver``), chosen in one place (``drive``).

- ``inprocess``: this process's event loop (``run_load``: closed loop or open-loop arrivals);
- ``procs``: ``--client-procs N``, the conversations dealt over N worker processes on this host;
- ``ray``: ``--client-procs N --ray ADDRESS``, the same workers as Ray actors on a cluster.

Whoever sends, the parent process writes every record (``on_record``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from speedbench.data.sample import Sample
from speedbench.engines.base import Engine
from speedbench.load.drivers import inprocess, procs, ray
from speedbench.load.drivers.base import Clients, Driver
from speedbench.load.generator import LoadResult, LoadSettings
from speedbench.records import RequestRecord

__all__ = ["Clients", "Driver", "decide_procs", "drive", "driver"]


def driver(clients: Clients) -> Driver:
    """The driver for ``clients`` (``procs`` already decided)."""
    return ray.drive if clients.ray else procs.drive if clients.procs > 1 else inprocess.drive


async def drive(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord],
    clients: Clients,
) -> LoadResult:
    """Send the run's load with the driver ``clients`` names.  ``procs`` 0 (auto) is decided first from the warm-up
    (``procs.choose_procs``, which sends it; its records and errors are the result's first); the result's arrival
    figures say how many processes ran and why."""
    clients, why, warm = await decide_procs(engine, samples, done, settings, clients)
    if warm:
        settings = dataclasses.replace(settings, warmup=0)  # sent by choose_procs (else the driver sends it)
    result = await driver(clients)(engine, samples, settings, on_record, done, clients)
    result.warmed(warm)
    if result.arrivals is not None:
        result.arrivals.client_procs, result.arrivals.client_procs_why = clients.procs, why
    return result


async def decide_procs(
    engine: Engine,
    samples: Sequence[Sample],
    done: dict[tuple[str, int], RequestRecord],
    settings: LoadSettings,
    clients: Clients,
) -> tuple[Clients, str, list[RequestRecord]]:
    """``clients`` with ``procs`` decided: as given, or for 0 (auto) by ``procs.choose_procs`` from the warm-up it
    sends (none for an in-process engine); returns (clients, why, the warm-up's records)."""
    if clients.procs != 0:
        return clients, "", []
    n, why, warm = await procs.choose_procs(engine, samples, done, settings)
    return dataclasses.replace(clients, procs=n), why, warm
