"""``speedbench serve-mock``: the mock SD engine behind a real OpenAI-compatible HTTP server.

Routes: POST /v1/completions, POST /v1/chat/completions (SSE streaming with
stream_options.include_usage, or plain JSON), GET /v1/models, GET /health, GET /metrics
(vLLM's spec-decode counter names).  Each verification step is one SSE chunk carrying its
1..k+1 tokens (``token_ids`` per choice, as vLLM's return_token_ids gives); the per-request SD
stats go in the final chunk as ``metrics.speculative_decoding`` (vLLM's shape).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from speedbench.engines.mock import (
    MockSettings, MockSimulator, partial_stats, prompt_key, sleep_until, token_text,
)
from speedbench.records import SDStats

SIM_KEY = web.AppKey("sim", MockSimulator)


class _SpecDecodeCollector:
    def __init__(self, sim: MockSimulator, model: str) -> None:
        self.sim, self.model = sim, model

    def collect(self) -> Iterator[CounterMetricFamily]:
        t = self.sim.totals
        labels = ["model_name", "engine"]
        base = [self.model, "0"]
        for name, key in (("num_drafts", "num_drafts"), ("num_draft_tokens", "num_draft_tokens"),
                          ("num_accepted_tokens", "num_accepted_tokens")):
            c = CounterMetricFamily(f"vllm:spec_decode_{name}", f"mock {name}", labels=labels)
            c.add_metric(base, float(t[key]))
            yield c
        c = CounterMetricFamily("vllm:spec_decode_num_accepted_tokens_per_pos",
                                "mock accepted tokens per draft position", labels=labels + ["position"])
        for pos, v in sorted(t["per_position"].items(), key=lambda kv: int(kv[0])):
            c.add_metric(base + [pos], float(v))
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


def create_app(settings: MockSettings) -> web.Application:
    sim = MockSimulator(settings)
    app = web.Application()
    app[SIM_KEY] = sim
    registry = CollectorRegistry()
    registry.register(_SpecDecodeCollector(sim, settings.model_name))  # type: ignore[arg-type]

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": settings.model_name, "object": "model", "owned_by": "speedbench-mock",
             "max_model_len": 1 << 20}]})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
        arrival = time.perf_counter()
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
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
            return web.json_response({"error": {"message": "mock injected internal error", "code": 500}},
                                     status=500)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:16]
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())
        n_tokens = sum(len(c) for c in plan.chunks)
        usage = {"prompt_tokens": len(key) // 8, "completion_tokens": n_tokens,
                 "total_tokens": len(key) // 8 + n_tokens}
        sd_payload = ({"speculative_decoding": vllm_sd_metrics(plan.sd, k)}
                      if settings.per_request_stats else None)

        if not body.get("stream"):
            await sleep_until(arrival + (settings.ttft_ms + (len(plan.chunks) - 1) * settings.step_ms) / 1000)
            sim.account(plan.sd)
            text = "".join(token_text(t) for c in plan.chunks for t in c)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length",
                                      "token_ids": [t for c in plan.chunks for t in c]}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            out: dict[str, Any] = {"id": rid, "object": obj.replace(".chunk", ""), "created": created,
                                   "model": settings.model_name, "choices": [choice], "usage": usage}
            if sd_payload:
                out["metrics"] = sd_payload
            return web.json_response(out)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        def chunk(ids: list[int] | None, finish: str | None, role: bool = False) -> dict[str, Any]:
            text = "".join(token_text(t) for t in ids) if ids else ""
            c: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                c["delta"] = {"role": "assistant", "content": ""} if role else {"content": text}
            else:
                c["text"] = text
            if ids is not None:
                c["token_ids"] = ids
            return {"id": rid, "object": obj, "created": created, "model": settings.model_name, "choices": [c]}

        if chat:
            await resp.write(_sse(chunk(None, None, role=True)))
        last = len(plan.chunks) - 1
        for i, ids in enumerate(plan.chunks):
            if plan.fault and i == plan.fault_after:
                sim.account(partial_stats(plan.chunks[:i], k))
                if plan.fault == "stall":
                    await asyncio.sleep(settings.stall_s)
                elif plan.fault == "malformed":
                    await resp.write(b'data: {"id": "broken", "choices": [\n\n')
                    await resp.write_eof()
                    return resp
                # reset (or a stall that outlived stall_s): drop the connection mid-stream
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await sleep_until(arrival + (settings.ttft_ms + i * settings.step_ms) / 1000)
            c = chunk(ids, "length" if i == last else None)
            if i == last and include_usage and settings.stream_end == "combined":
                c["usage"] = usage
                if sd_payload:
                    c["metrics"] = sd_payload
            await resp.write(_sse(c))
        sim.account(plan.sd)
        if include_usage and settings.stream_end == "separate":
            final: dict[str, Any] = {"id": rid, "object": obj, "created": created,
                                     "model": settings.model_name, "choices": [], "usage": usage}
            if sd_payload:
                final["metrics"] = sd_payload
            await resp.write(_sse(final))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def chat_route(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=True)

    async def completions_route(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=False)

    app.add_routes([
        web.get("/health", health),
        web.get("/v1/models", models),
        web.get("/metrics", metrics),
        web.post("/v1/chat/completions", chat_route),
        web.post("/v1/completions", completions_route),
    ])
    return app


async def serve(settings: MockSettings, host: str = "127.0.0.1", port: int = 8000,
                ready: "asyncio.Event | None" = None) -> None:
    """Run the server until cancelled; prints the bound URL (port 0 picks a free port)."""
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"speedbench mock server listening on http://{host}:{bound}/v1 (k={settings.k}, "
          f"acceptance={settings.acceptance}, ttft_ms={settings.ttft_ms}, step_ms={settings.step_ms})",
          flush=True)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
