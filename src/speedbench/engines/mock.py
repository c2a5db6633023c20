"""A simulated speculative-decoding engine.

The same simulation drives the in-process engine (``--engine mock``) and the HTTP server
(``speedbench serve-mock``, see mock_server.py).  Per request it produces: the prefill token
(first chunk), then one chunk per verification step carrying 1..k+1 tokens.  At each step
the draft position i is accepted with probability a_i given all earlier positions were
accepted (``acceptance=a1,...,ak``).  Near the end of the output the draft is capped at the
remaining budget minus one (the bonus token), so tokens = 1 + steps + accepted holds exactly.

Timing (default, ``cost=fixed``): chunk i of a request is due at arrival + ttft_ms + i * step_ms (fixed
schedule, no drift), whatever else is in flight.  The in-process engine also has ``-E cost=batch``
(``MockEngineSettings``): one shared engine loop verifies every request it holds in one step of
step_time(b, k) = base_ms + per_token_ms * b * (k + 1) (with an optional knee and seeded noise), b being
the requests really in the batch at that step; ``-E clock=virtual`` runs that loop on a virtual clock
(no sleeping), read back per request with ``MockEngine.virtual_times``.

A cold server (``cold_requests=N``, ``cold_factor=F``): the first N requests after the engine starts take F times
as long (cost=fixed and serve-mock: their TTFT and steps; cost=batch: every step that holds one of them).

Faults (fractions of requests): fail_500, fail_reset (connection dropped mid-stream), fail_stall (stream
stops sending), fail_malformed (a bad SSE line).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from speedbench.config import EngineSpec
from speedbench.engines import registry
from speedbench.engines.base import EngineBase, Request, check_sd
from speedbench.engines.options import parse_options
from speedbench.errors import InvalidInput
from speedbench.prompts import render_completion_prompt
from speedbench.records import Event, RequestError, SDCounterTotals, SDStats

_S = TypeVar("_S", bound="MockSettings")

# the cold-start options, left out of every dump at their defaults (the settings as before they existed)
COLD_FIELDS = ("cold_requests", "cold_factor")


class MockSettings(BaseModel):
    """Settable behaviour of the mock engine (``-E key=value`` / serve-mock flags)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(3, ge=0, description="draft length")
    acceptance: list[float] = Field(
        default_factory=lambda: [0.8, 0.6, 0.4], description="conditional acceptance per draft position"
    )
    # per category (the request's; the in-process engine only): {"coding": [0.9, 0.8, 0.7], ...}, as JSON
    acceptance_by_category: dict[str, list[float]] = Field(
        default_factory=dict, description="conditional acceptance per draft position for a category (JSON)"
    )
    ttft_ms: float = Field(20.0, ge=0)
    step_ms: float = Field(5.0, ge=0, description="time per verification step")
    output_len: int | None = Field(None, ge=1, description="tokens per reply (default: request max_tokens)")
    seed: int = 0
    per_request_stats: bool = True
    fail_500: float = Field(0.0, ge=0, le=1)
    fail_reset: float = Field(0.0, ge=0, le=1)
    fail_stall: float = Field(0.0, ge=0, le=1)
    fail_malformed: float = Field(0.0, ge=0, le=1)
    stall_s: float = Field(3600.0, gt=0)
    stream_end: str = Field(
        "separate",
        pattern="^(separate|combined)$",
        description="usage in its own final chunk (vLLM) or in the last content chunk",
    )
    model_name: str = "mock"
    batch_nondeterminism: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of replies whose tokens change when other requests are in flight, differently on "
        "each engine start (batch-dependent numerics); alone in the batch a reply is always the same",
    )
    # a cold server: the first cold_requests requests served after a start take cold_factor times as long
    cold_requests: int = Field(
        0, ge=0, description="the first N requests after the engine starts are slow (a cold server)"
    )
    cold_factor: float = Field(
        1.0, ge=1, description="how many times longer a cold request's TTFT and steps take (cost=batch: its steps)"
    )

    @field_validator("acceptance", mode="before")
    @classmethod
    def _parse_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [float(x) for x in v.split(",") if x.strip()]
        return v

    @field_validator("acceptance_by_category", mode="before")
    @classmethod
    def _parse_json(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f'not JSON ({e.msg}); e.g. {{"coding": [0.9, 0.8, 0.7]}}') from None
        return v

    def _fit(self, acceptance: list[float]) -> list[float]:
        """``acceptance`` checked and cut or padded to k (with its last value, or 0 when none given)."""
        if any(not 0.0 <= a <= 1.0 for a in acceptance):
            raise ValueError(f"acceptance values must be in [0, 1], got {acceptance}")
        if self.k > 0 and len(acceptance) < self.k:
            last = acceptance[-1] if acceptance else 0.0
            acceptance = acceptance + [last] * (self.k - len(acceptance))
        return acceptance[: self.k]

    def acceptance_of(self, category: str | None) -> list[float]:
        """The conditional acceptance per position for a request of ``category``."""
        return self.acceptance_by_category.get(category or "", self.acceptance)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # no per-category acceptance: the same settings (and description, manifest) as before it existed
        out: dict[str, Any] = handler(self)
        if not self.acceptance_by_category:
            out.pop("acceptance_by_category", None)
        # no cold start: likewise (the options left at their defaults are not in the dump)
        for name in COLD_FIELDS:
            if out.get(name) == type(self).model_fields[name].default:
                out.pop(name, None)
        return out

    @model_validator(mode="after")
    def _check(self) -> MockSettings:
        self.acceptance = self._fit(self.acceptance)
        self.acceptance_by_category = {c: self._fit(a) for c, a in self.acceptance_by_category.items()}
        if self.fail_500 + self.fail_reset + self.fail_stall + self.fail_malformed > 1.0:
            raise ValueError("fault fractions add up to more than 1")
        return self

    @classmethod
    def from_options(
        cls: type[_S], options: dict[str, Any], draft_length: int | None = None, engine: str = "mock"
    ) -> _S:
        """``-E`` options (``draft_length`` reads as ``k``; else ``draft_length``, the run's k), validated
        like every engine's options (one line naming the key and the accepted ones)."""
        opts: dict[str, Any] = dict(options)
        if "k" not in opts and "draft_length" in opts:
            opts["k"] = opts.pop("draft_length")
        if "k" not in opts and draft_length is not None:
            opts["k"] = draft_length
        return parse_options(cls, engine, opts)

    def expected_al(self, category: str | None = None) -> float:
        """E[L] = 1 + sum_i prod_{j<=i} a_j (ignoring end-of-output capping), for ``category``'s acceptance."""
        total, p = 1.0, 1.0
        for a in self.acceptance_of(category):
            p *= a
            total += p
        return total


BATCH_FIELDS = ("cost", "clock", "base_ms", "per_token_ms", "knee_tokens", "per_token_ms_after", "noise")


class MockEngineSettings(MockSettings):
    """The in-process engine's options: serve-mock's (``MockSettings``) plus the batched step-time model.

    ``cost=batch``: one engine loop runs steps over the requests it holds; a step takes
    ``step_time(b, k)`` (``step_ms`` is then unused), plus ``ttft_ms`` when one or more requests join
    in it (their prefill stalls the batch; a joining request gets its prefill token at the step's end)."""

    cost: str = Field(
        "fixed", pattern="^(fixed|batch)$", description="fixed: per-request schedule; batch: shared engine loop"
    )
    clock: str = Field("wall", pattern="^(wall|virtual)$", description="virtual: the batch loop never sleeps")
    base_ms: float = Field(5.0, ge=0, description="cost=batch: fixed cost of a step")
    per_token_ms: float = Field(0.0, ge=0, description="cost=batch: cost per token verified in a step")
    knee_tokens: int | None = Field(
        None,
        ge=0,
        description="cost=batch: tokens per step (b * (k + 1)) beyond which a token costs per_token_ms_after",
    )
    per_token_ms_after: float | None = Field(
        None, ge=0, description="cost=batch: cost per token past the knee (default per_token_ms)"
    )
    noise: float = Field(0.0, ge=0, lt=1, description="cost=batch: step time x U(1-noise, 1+noise), seeded")

    @model_validator(mode="after")
    def _check_batch(self) -> MockEngineSettings:
        if self.cost != "batch":
            changed = [f for f in BATCH_FIELDS[1:] if f in self.model_fields_set]
            if changed:
                raise ValueError(f"{', '.join(changed)} need cost=batch")
        return self

    def step_time_ms(self, b: int, k: int | None = None) -> float:
        """Noise-free time of one step verifying ``b`` requests with draft length ``k`` (default: ours)."""
        k = self.k if k is None else k
        tokens = b * (k + 1)
        after = self.per_token_ms if self.per_token_ms_after is None else self.per_token_ms_after
        if self.knee_tokens is not None and tokens > self.knee_tokens:
            return self.base_ms + self.per_token_ms * self.knee_tokens + after * (tokens - self.knee_tokens)
        return self.base_ms + self.per_token_ms * tokens


@dataclass
class _Slot:
    """One request in the batch loop: its chunks and what has been delivered."""

    chunks: list[list[int]]
    key: tuple[str, int]
    stop_at: int  # chunks to produce (a reset/stall/malformed fault stops early)
    slow: float = 1.0  # a cold request (``Plan.slow``): every step it is in takes this many times as long
    next: int = 0
    waiting: bool = False  # the consumer is blocked on the queue (the loop steps only when all are)
    gone: bool = False
    queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)


@dataclass
class Plan:
    """What the simulator decided for one request."""

    fault: str | None  # None, "500", "reset", "stall", "malformed"
    chunks: list[list[int]]  # token ids per chunk; chunk 0 = prefill token
    sd: SDStats
    fault_after: int = 0  # chunks sent before a reset/stall/malformed line
    slow: float = 1.0  # a cold request's time factor (``cold_requests`` / ``cold_factor``): TTFT and steps


VOCAB = 1000
# cost=batch: event-loop turns the engine loop yields before each step, so closed-loop clients whose reply
# just ended can send their next request into that step (the load generator's wait_for task, its record
# keeping and the next request's task take a few turns)
SETTLE_YIELDS = 8


def token_text(tid: int) -> str:
    return f" w{tid}"


@dataclass
class MockSimulator:
    settings: MockSettings
    _seen: dict[str, int] = field(default_factory=dict)
    totals: SDCounterTotals = field(init=False)
    served: int = 0  # requests planned since the engine started (the first ``cold_requests`` are slow)

    def __post_init__(self) -> None:
        self.totals = SDCounterTotals(self.settings.k)
        # what "kernel choice" a batched reply gets on this engine start (batch_nondeterminism)
        self._start_salt = os.urandom(8).hex()

    def plan(self, prompt_key: str, max_tokens: int, in_flight: int = 1, category: str | None = None) -> Plan:
        """The n-th sighting of a prompt: faults and acceptance from one seeded stream, the output tokens
        from another, so the reply is the same whatever k (SD off, ``k = 0``, replies the same as SD on)."""
        s = self.settings
        n = self._seen.get(prompt_key, 0)
        self._seen[prompt_key] = n + 1
        slow = s.cold_factor if self.served < s.cold_requests else 1.0
        self.served += 1
        digest = hashlib.sha256(f"{s.seed}:{prompt_key}:{n}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "little"))
        words = random.Random(int.from_bytes(digest[8:16], "little"))
        if in_flight > 1 and random.Random(int.from_bytes(digest[16:24], "little")).random() < s.batch_nondeterminism:
            words = random.Random(f"{self._start_salt}:{int.from_bytes(digest[8:16], 'little')}")
        u = rng.random()
        fault = None
        edges = [("500", s.fail_500), ("reset", s.fail_reset), ("stall", s.fail_stall), ("malformed", s.fail_malformed)]
        acc = 0.0
        for name, frac in edges:
            acc += frac
            if u < acc:
                fault = name
                break
        total = min(max_tokens, s.output_len) if s.output_len else max_tokens
        k = s.k
        acceptance = s.acceptance_of(category)
        hist = [0] * (k + 1)
        per_pos = [0] * k
        drafted = accepted = steps = 0
        chunks = [[words.randrange(VOCAB)]]
        remaining = total - 1
        while remaining > 0:
            d = min(k, remaining - 1)
            j = 0
            while j < d and rng.random() < acceptance[j]:
                j += 1
            chunks.append([words.randrange(VOCAB) for _ in range(j + 1)])
            remaining -= j + 1
            steps += 1
            drafted += d
            accepted += j
            hist[j] += 1
            for i in range(j):
                per_pos[i] += 1
        sd = SDStats(
            drafted=drafted, accepted=accepted, steps=steps, per_position=per_pos, histogram=hist, source="per_request"
        )
        fault_after = rng.randrange(0, max(1, len(chunks) // 2)) if fault in ("reset", "stall", "malformed") else 0
        return Plan(fault=fault, chunks=chunks, sd=sd, fault_after=fault_after, slow=slow)

    def account(self, sd: SDStats) -> None:
        """Add a finished (or partly streamed) request's steps to the server counters."""
        self.totals.add(sd)

    def snapshot(self) -> dict[str, Any]:
        return self.totals.snapshot()


def prompt_key(prompt: list[dict[str, str]] | str) -> str:
    """The simulation's id of a prompt: a conversation is rendered as the completions endpoint sends it, so
    the in-process engine and serve-mock's chat and completions routes give one prompt one id."""
    text = prompt if isinstance(prompt, str) else render_completion_prompt(prompt)
    return hashlib.sha256(text.encode()).hexdigest()


def partial_stats(chunks_sent: list[list[int]], k: int) -> SDStats:
    """Stats for the steps actually streamed before a fault (chunk 0 is prefill)."""
    hist = [0] * (k + 1)
    for c in chunks_sent[1:]:
        hist[len(c) - 1] += 1
    return SDStats.from_histogram(hist, "per_request", k)


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    await asyncio.sleep(delay if delay > 0 else 0)  # always yield so other requests progress


class MockEngine(EngineBase):
    """In-process simulated engine: the same simulation as serve-mock, without HTTP.

    ``--sd none`` simulates SD off (k = 0: one token per step, nothing drafted); any other known method
    name labels the simulated SD, whose k is ``-E k`` or the run's draft length."""

    name = "mock"
    capabilities = registry.declared("mock")

    def __init__(self, spec: EngineSpec) -> None:
        self.sd = check_sd(self.name, type(self).capabilities, spec.sd)
        options: dict[str, Any] = dict(spec.options)
        if self.sd == "none":
            if str(options.get("k", options.get("draft_length", "0"))).strip() != "0":
                raise InvalidInput("--sd none simulates SD off (k = 0): drop -E k / -E draft_length")
            options["k"] = 0
        self.settings = MockEngineSettings.from_options(options, spec.draft_length, self.name)
        self.sim = MockSimulator(self.settings)
        # cost=batch: the engine loop's state and its modelled clock (ms since the engine was built)
        self._joining: list[_Slot] = []
        self._active: list[_Slot] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._vclock_ms = 0.0
        self._vtimes: dict[tuple[str, int], list[float]] = {}
        self._steps: list[tuple[int, float, float]] = []  # (batch size, duration ms, end ms) per step
        # clock=virtual: the load generator reads this clock instead of the wall clock (load/generator.clock_of),
        # so every timestamp of the run is modelled time and no figure depends on how busy the machine is
        self.clock_ns = (lambda: int(round(self._vclock_ms * 1_000_000))) if self.settings.clock == "virtual" else None
        self._noise = random.Random(f"{self.settings.seed}:step-noise:k{self.settings.k}")
        self._in_flight = 0  # requests being streamed now (batch_nondeterminism)
        # -E per_request_stats=false: the engine reports no per-request SD stats (computed once, here)
        self.capabilities = dataclasses.replace(
            type(self).capabilities, per_request_sd_stats=self.settings.per_request_stats
        )
        self.counter_error: str | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._loop_task is not None and not self._loop_task.done():
            self._loop_task.cancel()
        return None

    async def counters(self) -> dict[str, Any] | None:
        return self.sim.snapshot()

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "mock",
            "sd": self.sd,
            "k": self.settings.k,
            # the default (cost=fixed) description is the same as before the batch model existed
            "settings": self.settings.model_dump(
                exclude=(set() if self.settings.cost == "batch" else set(BATCH_FIELDS))
            ),
            "expected_acceptance_length": self.settings.expected_al(),
        }

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        self._in_flight += 1
        try:
            async for ev in self._stream(request):
                yield ev
        finally:
            self._in_flight -= 1

    # --- cost=batch: one engine loop over the requests really held ---------------------------------

    def virtual_times(self, question_id: str, turn: int) -> list[float]:
        """cost=batch: the modelled time (ms on the engine's clock, virtual or not) at which each chunk
        of the latest request for (question_id, turn) was produced: the end of the step that made it."""
        return list(self._vtimes.get((question_id, turn), []))

    @property
    def virtual_now_ms(self) -> float:
        """cost=batch: the engine clock: the sum of the step times run so far."""
        return self._vclock_ms

    def step_log(self) -> list[tuple[int, float, float]]:
        """cost=batch: (requests in the batch, step time ms, end ms) of every step run so far."""
        return list(self._steps)

    def _step_duration_ms(self, b: int, joining: bool, slow: float = 1.0) -> float:
        s = self.settings
        d = s.step_time_ms(b)
        if s.noise:
            d *= self._noise.uniform(1 - s.noise, 1 + s.noise)
        d += s.ttft_ms if joining else 0.0
        return d * slow if slow != 1.0 else d

    async def _engine_loop(self) -> None:
        clock_wall = self.settings.clock == "wall"
        while self._joining or self._active:
            # step only when every consumer has taken what it was given, then let closed-loop
            # clients whose reply just ended send their next request (they join this step)
            for _ in range(100_000):
                if all(sl.waiting or sl.gone for sl in self._active):
                    break
                await asyncio.sleep(0)
            for _ in range(SETTLE_YIELDS):
                await asyncio.sleep(0)
            joining, self._joining = self._joining, []
            batch = [sl for sl in self._active + joining if not sl.gone]
            if not batch:
                self._active = []
                continue
            t0 = time.perf_counter()
            # a cold request in the batch (cold_requests) slows the whole step: the engine is what is cold
            dur = self._step_duration_ms(len(batch), bool(joining), max(sl.slow for sl in batch))
            if clock_wall:
                await sleep_until(t0 + dur / 1000.0)
            self._vclock_ms += dur
            self._steps.append((len(batch), dur, self._vclock_ms))
            for sl in batch:
                if sl.gone:
                    continue  # cancelled while the step ran: it still cost its share
                self._vtimes[sl.key].append(self._vclock_ms)
                sl.queue.put_nowait(sl.next)
                sl.next += 1
            self._active = [sl for sl in batch if not sl.gone and sl.next < sl.stop_at]
        self._loop_task = None

    async def _stream_batch(self, request: Request) -> AsyncIterator[Event]:
        plan = self.sim.plan(prompt_key(request.messages), request.max_tokens, self._in_flight, request.category)
        if plan.fault == "500":
            raise RequestError("http_500", "mock injected an internal server error")
        stop_at = plan.fault_after if plan.fault else len(plan.chunks)
        slot = _Slot(chunks=plan.chunks, key=(request.question_id, request.turn), stop_at=stop_at, slow=plan.slow)
        self._vtimes[slot.key] = []
        try:
            if stop_at > 0:
                self._joining.append(slot)
                if self._loop_task is None:
                    self._loop_task = asyncio.get_running_loop().create_task(self._engine_loop())
            for _ in range(stop_at):
                slot.waiting = True
                idx = await slot.queue.get()
                slot.waiting = False
                ids = plan.chunks[idx]
                yield Event("chunk", n_tokens=len(ids), text="".join(map(token_text, ids)), token_ids=list(ids))
        finally:
            slot.gone = True
        if plan.fault:
            await self._fail(plan, stop_at)
        yield self._final(plan)

    async def _stream(self, request: Request) -> AsyncIterator[Event]:
        s = self.settings
        if s.cost == "batch":
            async for ev in self._stream_batch(request):
                yield ev
            return
        plan = self.sim.plan(prompt_key(request.messages), request.max_tokens, self._in_flight, request.category)
        t0 = time.perf_counter()
        if plan.fault == "500":
            raise RequestError("http_500", "mock injected an internal server error")
        for i, ids in enumerate(plan.chunks):
            if plan.fault and i == plan.fault_after:
                await self._fail(plan, i)
            await sleep_until(t0 + plan.slow * (s.ttft_ms + i * s.step_ms) / 1000.0)
            yield Event("chunk", n_tokens=len(ids), text="".join(map(token_text, ids)), token_ids=list(ids))
        yield self._final(plan)

    async def _fail(self, plan: Plan, delivered: int) -> NoReturn:
        """An injected fault after ``delivered`` chunks: the engine counts the steps it ran, then the stream fails."""
        s = self.settings
        assert plan.fault is not None  # called only for a planned fault
        self.sim.account(partial_stats(plan.chunks[:delivered], s.k))
        if plan.fault == "stall":
            await asyncio.sleep(s.stall_s)
        cause = {"reset": "reset", "malformed": "malformed_stream", "stall": "timeout"}[plan.fault]
        raise RequestError(cause, "mock injected fault")

    def _final(self, plan: Plan) -> Event:
        """The end of a reply that was sent whole: the engine counts it, and the final event carries usage and stats."""
        self.sim.account(plan.sd)
        n = sum(len(c) for c in plan.chunks)
        return Event(
            "final",
            finish_reason="length",
            usage={"prompt_tokens": None, "completion_tokens": n},
            sd=plan.sd if self.settings.per_request_stats else None,
        )
