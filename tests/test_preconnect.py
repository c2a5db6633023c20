"""Connections opened before the measured window (``OpenAIEngine.preconnect``, called by ``run_load``): a
first-wave request starts on a kept-alive connection, as a later wave's does, so that its TTFT holds no TCP
connect.  Checked by the server's own view of each request's client port."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from speedbench.config import EngineSpec
from speedbench.data.sample import Sample
from speedbench.engines.llamacpp import LlamaCppEngine
from speedbench.engines.openai import OpenAIEngine
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import LoadSettings

PORTS = web.AppKey("ports", list)


async def _models(request: web.Request) -> web.Response:
    request.app[PORTS].append(("GET", request.transport.get_extra_info("peername")[1]))
    return web.json_response({"data": [{"id": "m"}]})


async def _chat(request: web.Request) -> web.StreamResponse:
    request.app[PORTS].append(("POST", request.transport.get_extra_info("peername")[1]))
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await asyncio.sleep(0.05)  # every request of a wave is in flight at once
    for i, finish in ((0, None), (1, "length")):
        chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i}"}, "finish_reason": finish, "token_ids": [i]}]}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _samples(n: int) -> list[Sample]:
    return [
        Sample(
            question_id=f"q{i}",
            category="qa",
            sub_category=None,
            turns=("hello",),
            source=None,
            src_id=None,
            difficulty=None,
            multiturn=False,
        )
        for i in range(n)
    ]


async def _run(settings: LoadSettings, n_samples: int) -> tuple[list[tuple[str, int]], int, int]:
    app = web.Application()
    app[PORTS] = []
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    eng = OpenAIEngine(EngineSpec(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m"))
    try:
        await eng.start()
        records: list = []
        result = await run_load(eng, _samples(n_samples), settings, on_record=records.append)
        assert len(records) == n_samples and all(r.ok for r in records)
        assert result.arrivals is not None
        return app[PORTS], result.arrivals.preconnected, result.arrivals.to_dict()["preconnected"]
    finally:
        await eng.close()
        await runner.cleanup()


def test_the_first_wave_starts_on_connections_opened_before_the_window():
    seen, preconnected, in_manifest = asyncio.run(_run(LoadSettings(concurrency=4, output_len=2, warmup=0), 8))
    assert preconnected == in_manifest == 4
    gets = [p for kind, p in seen if kind == "GET"]
    posts = [p for kind, p in seen if kind == "POST"]
    # start() asks /models once; then 4 at once, each on its own connection
    assert len(gets) == 5 and len(set(gets[1:])) == 4
    assert len(posts) == 8
    # every request, the first wave's included, went out on a connection the pre-connect had opened
    assert set(posts) <= set(gets[1:])


def test_no_more_connections_than_conversations_and_none_for_an_uncapped_open_loop():
    seen, preconnected, _ = asyncio.run(_run(LoadSettings(concurrency=8, output_len=2, warmup=0), 3))
    assert preconnected == 3 and len([1 for kind, _ in seen if kind == "GET"]) == 1 + 3
    # open loop without a cap: how many are in flight at once is not known in advance, nothing is opened
    seen, preconnected, _ = asyncio.run(
        _run(LoadSettings(concurrency=8, output_len=2, warmup=0, request_rate=200.0), 3)
    )
    assert preconnected == 0 and len([1 for kind, _ in seen if kind == "GET"]) == 1


def test_an_engine_that_does_not_reuse_connections_opens_none():
    eng = LlamaCppEngine(EngineSpec(kind="llamacpp", base_url="http://127.0.0.1:9/v1", model="m"))
    assert eng.reuse_connections is False
    assert asyncio.run(eng.preconnect(8)) == 0
