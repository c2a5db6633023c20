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

__all__ = ["Clients", "Driver", "drive", "driver"]


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
    n, why = clients.procs, ""
    warm: list[RequestRecord] = []
    if n == 0:
        n, why, warm = await procs.choose_procs(engine, samples, done, settings)
        if warm:
            settings = dataclasses.replace(settings, warmup=0)  # sent by choose_procs (else the driver sends it)
        clients = dataclasses.replace(clients, procs=n)
    result = await driver(clients)(engine, samples, settings, on_record, done, clients)
    result.warmed(warm)
    if result.arrivals is not None:
        result.arrivals.client_procs, result.arrivals.client_procs_why = n, why
    return result
