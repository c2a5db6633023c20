"""What every load driver (load/drivers/) shares: the settings and result of a run's load, one request sent and
timed (``send``), the warm-up, what ``--resume`` sends again, the circuit breaker.  Every chunk is
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
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from speedbench.config import RunConfig
from speedbench.data.sample import Sample
from speedbench.engines.base import Engine, Request
from speedbench.load.arrivals import ArrivalStats
from speedbench.load.seeds import request_seed
from speedbench.records import Event, RequestError, RequestRecord

# failures that say the server could not be reached or went away mid-stream: what trips the breaker
# (HTTP error statuses do not: a server that answers is up, and those count toward --max-failed)
TRANSPORT_CAUSES = frozenset({"connect_error", "reset", "timeout"})


# not a failure: a turn of a per-category window that did not finish, which ``--resume`` runs again with the rest of
# its window (usecases/run.py marks it so; never written to records.jsonl)
WINDOW_RERUN = "window_rerun"


def retryable(rec: RequestRecord) -> bool:
    """A failure worth sending again on ``--resume``: the transport failed (or the server did, 5xx), or an
    earlier turn of the conversation did; a 4xx or a malformed reply would fail the same way again.  A turn of an
    unfinished per-category window (``WINDOW_RERUN``) is sent again too."""
    cause = (rec.error or {}).get("cause", "")
    return cause in TRANSPORT_CAUSES or cause in ("prior_turn_failed", WINDOW_RERUN) or cause.startswith("http_5")


@dataclass
class LoadSettings:
    concurrency: int = 32
    output_len: int = 256
    temperature: float = 0.0
    ignore_eos: bool = False
    timeout_s: float | None = 300.0  # None: no wall-clock limit
    warmup: int | None = None  # warm-up requests; None: one full wave (``warmup_requests``)
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
    # the warm-up's own records (never written to records.jsonl, never in a figure): the manifest's ``warmup``
    warmup_records: list[RequestRecord] = field(default_factory=list)
    measure_start_ns: int = 0
    measure_end_ns: int = 0
    stopped: str | None = None  # why the circuit breaker stopped dispatching (None: it did not)
    arrivals: ArrivalStats | None = None  # how the conversations were started (closed or open loop)
    window_arrivals: list[ArrivalStats] = field(default_factory=list)  # per-category windows: one per window

    def warmed(self, records: Sequence[RequestRecord]) -> LoadResult:
        """The warm-up ``records`` (sent before this result's own, if any) kept: their records and errors first."""
        self.warmup_records = [*records, *self.warmup_records]
        self.warmup_errors = [*warmup_errors(records), *self.warmup_errors]
        return self

    def merged_warmup(self, other: LoadResult) -> LoadResult:
        """``other``'s warm-up (sent after this result's) added after this result's."""
        self.warmup_records = [*self.warmup_records, *other.warmup_records]
        self.warmup_errors = [*self.warmup_errors, *other.warmup_errors]
        return self


def warmup_errors(records: Sequence[RequestRecord]) -> list[str]:
    """The warm-up's failures, one ``question id: cause`` each (the manifest's ``warmup_errors``)."""
    return [f"{r.question_id}: {r.error['cause']}" for r in records if r.error]


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


# an uncapped open loop's warm-up: one second's arrivals at the rate, within these bounds (the requests in flight
# are not known before the window; a capped one warms up with its cap)
OPEN_LOOP_WAVE = (2, 32)


def warmup_requests(settings: LoadSettings) -> int:
    """How many warm-up requests a run sends: ``--warmup N`` as given (0: none); by default (None) one full wave,
    so that a cold server's slow first requests (engine caches, compiled graphs, connections) are spent before the
    window: the concurrency (closed loop), the cap (open loop with ``--concurrency``), else one second's arrivals
    at the rate, at least 2 and at most 32 (``OPEN_LOOP_WAVE``)."""
    if settings.warmup is not None:
        return settings.warmup
    if settings.request_rate is None:
        return settings.concurrency
    if settings.cap:
        return settings.cap
    low, high = OPEN_LOOP_WAVE
    return max(low, min(high, math.ceil(settings.request_rate)))


WARMUP_MARK = "(warm-up {i}) "


def warmup_request(sample: Sample, i: int, settings: LoadSettings) -> Request:
    """Warm-up request ``i``: ``sample``'s first turn as a measured request asks for it (same max_tokens,
    temperature, ignore_eos), its prompt led by a mark of its own (``WARMUP_MARK``) so that an engine's prefix cache
    (vLLM's, on by default; llama.cpp's prompt cache) cannot serve the measured turn from the warm-up's prefill: a
    measured first turn sent just before would prefill from cache, a TTFT that no run without warm-up sees
    (measured on vLLM-CPU: the same 36 prompts repeated on one server, TTFT p50 2.74 s then 1.24 s)."""
    req = make_request(sample, 0, [], settings)
    first = req.messages[0]
    marked = [{**first, "content": WARMUP_MARK.format(i=i) + first["content"]}, *req.messages[1:]]
    return dataclasses.replace(req, messages=marked)


async def warm_up(
    engine: Engine, pending: Sequence[Sample], settings: LoadSettings, n: int | None = None
) -> list[RequestRecord]:
    """``n`` (default ``warmup_requests``) first turns sent together and not recorded in records.jsonl: the
    server's caches and the client's connections warmed, each request asking for as many tokens as a measured one
    (``make_request``); their records (the run keeps them apart: ``LoadResult.warmup_records``) say how fast one
    request streams (``--client-procs auto``) and how slow the cold server was."""
    count = warmup_requests(settings) if n is None else n
    if not count or not pending:
        return []
    warm = [warmup_request(pending[i % len(pending)], i, settings) for i in range(count)]
    return list(await asyncio.gather(*(send(engine, r, settings.timeout_s, settings.segment) for r in warm)))
