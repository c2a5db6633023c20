"""The client-processes driver (``--client-procs N``, docs/scale.md), for more load than one event loop holds: the
run's conversations split over N worker processes, each with its own event loop and its own connection to the same
server, and one writer.

- The parent starts (or launches) the engine once, sends the warm-up, reads the counters before and after, and is
  the **one writer**: every worker sends each finished record to it at once over a queue, and the parent appends
  it to records.jsonl and flushes (``on_record``), as a one-process run does.  A worker that dies loses only its
  requests in flight; a finished record is on disk as soon as the parent has read it.
- Conversations are dealt round-robin in selection order; closed loop: the concurrency is split as evenly as it
  goes (worker i gets C // N, plus one for the first C % N); open loop: each worker runs its own schedule at R / N
  a second from a seed of its own (the superposition of N independent Poisson processes of rate R / N is one of
  rate R; the order of arrivals across workers then differs from the one-process schedule).
- Per-request timings come from each worker's ``time.perf_counter_ns()``: on Linux that is CLOCK_MONOTONIC, one
  clock for every process of the host, so records of different workers share a time axis and run-level
  throughput (Σ tokens / (last end − first start)) is measured on one clock.
- Ctrl-C / SIGTERM: the parent asks every worker to stop (SIGTERM), keeps reading records until each has exited,
  and the run ends interrupted and resumable; ``--resume`` deals the turns still to run over the workers again.
- In-process engines (reference, mock) live in the parent's process and cannot be split: refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from speedbench.config import EngineSpec
from speedbench.data.sample import Sample
from speedbench.engines.base import Engine
from speedbench.engines.build import open_engine
from speedbench.load.arrivals import ArrivalStats
from speedbench.load.drivers.base import Clients
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import (
    LoadResult,
    LoadSettings,
    arrival_stats,
    clock_of,
    pending_samples,
    warm_up,
    warmup_requests,
)
from speedbench.records import RequestRecord

STOP_GRACE_S = 10.0  # how long a stopped worker may take to cancel its requests and exit


# what one client process should be asked to read, chunks a second: a third of what one read on a dedicated core of
# this machine (57,000 to 85,000 at concurrency 256 against a near-free server, benchmarks/client_overhead.py's
# client ceiling, 2026-12-02), so that its timestamps stay sharp
CHUNKS_PER_PROC = 20_000


async def choose_procs(
    engine: Engine, samples: Sequence[Sample], done: dict[tuple[str, int], RequestRecord], settings: LoadSettings
) -> tuple[int, str, list[RequestRecord]]:
    """``--client-procs auto``: send the warm-up (``warmup_requests``, at least 2 first turns) and read how fast one
    request streams (chunks a second, median over the warm-up); times the requests expected in flight (the
    concurrency, the cap, or an uncapped open loop's rate × the warm-up's E2E, Little's law) that is the chunk rate
    the client must read; one process per ``CHUNKS_PER_PROC`` of it, at most one per CPU but one.  In-process
    engines: 1.
    Returns (processes, why, the warm-up's records: none when it sent none)."""
    from speedbench.metrics.latency import e2e_s

    if engine.capabilities.in_process:
        return 1, "", []
    pending = pending_samples(samples, done)
    if not pending:
        return 1, "", []
    recs = await warm_up(engine, pending, settings, max(2, warmup_requests(settings)))
    rates = sorted(
        (len(r.chunk_ns) - 1) / ((r.chunk_ns[-1] - r.chunk_ns[0]) / 1e9)
        for r in recs
        if r.ok and len(r.chunk_ns) > 1 and r.chunk_ns[-1] > r.chunk_ns[0]
    )
    if not rates:
        return 1, "the warm-up measured no chunk rate", recs
    rate = rates[len(rates) // 2]
    if settings.request_rate is not None and settings.cap is None:
        e2es = sorted(e2e_s(r) for r in recs if r.ok)
        e2e = e2es[len(e2es) // 2]
        in_flight = max(1.0, settings.request_rate * e2e)
    else:
        in_flight = float(settings.cap or settings.concurrency)
    need = in_flight * rate
    most = max(1, (os.cpu_count() or 2) - 1)
    procs = min(most, max(1, -(-int(need) // CHUNKS_PER_PROC)))
    why = (
        f"{in_flight:,.0f} in flight x {rate:,.0f} chunks/s each = {need:,.0f} chunks/s; one process takes "
        f"{CHUNKS_PER_PROC:,}"
        + (f"; capped at {most} (CPUs - 1)" if procs == most and need > most * CHUNKS_PER_PROC else "")
    )
    return procs, why, recs


def worker_spec(spec: EngineSpec, engine: Engine) -> EngineSpec:
    """The spec a worker attaches with: the parent's server (launched or attached), never a second launch."""
    d = engine.describe()
    update: dict[str, Any] = {"launch": False, "server_bin": None, "server_args": [], "log_dir": None}
    if d.get("base_url"):
        update["base_url"] = d["base_url"]
    if d.get("model"):
        update["model"] = d["model"]
    if d.get("metrics_url"):
        update["metrics_url"] = d["metrics_url"]
    return spec.model_copy(update=update)


def split(samples: Sequence[Sample], settings: LoadSettings, procs: int) -> list[tuple[list[Sample], LoadSettings]]:
    """Each worker's conversations (round-robin) and settings (its share of the concurrency or the rate, its own
    arrival seed); workers with nothing to do are left out."""
    out = []
    for i in range(procs):
        mine = list(samples[i::procs])
        if not mine:
            continue
        share = dataclasses.replace(
            settings,
            concurrency=max(1, settings.concurrency // procs + (1 if i < settings.concurrency % procs else 0)),
            request_rate=None if settings.request_rate is None else settings.request_rate / procs,
            cap=None
            if settings.cap is None
            else max(1, settings.cap // procs + (1 if i < settings.cap % procs else 0)),
            seed=settings.seed if i == 0 else settings.seed * 1000 + i,
            warmup=0,
        )
        out.append((mine, share))
    return out


def share_args(mine: Sequence[Sample], share: LoadSettings, done: dict[tuple[str, int], RequestRecord]
               ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """What a worker is sent (plain data, for a spawned process or a Ray actor): its settings, its conversations and
    the records already on disk of those conversations (``--resume``)."""
    ids = {s.question_id for s in mine}
    prior = [r.to_dict() for key, r in done.items() if key[0] in ids]
    return dataclasses.asdict(share), [s.to_dict() for s in mine], prior


def from_share_args(settings: dict[str, Any], samples: list[dict[str, Any]], done: list[dict[str, Any]]
                    ) -> tuple[LoadSettings, list[Sample], dict[tuple[str, int], RequestRecord]]:  # fmt: skip
    """``share_args`` read back on the worker's side."""
    mine = [Sample(**{**s, "turns": tuple(s["turns"])}) for s in samples]
    previous = {(r.question_id, r.turn): r for r in map(RequestRecord.from_dict, done)}
    return LoadSettings(**settings), mine, previous


async def warm_once(
    engine: Engine, samples: Sequence[Sample], done: dict[tuple[str, int], RequestRecord], settings: LoadSettings
) -> tuple[LoadResult, list[Sample]]:
    """The parent's part before any worker runs: the conversations with a turn still to send, and the warm-up sent
    once to the server (as a one-process run sends it), its records and errors in the result."""
    result = LoadResult()
    pending = pending_samples(samples, done)
    result.warmed(await warm_up(engine, pending, settings))
    return result, pending


def _worker(index: int, spec: dict[str, Any], settings: dict[str, Any], samples: list[dict[str, Any]],
            done: list[dict[str, Any]], out: Any) -> None:  # fmt: skip
    """A worker process: attach to the server, run its share, send each record to the parent as it finishes."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, me.cancel)
        load, mine, previous = from_share_args(settings, samples, done)
        async with open_engine(EngineSpec.model_validate(spec)) as engine:
            result = await run_load(engine, mine, load, lambda r: out.put(("record", index, r.to_dict())), previous)
        arrivals = result.arrivals.to_dict() if result.arrivals else None
        out.put(("done", index, {"stopped": result.stopped, "arrivals": arrivals}))

    try:
        asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        out.put(("interrupted", index, None))
    except BaseException as e:  # a worker that cannot run says why, in one line
        out.put(("error", index, f"{type(e).__name__}: {e}"))


async def drive(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord],
    clients: Clients,
) -> LoadResult:
    """The driver (``load.drivers.base.Driver``): ``run_load`` over ``clients.procs`` worker processes (module
    docstring); the parent writes every record."""
    spec, procs = clients.spec, clients.procs
    result, pending = await warm_once(engine, samples, done, settings)
    result.counters_before = await engine.counters()
    result.measure_start_ns = clock_of(engine)()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    attached = worker_spec(spec, engine).model_dump(mode="json")
    workers = []
    for i, (mine, share) in enumerate(split(pending, settings, procs)):
        p = ctx.Process(target=_worker, args=(i, attached, *share_args(mine, share, done), out), daemon=True)
        p.start()
        workers.append(p)
    finals: dict[int, tuple[str, Any]] = {}
    loop = asyncio.get_running_loop()

    def drain(block_s: float) -> None:
        try:
            kind, index, payload = out.get(timeout=block_s)
        except queue_mod.Empty:
            return
        if kind == "record":
            on_record(RequestRecord.from_dict(payload))
        else:
            finals[index] = (kind, payload)

    try:
        while len(finals) < len(workers):
            await loop.run_in_executor(None, drain, 0.2)
            if any(not p.is_alive() for p in workers) and len(finals) < len(workers):
                _settle(workers, finals, drain)
    except asyncio.CancelledError:
        for p in workers:
            if p.is_alive():
                os.kill(p.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while len(finals) < len(workers) and time.monotonic() < deadline:
            drain(0.2)
            _settle(workers, finals, drain)
        raise
    finally:
        for p in workers:
            p.join(timeout=1.0)
            if p.is_alive():
                p.kill()
        with contextlib.suppress(Exception):
            while True:  # records a worker sent just before it exited
                kind, index, payload = out.get_nowait()
                if kind == "record":
                    on_record(RequestRecord.from_dict(payload))
    result.measure_end_ns = clock_of(engine)()
    result.counters_after = await engine.counters()
    conclude(result, finals, settings)
    return result


def conclude(result: LoadResult, finals: dict[int, tuple[str, Any]], settings: LoadSettings) -> None:
    """The run's ending from every worker's final word ("done", "interrupted" or "error"): a worker that failed or
    died ends the run like the circuit breaker (its finished records kept, the run resumable, the cause said); one
    stopped by a signal sent to it (e.g. Ctrl-C to the group) ends it interrupted."""
    errors = [f"client worker {i}: {p}" for i, (k, p) in sorted(finals.items()) if k == "error"]
    stopped = [p["stopped"] for k, p in finals.values() if k == "done" and p["stopped"]]
    if any(k == "interrupted" for k, _ in finals.values()) and not errors:
        raise asyncio.CancelledError
    result.stopped = "; ".join(errors) if errors else (stopped[0] if stopped else None)
    result.arrivals = _merge([p["arrivals"] for k, p in finals.values() if k == "done" and p["arrivals"]], settings)


def _settle(workers: list[Any], finals: dict[int, tuple[str, Any]], drain: Callable[[float], None]) -> None:
    """A worker that exited without a final message (killed): read what it sent, then mark it."""
    for i, p in enumerate(workers):
        if i not in finals and not p.is_alive():
            drain(0.05)
            if i not in finals:
                finals[i] = ("error", f"exited with code {p.exitcode} without finishing")


def _merge(parts: list[dict[str, Any]], settings: LoadSettings) -> ArrivalStats | None:
    """One segment's arrival figures from the workers': starts and lags pooled (each worker's clock starts at
    its own window; a few ms apart), rates summed."""
    if not parts:
        return None
    stats = arrival_stats(settings, sum(p["conversations"] for p in parts))
    stats.starts_s = sorted(x for p in parts for x in p["starts_s"])
    ended = {p["ended_by"] for p in parts}
    stats.ended_by = "; ".join(sorted(ended))
    stats.finish([], [])
    if stats.mode == "open":
        rates = [p["achieved_rate"] for p in parts if p["achieved_rate"]]
        stats.achieved_rate = sum(rates) if rates else None
    lags = [p[k] for p in parts for k in ("lag_p99_s",) if p[k] is not None]
    stats.lag_p99_s = max(lags) if lags else None  # the worst worker's p99: an upper bound on the pooled p99
    stats.lag_max_s = max((p["lag_max_s"] for p in parts if p["lag_max_s"] is not None), default=None)
    p50 = [p["lag_p50_s"] for p in parts if p["lag_p50_s"] is not None]
    stats.lag_p50_s = max(p50) if p50 else None
    stats.slot_waits = sum(p["slot_waits"] for p in parts)
    stats.preconnected = sum(p.get("preconnected", 0) for p in parts)
    return stats
