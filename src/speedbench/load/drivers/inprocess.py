"""The in-process driver: the run's load sent from this process's event loop (``run_load``).

Closed loop: ``concurrency`` workers each take the next conversation from a queue and send its turns one
after another (``ramp_up_s`` spreads the workers' first starts); each later turn carries the model's own earlier
replies.  Open loop (``request_rate``): conversations start on a seeded gamma/Poisson schedule whatever is in
flight, optionally capped (``cap``); their later turns follow as in the closed loop.  ``duration_s`` stops sending
turns after that long.  Requests are sent and timed by ``load.generator.send``; the circuit breaker
(``load.generator.Breaker``) stops dispatching when the server looks gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from speedbench.data.sample import Sample
from speedbench.engines.base import Engine
from speedbench.load.arrivals import arrival_offsets, ramp_offsets
from speedbench.load.drivers.base import Clients
from speedbench.load.generator import (
    Breaker,
    LoadResult,
    LoadSettings,
    arrival_stats,
    clock_of,
    make_request,
    pending_samples,
    retryable,
    send,
    warm_up,
)
from speedbench.records import RequestRecord


async def drive(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord],
    clients: Clients,
) -> LoadResult:
    """The driver (``load.drivers.base.Driver``): everything from this process, ``clients`` aside."""
    return await run_load(engine, samples, settings, on_record, done)


async def run_load(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord] | None = None,
) -> LoadResult:
    """Warm up, snapshot counters, run every conversation, snapshot counters again.

    ``done`` holds the final attempt of each turn already on disk (resume): a successful turn is
    skipped and its reply reused as conversation history for the turns still to run; a retryable
    failure (``retryable``) is sent again as the next attempt; any other failure ends its
    conversation there, as it did the first time.
    """
    done = done or {}
    attempts = {key: r.attempt + 1 for key, r in done.items() if retryable(r)}
    done = {key: r for key, r in done.items() if key not in attempts}
    breaker = Breaker(settings.breaker)
    result = LoadResult()
    pending = pending_samples(samples, done)

    result.warmed(await warm_up(engine, pending, settings))

    # the first wave's connections opened now, outside the window (an engine without kept-alive connections
    # opens none): as many as can be in flight at once
    slots = settings.concurrency if settings.request_rate is None else settings.cap
    preconnected = await engine.preconnect(min(slots, len(pending))) if slots and pending else 0
    result.counters_before = await engine.counters()
    result.measure_start_ns = clock_of(engine)()
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    for s in pending:
        queue.put_nowait(s)

    def record(rec: RequestRecord) -> None:
        on_record(rec)
        breaker.see(rec)

    async def conversation(sample: Sample) -> None:
        history: list[dict[str, str]] = []
        for turn in range(len(sample.turns)):
            if breaker.open or expired():
                return  # stop dispatching: the turns not sent have no record, so --resume sends them
            prev = done.get((sample.question_id, turn))
            if prev is not None:
                if not prev.ok:
                    return  # the conversation broke here in the earlier segment
                history += [
                    {"role": "user", "content": sample.turns[turn]},
                    {"role": "assistant", "content": prev.output_text},
                ]
                continue
            rec = await send(
                engine,
                make_request(sample, turn, history, settings),
                settings.timeout_s,
                settings.segment,
                attempts.get((sample.question_id, turn), 0),
            )
            record(rec)
            if rec.error is not None:
                # later turns need this reply: record them as failed with the cause, never drop them
                for later in range(turn + 1, len(sample.turns)):
                    on_record(
                        RequestRecord(
                            question_id=sample.question_id,
                            category=sample.category,
                            turn=later,
                            start_ns=rec.end_ns,
                            end_ns=rec.end_ns,
                            segment=settings.segment,
                            attempt=attempts.get((sample.question_id, later), 0),
                            error={"cause": "prior_turn_failed", "detail": f"turn {turn}: {rec.error['cause']}"},
                        )
                    )
                return
            history += [
                {"role": "user", "content": sample.turns[turn]},
                {"role": "assistant", "content": rec.output_text},
            ]

    t_start = time.perf_counter()  # arrivals, ramp-up and duration are paced on the wall clock
    deadline = None if settings.duration_s is None else t_start + settings.duration_s
    stats = arrival_stats(settings, len(pending))
    stats.preconnected = preconnected
    lags: list[float] = []
    waits: list[float] = []

    def expired() -> bool:
        if deadline is not None and time.perf_counter() >= deadline:
            stats.ended_by = f"duration {settings.duration_s:g} s reached"
            return True
        return False

    def started() -> None:
        stats.starts_s.append(time.perf_counter() - t_start)

    async def worker(first_delay: float) -> None:
        # the first wave: each worker holds its first conversation from the start and sends it after its ramp
        # delay (taking it later would let an early worker run the first wave's conversations one by one)
        first: Sample | None = None
        if first_delay > 0:
            try:
                first = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await asyncio.sleep(first_delay)
        while not breaker.open and not expired():
            if first is not None:
                sample, first = first, None
            else:
                try:
                    sample = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
            started()
            await conversation(sample)

    async def open_loop(rate: float) -> None:
        """One task per arrival, created at its due time; the dispatcher never waits for anything but the
        schedule, so its lag is the client's own.  Under a cap an arrival's task waits for a slot (counted apart:
        the cap's doing, not the client's)."""
        offsets = arrival_offsets(len(pending), rate, settings.burstiness, settings.seed)
        slots = asyncio.Semaphore(settings.cap) if settings.cap else None
        tasks: list[asyncio.Task[None]] = []

        async def one(sample: Sample) -> None:
            if slots is None:
                await conversation(sample)
                return
            full, t0 = slots.locked(), time.perf_counter()
            async with slots:
                waits.append(time.perf_counter() - t0 if full else 0.0)
                await conversation(sample)

        try:
            for sample, due in zip(pending, offsets, strict=True):
                if breaker.open:
                    break
                if settings.duration_s is not None and due >= settings.duration_s:
                    stats.ended_by = f"duration {settings.duration_s:g} s reached"
                    break
                delay = t_start + due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lags.append(max(0.0, time.perf_counter() - t_start - due))
                started()
                tasks.append(asyncio.create_task(one(sample)))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()  # only those still running: an interrupted run leaves no request behind
            await asyncio.gather(*tasks, return_exceptions=True)

    if settings.request_rate is not None:
        await open_loop(settings.request_rate)
    else:
        n_workers = max(1, min(settings.concurrency, len(pending)))
        ramp = ramp_offsets(n_workers, settings.ramp_up_s or 0.0)
        await asyncio.gather(*(worker(ramp[i]) for i in range(n_workers)))
    if breaker.open:
        stats.ended_by = "circuit breaker"
    result.arrivals = stats.finish(lags, waits)
    result.measure_end_ns = clock_of(engine)()
    result.stopped = breaker.reason
    result.counters_after = await engine.counters()
    return result
