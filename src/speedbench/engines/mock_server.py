"""``speedbench serve-mock``: the mock SD engine behind a real OpenAI-compatible HTTP server.

Routes: POST /v1/completions, POST /v1/chat/completions (SSE streaming with
stream_options.include_usage, or plain JSON), GET /v1/models, GET /health, GET /metrics
(vLLM's spec-decode counter names).  Each verification step is one SSE chunk carrying its
1..k+1 tokens (``token_ids`` per choice, as vLLM's return_token_ids gives); the per-request SD
stats go in the final chunk as ``metrics.speculative_decoding`` (vLLM's shape).

A reasoning model (``ServeMockSettings``: ``-E reasoning_tokens=N``, ``-E reasoning_field=reasoning_content|
reasoning``): the first N output tokens of a chat reply are thinking, streamed as ``delta.<reasoning_field>``
(SGLang and older vLLM: ``reasoning_content``; newer vLLM: ``reasoning``), the rest as ``delta.content``; the step
that crosses from thinking to answer sends both in one delta.  They are the same tokens from the same steps as
without a reasoning phase (usage, SD stats and counters unchanged: thinking tokens are output tokens).  A request
with ``chat_template_kwargs.enable_thinking`` false gets no thinking, and the completions route never has any
(no chat template).  ``-E request_log=PATH`` appends each request received as one JSON line (route and body).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from pydantic import Field

from speedbench.engines.mock import MockSettings, MockSimulator, partial_stats, prompt_key, sleep_until, token_text
from speedbench.records import SDStats

SIM_KEY = web.AppKey("sim", MockSimulator)


class ServeMockSettings(MockSettings):
    """serve-mock's settings: the mock engine's, plus what only the HTTP server does."""

    reasoning_tokens: int = Field(
        0, ge=0, description="the first N output tokens of a chat reply are thinking (a reasoning model)"
    )
    reasoning_field: Literal["reasoning_content", "reasoning"] = Field(
        "reasoning_content", description="the delta field thinking streams in (newer vLLM: reasoning)"
    )
    request_log: str | None = Field(None, description="append each request received (route, body) as a JSON line")


def reasoning_count(settings: ServeMockSettings, body: dict[str, Any], chat: bool, n_tokens: int) -> int:
    """How many of a reply's first tokens are thinking: none on the completions route or when the request
    turns thinking off (``chat_template_kwargs.enable_thinking`` false), else ``reasoning_tokens`` (at most all)."""
    if not chat or not settings.reasoning_tokens:
        return 0
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
        return 0
    return min(settings.reasoning_tokens, n_tokens)


class _SpecDecodeCollector:
    def __init__(self, sim: MockSimulator, model: str) -> None:
        self.sim, self.model = sim, model

    def collect(self) -> Iterator[CounterMetricFamily]:
        snap = self.sim.snapshot()
        labels = ["model_name", "engine"]
        base = [self.model, "0"]
        for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
            c = CounterMetricFamily(f"vllm:spec_decode_{name}", f"mock {name}", labels=labels)
            c.add_metric(base, snap[name])
            yield c
        c = CounterMetricFamily(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "mock accepted tokens per draft position",
            labels=labels + ["position"],
        )
        for pos, v in snap["per_position"].items():
            c.add_metric(base + [pos], v)
        yield c


def vllm_sd_metrics(sd: SDStats, k: int) -> dict[str, Any]:
    return {
        "num_spec_steps": sd.steps,
        "num_draft_tokens": sd.drafted,
        "num_accepted_draft_tokens": sd.accepted,
        "mean_acceptance_length": 1.0 + sd.accepted / sd.steps if sd.steps else None,
        "draft_acceptance_rate": sd.accepted / sd.drafted if sd.drafted else None,
        "acceptance_histogram": list(sd.histogram),
        "num_accepted_tokens_per_pos": list(sd.per_position),
        "num_spec_tokens": k,
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Stream:
    """One streaming reply being sent by the StepClock."""

    __slots__ = (
        "resp",
        "request",
        "plan",
        "head",
        "chat",
        "arrival",
        "tail",
        "combined",
        "i",
        "done",
        "cancelled",
        "n_reasoning",
        "reasoning_field",
        "starts",
    )

    def __init__(
        self,
        resp: web.StreamResponse,
        request: web.Request,
        plan: Any,
        head: bytes,
        chat: bool,
        arrival: float,
        tail: bytes,
        combined: bool,
        n_reasoning: int = 0,
        reasoning_field: str = "reasoning_content",
    ) -> None:
        self.resp, self.request, self.plan, self.head, self.chat = resp, request, plan, head, chat
        self.arrival, self.tail, self.combined = arrival, tail, combined
        self.i = 0
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.cancelled = False
        self.n_reasoning, self.reasoning_field = n_reasoning, reasoning_field
        self.starts: list[int] = []  # each chunk's first token's position in the reply (with a reasoning phase)
        if n_reasoning:
            pos = 0
            for c in plan.chunks:
                self.starts.append(pos)
                pos += len(c)

    def chunk_bytes(self, i: int) -> bytes:
        ids = self.plan.chunks[i]
        last = i == len(self.plan.chunks) - 1
        # token texts are plain ASCII: no JSON escaping needed
        if self.n_reasoning and self.starts[i] < self.n_reasoning:
            cut = self.n_reasoning - self.starts[i]  # this chunk's thinking tokens; the rest is answer
            thought = "".join(token_text(t) for t in ids[:cut])
            answer = "".join(token_text(t) for t in ids[cut:])
            fields = f'"{self.reasoning_field}":"{thought}"' + (f',"content":"{answer}"' if answer else "")
            body = '"delta":{' + fields + "}"
        else:
            text = "".join(token_text(t) for t in ids)
            body = ('"delta":{"content":"%s"}' if self.chat else '"text":"%s"') % text
        fin = '"length"' if last else "null"
        joined = ",".join(map(str, ids))
        out = f'{body},"finish_reason":{fin},"token_ids":[{joined}]}}]'
        if last and self.combined and self.tail:
            return self.head + out.encode() + b"," + self.tail + b"}\n\n"
        return self.head + out.encode() + b"}\n\n"


class StepClock:
    """One timer for every open stream, like an engine's batch step.

    It sleeps until the earliest due chunk, then writes every chunk that is due (chunk i of a
    stream is due at arrival + ttft_ms + i * step_ms), so the server's cost per chunk is one
    small write instead of a timer, a task wake-up and a JSON encode.
    """

    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.heap: list[tuple[float, int, _Stream]] = []
        self.seq = 0
        self.waiter: asyncio.Future[None] | None = None
        self.next_due = float("inf")
        self.task: asyncio.Task[None] | None = None

    def due(self, s: _Stream) -> float:
        return s.arrival + s.plan.slow * (self.settings.ttft_ms + s.i * self.settings.step_ms) / 1000.0

    def add(self, s: _Stream) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        t = self.due(s)
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, s))
        if t < self.next_due and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = time.perf_counter()
            while self.heap and self.heap[0][0] <= now:
                _, _, s = heapq.heappop(self.heap)
                await self.step(s)
            self.waiter = loop.create_future()
            handle = None
            if self.heap:
                self.next_due = self.heap[0][0]
                handle = loop.call_later(max(0.0, self.next_due - time.perf_counter()), _wake, self.waiter)
            else:
                self.next_due = float("inf")
            await self.waiter
            if handle is not None:
                handle.cancel()

    async def step(self, s: _Stream) -> None:
        if s.cancelled or s.done.done():
            return
        plan = s.plan
        if plan.fault and s.i == plan.fault_after:
            if plan.fault == "malformed":
                await self._write(s, b'data: {"id": "broken", "choices": [\n\n')
            s.done.set_result(plan.fault)
            return
        if not await self._write(s, s.chunk_bytes(s.i)):
            return
        s.i += 1
        if s.i < len(plan.chunks):
            self.seq += 1
            heapq.heappush(self.heap, (self.due(s), self.seq, s))
            return
        if s.tail and not s.combined and not await self._write(s, s.tail):
            return
        if await self._write(s, b"data: [DONE]\n\n"):
            s.done.set_result("ok")

    @staticmethod
    async def _write(s: _Stream, data: bytes) -> bool:
        try:
            await s.resp.write(data)
            return True
        except (ConnectionError, RuntimeError) as e:  # the client went away
            if not s.done.done():
                s.done.set_exception(e)
            return False


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def create_app(settings: MockSettings) -> web.Application:
    """The server's app; plain ``MockSettings`` serve without a reasoning phase or request log."""
    server = (
        settings if isinstance(settings, ServeMockSettings) else ServeMockSettings.model_validate(settings.model_dump())
    )
    sim = MockSimulator(settings)
    clock = StepClock(settings)
    app = web.Application()
    app[SIM_KEY] = sim
    registry = CollectorRegistry()
    registry.register(_SpecDecodeCollector(sim, settings.model_name))

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": settings.model_name,
                        "object": "model",
                        "owned_by": "speedbench-mock",
                        "max_model_len": 1 << 20,
                    }
                ],
            }
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
        arrival = time.perf_counter()
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        if server.request_log:
            with open(server.request_log, "a", encoding="utf-8") as log:
                log.write(json.dumps({"route": request.path, "body": body}) + "\n")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return web.json_response({"error": {"message": "messages must be a list"}}, status=400)
            key = prompt_key(messages)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return web.json_response({"error": {"message": "prompt must be a string"}}, status=400)
            key = prompt_key(prompt)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        plan = sim.plan(key, max_tokens)
        k = settings.k
        if plan.fault == "500":
            return web.json_response({"error": {"message": "mock injected internal error", "code": 500}}, status=500)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:16]
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())
        n_tokens = sum(len(c) for c in plan.chunks)
        n_reasoning = reasoning_count(server, body, chat, n_tokens)
        usage = {
            "prompt_tokens": len(key) // 8,
            "completion_tokens": n_tokens,
            "total_tokens": len(key) // 8 + n_tokens,
        }
        sd_payload = {"speculative_decoding": vllm_sd_metrics(plan.sd, k)} if settings.per_request_stats else None

        if not body.get("stream"):
            await sleep_until(
                arrival + plan.slow * (settings.ttft_ms + (len(plan.chunks) - 1) * settings.step_ms) / 1000
            )
            sim.account(plan.sd)
            all_ids = [t for c in plan.chunks for t in c]
            text = "".join(token_text(t) for t in all_ids[n_reasoning:])
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "token_ids": all_ids}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
                if n_reasoning:
                    choice["message"][server.reasoning_field] = "".join(token_text(t) for t in all_ids[:n_reasoning])
            else:
                choice["text"] = text
            out: dict[str, Any] = {
                "id": rid,
                "object": obj.replace(".chunk", ""),
                "created": created,
                "model": settings.model_name,
                "choices": [choice],
                "usage": usage,
            }
            if sd_payload:
                out["metrics"] = sd_payload
            return web.json_response(out)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        model = json.dumps(settings.model_name)
        head = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{model},"choices":[{{"index":0,'
        ).encode()
        if chat:
            await resp.write(head + b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n')
        tail = b""
        if include_usage:
            final: dict[str, Any] = {"usage": usage}
            if sd_payload:
                final["metrics"] = sd_payload
            extra = json.dumps(final, separators=(",", ":"))[1:-1].encode()
            if settings.stream_end == "combined":
                tail = extra  # merged into the last content chunk
            else:
                tail_chunk = {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": settings.model_name,
                    "choices": [],
                    **final,
                }
                tail = _sse(tail_chunk)
        stream = _Stream(
            resp,
            request,
            plan,
            head,
            chat,
            arrival,
            tail,
            settings.stream_end == "combined",
            n_reasoning,
            server.reasoning_field,
        )
        clock.add(stream)
        try:
            outcome = await stream.done
        except asyncio.CancelledError:
            stream.cancelled = True
            sim.account(partial_stats(plan.chunks[: stream.i], k))
            raise
        except (ConnectionError, RuntimeError):  # the client went away mid-stream
            sim.account(partial_stats(plan.chunks[: stream.i], k))
            return resp
        if outcome == "ok":
            sim.account(plan.sd)
            await resp.write_eof()
            return resp
        # injected faults: the steps streamed so far did happen on the "engine"
        sim.account(partial_stats(plan.chunks[: plan.fault_after], k))
        if outcome == "malformed":
            await resp.write_eof()
            return resp
        if outcome == "stall":
            await asyncio.sleep(settings.stall_s)
        if request.transport is not None:  # reset (or a stall that outlived stall_s)
            request.transport.abort()
        return resp

    async def chat_route(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=True)

    async def completions_route(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=False)

    app.add_routes(
        [
            web.get("/health", health),
            web.get("/v1/models", models),
            web.get("/metrics", metrics),
            web.post("/v1/chat/completions", chat_route),
            web.post("/v1/completions", completions_route),
        ]
    )
    return app


async def serve(
    settings: MockSettings, host: str = "127.0.0.1", port: int = 8000, ready: asyncio.Event | None = None
) -> None:
    """Run the server until cancelled; prints the bound URL (port 0 picks a free port)."""
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    thinking = (
        f", reasoning_tokens={settings.reasoning_tokens} in {settings.reasoning_field}"
        if isinstance(settings, ServeMockSettings) and settings.reasoning_tokens
        else ""
    )
    print(
        f"speedbench mock server listening on http://{host}:{bound}/v1 (k={settings.k}, "
        f"acceptance={settings.acceptance}, ttft_ms={settings.ttft_ms}, step_ms={settings.step_ms}{thinking})",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
