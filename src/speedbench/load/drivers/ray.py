"""The Ray driver, ``run --client-procs N --ray ADDRESS``: the client processes of load/drivers/procs.py as Ray actors,
on any node of a cluster, for load that one host cannot generate (docs/scale.md).

- **Same split, same writer**: conversations and concurrency (or rate) are dealt as ``split`` deals them; each
  worker is an async Ray actor (one CPU) that attaches to the parent's server and runs ``run_load`` on its share.
  Every finished record is sent at once to a small sink actor pinned to the parent's node; the parent takes them
  from it (every ``POLL_S``) and is the one writer of records.jsonl.  A worker sends its last message only after
  every record it finished has reached the sink (Ray runs one caller's calls to an actor in order).
- **Clocks**: a worker's timestamps are its own ``time.perf_counter_ns()``.  A worker on this host (same kernel
  boot id) shares the parent's CLOCK_MONOTONIC: its records are taken as they are.  A worker on another host has
  its clock offset measured before the window (Cristian's method: the parent reads its clock around a call that
  returns the worker's, ``CLOCK_SAMPLES`` times; the call with the shortest round trip gives the offset, within
  half that round trip) and its records are shifted onto the parent's clock.  Per-request figures (TTFT, ITL,
  E2E) are differences of one worker's timestamps, so no offset touches them; the bound matters only for
  run-level spans (throughput over the window) and is recorded in the manifest (``arrivals.clock_bound_ms``).
- **Faults**: no worker is retried (a retried worker would send again requests whose records are already on disk).
  A worker or node lost ends the run as the circuit breaker does: every record that reached the sink is kept, the
  cause is said, ``--resume`` sends the rest.  Ctrl-C cancels the workers' tasks (their requests in flight are
  cancelled, their finished records kept) and the run ends interrupted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from speedbench.cluster import connect
from speedbench.config import EngineSpec
from speedbench.data.sample import Sample
from speedbench.engines.base import Engine
from speedbench.load.drivers.base import Clients
from speedbench.load.drivers.procs import (
    STOP_GRACE_S,
    conclude,
    from_share_args,
    share_args,
    split,
    warm_once,
    worker_spec,
)
from speedbench.load.generator import LoadResult, LoadSettings, clock_of
from speedbench.records import RequestRecord

POLL_S = 0.1
CLOCK_SAMPLES = 7
START_TIMEOUT_S = 180.0  # a worker not placed and answering by then: the cluster has no free CPU for it


def boot_id() -> str:
    """This kernel's boot id: two processes with the same one read the same CLOCK_MONOTONIC."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _classes(ray: Any) -> tuple[Any, Any]:
    """The sink and worker actor classes (defined here: ``ray`` is an optional extra, imported on use)."""

    @ray.remote(num_cpus=0)
    class RecordSink:
        def __init__(self) -> None:
            self.items: list[tuple[str, int, Any]] = []

        def put(self, item: tuple[str, int, Any]) -> None:
            self.items.append(item)

        def take(self) -> list[tuple[str, int, Any]]:
            out, self.items = self.items, []
            return out

    @ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
    class ClientWorker:
        def where(self) -> dict[str, str]:
            import socket

            return {"host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(), "boot": boot_id()}

        def clock(self) -> int:
            return time.perf_counter_ns()

        async def run(self, index: int, spec: dict[str, Any], settings: dict[str, Any], samples: list[dict[str, Any]],
                      done: list[dict[str, Any]], sink: Any) -> dict[str, Any]:  # fmt: skip
            from speedbench.engines.build import open_engine
            from speedbench.load.drivers.inprocess import run_load

            load, mine, previous = from_share_args(settings, samples, done)
            try:
                async with open_engine(EngineSpec.model_validate(spec)) as engine:
                    result = await run_load(
                        engine, mine, load, lambda r: sink.put.remote(("record", index, r.to_dict())), previous
                    )
            finally:
                # every record put before this has reached the sink once this call has run there
                await sink.put.remote(("flushed", index, None))
            arrivals = result.arrivals.to_dict() if result.arrivals else None
            return {"stopped": result.stopped, "arrivals": arrivals}

    return RecordSink, ClientWorker


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def clock_offset(ray: Any, worker: Any, samples: int = CLOCK_SAMPLES) -> tuple[int, int]:
    """(worker clock − parent clock, bound) in ns, from the call with the shortest round trip."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        tw = ray.get(worker.clock.remote())
        t1 = time.perf_counter_ns()
        if best is None or t1 - t0 < best[1]:
            best = (tw - (t0 + t1) // 2, t1 - t0)
    assert best is not None
    return best[0], best[1] // 2


def shifted(rec: RequestRecord, offset_ns: int) -> RequestRecord:
    """A record's timestamps moved onto the parent's clock (durations unchanged)."""
    if offset_ns:
        rec.start_ns -= offset_ns
        rec.end_ns -= offset_ns
        rec.chunk_ns = [t - offset_ns for t in rec.chunk_ns]
    return rec


async def drive(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord],
    clients: Clients,
) -> LoadResult:
    """The driver (``load.drivers.base.Driver``): ``run_load`` over ``clients.procs`` Ray actors on the cluster at
    ``clients.ray`` (module docstring); the parent writes every record."""
    spec, procs, address = clients.spec, clients.procs, clients.ray
    assert address is not None
    ray = connect(address, "run --ray")
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    loop = asyncio.get_running_loop()

    def call(fn: Callable[..., Any], *args: Any) -> Any:  # Ray's blocking calls off the event loop
        return loop.run_in_executor(None, fn, *args)

    result, pending = await warm_once(engine, samples, done, settings)
    parts = split(pending, settings, procs)
    RecordSink, ClientWorker = _classes(ray)
    here = ray.get_runtime_context().get_node_id()
    sink = RecordSink.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
    workers = [ClientWorker.remote() for _ in parts]
    refs: dict[int, Any] = {}
    finals: dict[int, tuple[str, Any]] = {}
    offsets: list[int] = []
    try:
        try:
            places = await call(lambda: ray.get([w.where.remote() for w in workers], timeout=START_TIMEOUT_S))
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"--ray {address}: {len(workers)} client workers (1 CPU each) were not all placed within "
                f"{START_TIMEOUT_S:g} s; does the cluster have that many free CPUs? (ray status)"
            ) from None
        bounds: list[int] = []
        here_boot = boot_id()
        for w, place in zip(workers, places, strict=True):
            if place["boot"] and place["boot"] == here_boot:
                offsets.append(0)  # this host's CLOCK_MONOTONIC
                bounds.append(0)
            else:
                off, bound = await call(clock_offset, ray, w)
                offsets.append(off)
                bounds.append(bound)
        attached = worker_spec(spec, engine).model_dump(mode="json")
        result.counters_before = await engine.counters()
        result.measure_start_ns = clock_of(engine)()
        for i, (w, (mine, share)) in enumerate(zip(workers, parts, strict=True)):
            refs[i] = w.run.remote(i, attached, *share_args(mine, share, done), sink)

        def take() -> None:
            for kind, index, payload in ray.get(sink.take.remote()):
                if kind == "record":
                    on_record(shifted(RequestRecord.from_dict(payload), offsets[index]))

        def settle(block_s: float) -> None:
            """Take what the sink holds, then the final word of every worker whose task has ended."""
            running = [ref for i, ref in refs.items() if i not in finals]
            ready, _ = ray.wait(running, num_returns=len(running), timeout=block_s) if running else ([], [])
            take()
            for i, ref in refs.items():
                if i in finals or ref not in ready:
                    continue
                try:
                    finals[i] = ("done", ray.get(ref))
                except ray.exceptions.TaskCancelledError:
                    finals[i] = ("interrupted", None)
                except ray.exceptions.RayTaskError as e:  # the worker's own code raised (e.g. the server unreachable)
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    finals[i] = ("error", f"failed on {places[i]['host']}: {_first_line(cause)}")
                except ray.exceptions.RayError as e:  # the actor, its worker process or its node is gone
                    where = places[i]
                    finals[i] = ("error", f"lost on {where['host']} (node {where['node'][:12]}): {_first_line(e)}")
            if ready:
                take()  # a lost worker's records that reached the sink before it died

        try:
            while len(finals) < len(refs):
                await call(settle, POLL_S)
        except asyncio.CancelledError:
            for i, ref in refs.items():
                if i not in finals:
                    ray.cancel(ref)
            deadline = time.monotonic() + STOP_GRACE_S
            while len(finals) < len(refs) and time.monotonic() < deadline:
                settle(0.2)
            raise
        result.measure_end_ns = clock_of(engine)()
        result.counters_after = await engine.counters()
    finally:
        for w in workers:
            ray.kill(w)
        ray.kill(sink)
        ray.shutdown()  # this driver's connection (and a `local` instance it started)
    conclude(result, finals, settings)
    if result.arrivals is not None:
        result.arrivals.client_hosts = [p["host"] for p in places]
        result.arrivals.clock_offsets_ms = [round(o / 1e6, 3) for o in offsets]
        result.arrivals.clock_bound_ms = round(max(bounds) / 1e6, 3) if bounds else None
    return result
