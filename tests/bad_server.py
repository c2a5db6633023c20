"""A small misbehaving OpenAI-style server for tests: each misbehaviour under its own path prefix.

``http://127.0.0.1:PORT/MODE/v1`` is a base URL whose server does MODE:

- ``models-html``: ``/v1/models`` answers 200 with an HTML page
- ``chat-html``: completions answer 200 ``text/html`` (a proxy's error page)
- ``chat-json``: completions answer 200 with a non-streaming ``application/json`` completion
- ``shape-choices``: SSE whose chunk has ``"choices": "x"`` (not a list)
- ``shape-token-ids``: SSE whose choice has ``"token_ids": 5`` (not a list)
- ``wrong-model``: ``/v1/models`` lists ``a`` and ``b``; completions answer 404 for any other model (as vLLM does)
- ``ok``: a well-formed stream

Every other mode's ``/v1/models`` lists the model ``m``.  ``/MODE/version`` and ``/MODE/metrics`` answer 404.
Run in a background thread of the test process (``running_server``)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

HTML = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
MODEL = "m"


def _sse(*objs: object) -> bytes:
    return b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) + b"data: [DONE]\n\n"


def _chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {
        "id": "x",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


async def _stream(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(body)
    await resp.write_eof()
    return resp


async def models(request: web.Request) -> web.Response:
    mode = request.match_info["mode"]
    if mode == "models-html":
        return web.Response(text=HTML, content_type="text/html")
    ids = ["a", "b"] if mode == "wrong-model" else [MODEL]
    return web.json_response({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})


async def completions(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    body = await request.json()
    if mode == "chat-html":
        return web.Response(text=HTML, content_type="text/html")
    if mode == "chat-json":
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )
    if mode == "wrong-model" and body.get("model") not in ("a", "b"):
        msg = f"The model `{body.get('model')}` does not exist."
        return web.json_response({"object": "error", "message": msg, "code": 404}, status=404)
    if mode == "shape-choices":
        return await _stream(request, _sse({"id": "x", "choices": "x"}))
    if mode == "shape-token-ids":
        bad = {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}, "token_ids": 5, "finish_reason": None}]}
        return await _stream(request, _sse(bad))
    return await _stream(request, _sse(_chunk("hello"), _chunk(" world", "stop")))


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{mode}/v1/models", models)
    app.router.add_post("/{mode}/v1/chat/completions", completions)
    app.router.add_post("/{mode}/v1/completions", completions)
    return app


@contextmanager
def running_server() -> Iterator[str]:
    """The server on a free port in a background thread; yields ``http://127.0.0.1:PORT``."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app())
    started = threading.Event()
    port: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def setup() -> None:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port.append(runner.addresses[0][1])

        loop.run_until_complete(setup())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("bad_server did not start")
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


if __name__ == "__main__":  # python tests/bad_server.py: serve until interrupted, print the root URL
    import time

    with running_server() as root:
        print(root, flush=True)
        while True:
            time.sleep(3600)
