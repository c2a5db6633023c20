"""A simulated speculative-decoding engine.

The same simulation drives the in-process engine (``--engine mock``) and the HTTP server
(``speedbench serve-mock``, see mock_server.py).  Per request it produces: the prefill token
(first chunk), then one chunk per verification step carrying 1..k+1 tokens.  At each step
the draft position i is accepted with probability a_i given all earlier positions were
accepted (``acceptance=a1,...,ak``).  Near the end of the output the draft is capped at the
remaining budget minus one (the bonus token), so tokens = 1 + steps + accepted holds exactly.

Timing: chunk i of a request is due at arrival + ttft_ms + i * step_ms (fixed schedule,
no drift).  Faults (fractions of requests): fail_500, fail_reset (connection dropped
mid-stream), fail_stall (stream stops sending), fail_malformed (a bad SSE line).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speedbench.config import EngineSpec
from speedbench.engines import registry
from speedbench.engines.base import Request, check_sd
from speedbench.engines.options import parse_options
from speedbench.prompts import render_completion_prompt
from speedbench.records import Event, RequestError, SDCounterTotals, SDStats


class MockSettings(BaseModel):
    """Settable behaviour of the mock engine (``-E key=value`` / serve-mock flags)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(3, ge=0, description="draft length")
    acceptance: list[float] = Field(
        default_factory=lambda: [0.8, 0.6, 0.4], description="conditional acceptance per draft position"
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

    @field_validator("acceptance", mode="before")
    @classmethod
    def _parse_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [float(x) for x in v.split(",") if x.strip()]
        return v

    @model_validator(mode="after")
    def _check(self) -> MockSettings:
        if any(not 0.0 <= a <= 1.0 for a in self.acceptance):
            raise ValueError(f"acceptance values must be in [0, 1], got {self.acceptance}")
        if self.k > 0 and len(self.acceptance) < self.k:
            # pad with the last value (or 0 when none given) so any k works
            last = self.acceptance[-1] if self.acceptance else 0.0
            self.acceptance = self.acceptance + [last] * (self.k - len(self.acceptance))
        self.acceptance = self.acceptance[: self.k]
        if self.fail_500 + self.fail_reset + self.fail_stall + self.fail_malformed > 1.0:
            raise ValueError("fault fractions add up to more than 1")
        return self

    @classmethod
    def from_options(
        cls, options: dict[str, Any], draft_length: int | None = None, engine: str = "mock"
    ) -> MockSettings:
        """``-E`` options (``draft_length`` reads as ``k``; else ``draft_length``, the run's k), validated
        like every engine's options (one line naming the key and the accepted ones)."""
        opts: dict[str, Any] = dict(options)
        if "k" not in opts and "draft_length" in opts:
            opts["k"] = opts.pop("draft_length")
        if "k" not in opts and draft_length is not None:
            opts["k"] = draft_length
        return parse_options(cls, engine, opts)

    def expected_al(self) -> float:
        """E[L] = 1 + sum_i prod_{j<=i} a_j (ignoring end-of-output capping)."""
        total, p = 1.0, 1.0
        for a in self.acceptance:
            p *= a
            total += p
        return total


@dataclass
class Plan:
    """What the simulator decided for one request."""

    fault: str | None  # None, "500", "reset", "stall", "malformed"
    chunks: list[list[int]]  # token ids per chunk; chunk 0 = prefill token
    sd: SDStats
    fault_after: int = 0  # chunks sent before a reset/stall/malformed line


VOCAB = 1000


def token_text(tid: int) -> str:
    return f" w{tid}"


@dataclass
class MockSimulator:
    settings: MockSettings
    _seen: dict[str, int] = field(default_factory=dict)
    totals: SDCounterTotals = field(init=False)

    def __post_init__(self) -> None:
        self.totals = SDCounterTotals(self.settings.k)
        # what "kernel choice" a batched reply gets on this engine start (batch_nondeterminism)
        self._start_salt = os.urandom(8).hex()

    def plan(self, prompt_key: str, max_tokens: int, in_flight: int = 1) -> Plan:
        """The n-th sighting of a prompt: faults and acceptance from one seeded stream, the output tokens
        from another, so the reply is the same whatever k (SD off, ``k = 0``, replies the same as SD on)."""
        s = self.settings
        n = self._seen.get(prompt_key, 0)
        self._seen[prompt_key] = n + 1
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
        hist = [0] * (k + 1)
        per_pos = [0] * k
        drafted = accepted = steps = 0
        chunks = [[words.randrange(VOCAB)]]
        remaining = total - 1
        while remaining > 0:
            d = min(k, remaining - 1)
            j = 0
            while j < d and rng.random() < s.acceptance[j]:
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
        return Plan(fault=fault, chunks=chunks, sd=sd, fault_after=fault_after)

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


class MockEngine:
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
                raise ValueError("--sd none simulates SD off (k = 0): drop -E k / -E draft_length")
            options["k"] = 0
        self.settings = MockSettings.from_options(options, spec.draft_length, self.name)
        self.sim = MockSimulator(self.settings)
        self._in_flight = 0  # requests being streamed now (batch_nondeterminism)
        # -E per_request_stats=false: the engine reports no per-request SD stats (computed once, here)
        self.capabilities = dataclasses.replace(
            type(self).capabilities, per_request_sd_stats=self.settings.per_request_stats
        )
        self.counter_error: str | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def counters(self) -> dict[str, Any] | None:
        return self.sim.snapshot()

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "mock",
            "sd": self.sd,
            "k": self.settings.k,
            "settings": self.settings.model_dump(),
            "expected_acceptance_length": self.settings.expected_al(),
        }

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        self._in_flight += 1
        try:
            async for ev in self._stream(request):
                yield ev
        finally:
            self._in_flight -= 1

    async def _stream(self, request: Request) -> AsyncIterator[Event]:
        s = self.settings
        plan = self.sim.plan(prompt_key(request.messages), request.max_tokens, self._in_flight)
        t0 = time.perf_counter()
        if plan.fault == "500":
            raise RequestError("http_500", "mock injected an internal server error")
        for i, ids in enumerate(plan.chunks):
            if plan.fault and i == plan.fault_after:
                self.sim.account(partial_stats(plan.chunks[:i], s.k))
                if plan.fault == "stall":
                    await asyncio.sleep(s.stall_s)
                cause = {"reset": "reset", "malformed": "malformed_stream", "stall": "timeout"}[plan.fault]
                raise RequestError(cause, "mock injected fault")
            await sleep_until(t0 + (s.ttft_ms + i * s.step_ms) / 1000.0)
            yield Event("chunk", n_tokens=len(ids), text="".join(map(token_text, ids)), token_ids=list(ids))
        self.sim.account(plan.sd)
        n = sum(len(c) for c in plan.chunks)
        yield Event(
            "final",
            finish_reason="length",
            usage={"prompt_tokens": None, "completion_tokens": n},
            sd=plan.sd if s.per_request_stats else None,
        )
