"""Load generator: a closed loop, or open-loop arrivals (load/arrivals.py).

Closed loop: ``concurrency`` workers each take the next conversation from a queue and send its turns one
after another (``ramp_up_s`` spreads the workers' first starts); each later turn carries the model's own earlier
replies.  Open loop (``request_rate``): conversations start on a seeded gamma/Poisson schedule whatever is in
flight, optionally capped (``cap``); their later turns follow as in the closed loop.  ``duration_s`` stops sending
turns after that long.  Every chunk is
timestamped here with ``time.perf_counter_ns()`` as it arrives (engines never time; an engine that
simulates time, the mock with ``-E clock=virtual``, lends its clock instead: ``clock_of``).  Each
finished turn becomes a RequestRecord handed to ``on_record`` at once (the run directory
appends and flushes it), so an interrupted run loses only requests in flight.

A circuit breaker stops dispatching after ``breaker`` consecutive connection-level failures
(``TRANSPORT_CAUSES``: the server is gone, not merely refusing requests); the run then ends
with ``LoadResult.stopped`` saying why, and ``--resume`` retries what failed (``RETRY_CAUSES``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from speedbench.config import RunConfig
from speedbench.data.sample import Sample
from speedbench.engines.base import Engine, Request
from speedbench.load.arrivals import ArrivalStats, arrival_offsets, ramp_offsets
from speedbench.load.seeds import request_seed
from speedbench.records import Event, RequestError, RequestRecord

# failures that say the server could not be reached or went away mid-stream: what trips the breaker
# (HTTP error statuses do not: a server that answers is up, and those count toward --max-failed)
TRANSPORT_CAUSES = frozenset({"connect_error", "reset", "timeout"})


def retryable(rec: RequestRecord) -> bool:
    """A failure worth sending again on ``--resume``: the transport failed (or the server did, 5xx), or an
    earlier turn of the conversation did; a 4xx or a malformed reply would fail the same way again."""
    cause = (rec.error or {}).get("cause", "")
    return cause in TRANSPORT_CAUSES or cause == "prior_turn_failed" or cause.startswith("http_5")


@dataclass
class LoadSettings:
    concurrency: int = 32
    output_len: int = 256
    temperature: float = 0.0
    ignore_eos: bool = False
    timeout_s: float | None = 300.0  # None: no wall-clock limit
    warmup: int = 2
    seed: int = 0  # the run's seed: each request's sampling seed is derived from it (load/seeds.py)
    segment: int = 0
    breaker: int = 10  # stop after this many consecutive TRANSPORT_CAUSES failures; 0: never stop
    request_rate: float | None = None  # open loop: conversations arriving per second (None: closed loop)
    burstiness: float = 1.0  # open loop: gamma shape of the gaps (1: Poisson)
    cap: int | None = None  # open loop: most conversations in flight (None: no cap)
    ramp_up_s: float | None = None  # closed loop: the first wave's starts spread over this long
    duration_s: float | None = None  # no turn is sent after this long (None: until every conversation is done)

    @classmethod
    def of(cls, cfg: RunConfig, **resolved: Any) -> LoadSettings:
        """A run's load settings: every field named as a RunConfig field taken from ``cfg``, the others (and any
        the run resolves itself: the timeout, warm-up on resume, the segment, the open loop's cap) from
        ``resolved``."""
        taken = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name in RunConfig.model_fields}
        return cls(**{**taken, **resolved})


@dataclass
class LoadResult:
    counters_before: dict[str, Any] | None = None
    counters_after: dict[str, Any] | None = None
    warmup_errors: list[str] = field(default_factory=list)
    measure_start_ns: int = 0
    measure_end_ns: int = 0
    stopped: str | None = None  # why the circuit breaker stopped dispatching (None: it did not)
    arrivals: ArrivalStats | None = None  # how the conversations were started (closed or open loop)


class Breaker:
    """Counts consecutive connection-level failures across all workers; opens at ``limit`` (0: never)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.run = 0
        self.last: list[str] = []
        self.reason: str | None = None

    def see(self, rec: RequestRecord) -> None:
        if self.reason is not None:
            return
        cause = (rec.error or {}).get("cause")
        if cause not in TRANSPORT_CAUSES:
            self.run, self.last = 0, []
            return
        self.run += 1
        self.last = [*self.last[-2:], f"{cause}: {(rec.error or {}).get('detail', '')}"]
        if self.limit and self.run >= self.limit:
            self.reason = (
                f"circuit breaker: {self.run} consecutive connection-level failures (last: {self.last[-1]}); "
                "the server looks unreachable, dispatching stopped"
            )

    @property
    def open(self) -> bool:
        return self.reason is not None


_timeout = getattr(asyncio, "timeout", None)


def clock_of(engine: Engine) -> Callable[[], int]:
    """The clock every timestamp of a run is read from: ``time.perf_counter_ns``, or the engine's own
    ``clock_ns`` when it simulates time (the mock's virtual clock: then figures are modelled time, immune to a
    busy machine)."""
    return engine.clock_ns or time.perf_counter_ns


async def send(
    engine: Engine, req: Request, timeout_s: float | None, segment: int = 0, attempt: int = 0
) -> RequestRecord:
    """Send one request and measure it; failures become error records (never raised)."""
    rec = RequestRecord(
        question_id=req.question_id,
        category=req.category,
        turn=req.turn,
        start_ns=0,
        end_ns=0,
        segment=segment,
        attempt=attempt,
    )
    texts: list[str] = []
    thoughts: list[str] = []
    ids: list[int] = []
    ids_exact = True
    final: list[Event] = []
    chunk_ns, chunk_tokens = rec.chunk_ns, rec.chunk_tokens
    now = clock_of(engine)

    async def consume() -> None:
        nonlocal ids_exact
        # start is taken here, inside the task that sends, so task scheduling is not counted as latency
        rec.start_ns = now()
        async for ev in engine.stream(req):
            t = now()
            if ev.kind == "chunk":
                chunk_ns.append(t)
                chunk_tokens.append(ev.n_tokens)
                texts.append(ev.text)
                if ev.reasoning_text:
                    thoughts.append(ev.reasoning_text)
                if ev.token_ids is None:
                    ids_exact = False
                else:
                    ids.extend(ev.token_ids)
            else:
                final.append(ev)

    rec.start_ns = now()  # replaced by consume(); kept for a timeout before it ran
    try:
        if _timeout is not None:  # Python >= 3.11: no task of its own per request (wait_for makes one)
            async with _timeout(timeout_s):
                await consume()
        else:
            await asyncio.wait_for(consume(), timeout_s)
    except asyncio.TimeoutError:
        rec.error = {
            "cause": "timeout",
            "detail": f"no complete reply within {timeout_s:g} s ({sum(chunk_tokens)} tokens received)",
        }
    except RequestError as e:
        rec.error = {"cause": e.cause, "detail": e.detail}
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as e:  # an engine bug must still leave a record with its cause
        rec.error = {"cause": "client_exception", "detail": f"{type(e).__name__}: {e}"}
    rec.end_ns = now()
    rec.output_text = "".join(texts)
    rec.reasoning_text = "".join(thoughts)
    if rec.error is None and not final:
        rec.error = {"cause": "reset", "detail": "stream ended without a final event"}
    if rec.error is None and not chunk_ns:
        rec.error = {"cause": "empty_reply", "detail": "no output tokens"}
    if final:
        ev = final[-1]
        rec.finish_reason = ev.finish_reason
        rec.sd = ev.sd
        usage = ev.usage or {}
        if usage.get("completion_tokens") is not None:
            rec.completion_tokens = int(usage["completion_tokens"])
            rec.completion_tokens_source = "server_usage"
        if usage.get("prompt_tokens") is not None:
            rec.prompt_tokens = int(usage["prompt_tokens"])
    if rec.completion_tokens is None:
        rec.completion_tokens = sum(chunk_tokens)
    rec.output_token_ids = ids if ids_exact and ids else None
    # per-chunk counts are exact when every chunk carried token ids, or (one token per text
    # chunk) when the server's total agrees with the chunk count
    rec.chunk_tokens_exact = ids_exact or rec.completion_tokens == sum(chunk_tokens)
    return rec


def make_request(sample: Sample, turn: int, history: list[dict[str, str]], s: LoadSettings) -> Request:
    messages = history + [{"role": "user", "content": sample.turns[turn]}]
    return Request(
        question_id=sample.question_id,
        category=sample.category,
        turn=turn,
        messages=messages,
        max_tokens=s.output_len,
        temperature=s.temperature,
        ignore_eos=s.ignore_eos,
        seed=request_seed(s.seed, sample.question_id, turn),
    )


def pending_samples(samples: Sequence[Sample], done: dict[tuple[str, int], RequestRecord]) -> list[Sample]:
    """The conversations with a turn still to send: one with no record, or whose record is a failure ``--resume``
    retries (``retryable``)."""

    def settled(key: tuple[str, int]) -> bool:
        rec = done.get(key)
        return rec is not None and not retryable(rec)

    return [s for s in samples if not all(settled((s.question_id, t)) for t in range(len(s.turns)))]


def arrival_stats(settings: LoadSettings, conversations: int) -> ArrivalStats:
    """The figures of one segment's traffic shape, to be filled as its conversations start."""
    open_loop = settings.request_rate is not None
    return ArrivalStats(
        mode="open" if open_loop else "closed",
        segment=settings.segment,
        requested_rate=settings.request_rate,
        burstiness=settings.burstiness if open_loop else None,
        cap=settings.cap if open_loop else settings.concurrency,
        ramp_up_s=settings.ramp_up_s,
        duration_s=settings.duration_s,
        conversations=conversations,
    )


async def warm_up(engine: Engine, pending: Sequence[Sample], settings: LoadSettings) -> list[RequestRecord]:
    """``settings.warmup`` first turns sent together and not recorded: the server's caches and the client's
    connections warmed; their records say how fast one request streams (``--client-procs auto``)."""
    warm = [make_request(pending[i % len(pending)], 0, [], settings) for i in range(settings.warmup)]
    return list(await asyncio.gather(*(send(engine, r, settings.timeout_s) for r in warm)))


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

    if settings.warmup and pending:
        recs = await warm_up(engine, pending, settings)
        result.warmup_errors = [f"{r.question_id}: {r.error['cause']}" for r in recs if r.error]

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
