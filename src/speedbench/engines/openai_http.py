"""The shared OpenAI-compatible streaming client (``--engine openai``).

One aiohttp session per run.  Engine adapters for vLLM, SGLang, TensorRT-LLM and llama.cpp
subclass OpenAIEngine and override only ``payload`` (request body extras) and
``parse_sd`` (their per-request SD stats), plus ``counter_prefix`` for /metrics.

Token counting: a chunk's tokens are ``len(choice.token_ids)`` when the server returns token
ids (vLLM's ``return_token_ids``); otherwise a chunk with text counts as one token and the
record is marked ``chunk_tokens_exact=False`` unless the server's usage total confirms it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from speedbench.engines.base import Capabilities, Request
from speedbench.engines.errors import EngineStartError
from speedbench.engines.prometheus import parse_sd_counters
from speedbench.records import Event, RequestError, SDStats, per_position_from_histogram

json_loads = orjson.loads
JSON_HEADERS = {"Content-Type": "application/json"}


def _int(d: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = d.get(k)
        if v is not None:
            return int(v)
    return None


def parse_vllm_sd(m: dict[str, Any] | None, k: int | None) -> SDStats | None:
    """vLLM's per-request ``metrics.speculative_decoding`` -> SDStats (source per_request)."""
    if not m:
        return None
    steps = _int(m, "num_spec_steps", "num_drafts")
    drafted = _int(m, "num_draft_tokens")
    accepted = _int(m, "num_accepted_draft_tokens", "num_accepted_tokens")
    if steps is None or drafted is None or accepted is None:
        return None
    raw_hist = m.get("acceptance_histogram") or []
    if isinstance(raw_hist, dict):
        size = max(int(x) for x in raw_hist) + 1 if raw_hist else 0
        hist = [0] * size
        for key, v in raw_hist.items():
            hist[int(key)] = int(v)
    else:
        hist = [int(v) for v in raw_hist]
    per_pos = [int(v) for v in m.get("num_accepted_tokens_per_pos") or []]
    if not per_pos and hist:
        per_pos = per_position_from_histogram(hist)
    return SDStats(drafted=drafted, accepted=accepted, steps=steps, per_position=per_pos,
                   histogram=hist, source="per_request")


def _json_or_str(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def render_completion_prompt(messages: list[dict[str, str]]) -> str:
    """A plain transcript for the completions endpoint (used identically for baseline and SD runs)."""
    parts = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


class OpenAIEngine:
    name = "openai"
    counter_prefix = "vllm:spec_decode_"
    # what the client can read when the server offers it (vLLM does all of these)
    capabilities = Capabilities(per_request_sd_stats=True, counters=True, chunks_are_steps=True, token_ids=True)
    # idle pooled connections are dropped after this; keep it below the server's own keep-alive timeout
    # (llama-server closes idle connections after 5 s) so a request never goes out on a closing socket
    keepalive_timeout_s = 15.0
    # False: a new connection per request (llama-server closes kept-alive connections under aiohttp's feet)
    reuse_connections = True

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        metrics_url: str | None = None,
        endpoint: str = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        options: dict[str, str] | None = None,
        draft_length: int | None = None,
        **_: Any,
    ) -> None:
        if not base_url:
            raise EngineStartError("engine 'openai' needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        self.base_url = base_url.rstrip("/")
        self.model = model
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.metrics_url = metrics_url or f"{root}/metrics"
        self.endpoint = endpoint
        self.api_key = os.environ.get(api_key_env) or None
        self.options = dict(options or {})
        self.draft_length = draft_length
        self.chunks_are_steps = self.options.pop("chunks_are_steps", "true").lower() in ("1", "true", "yes")
        # every other -E key=value goes into the request body (JSON values parsed: -E top_p=0.9)
        self.body_extra = {k: _json_or_str(v) for k, v in self.options.items()}
        self.capabilities = dataclasses.replace(type(self).capabilities, chunks_are_steps=self.chunks_are_steps)
        self._session: aiohttp.ClientSession | None = None
        self.counter_error: str | None = None
        self.server_version: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        conn = (aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=self.keepalive_timeout_s)
                if self.reuse_connections else aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True))
        self._session = aiohttp.ClientSession(connector=conn, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
        url = f"{self.base_url}/models"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                if r.status != 200:
                    text = (await r.text())[:200]
                    raise EngineStartError(f"{url} answered HTTP {r.status}: {text!r}; check --base-url and the API key")
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            await self.close()
            raise EngineStartError(f"cannot reach {url} ({type(e).__name__}: {e}); is the server running? "
                                   "check --base-url") from None
        self.server_version = await self._server_version()
        if self.model is None:
            try:
                self.model = data["data"][0]["id"]
            except (KeyError, IndexError, TypeError):
                await self.close()
                raise EngineStartError(f"{url} lists no model; pass --model") from None

    async def _server_version(self) -> str | None:
        """vLLM and SGLang answer GET /version; others may not (then None)."""
        assert self._session is not None
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        try:
            async with self._session.get(f"{root}/version", timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    return (await r.text())[:200]
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "base_url": self.base_url, "model": self.model,
                "metrics_url": self.metrics_url, "endpoint": self.endpoint, "server_version": self.server_version,
                "chunks_are_steps": self.chunks_are_steps, "options": self.options}

    # ---- hooks for adapters ----------------------------------------------------------------
    def payload(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.capabilities.token_ids:   # vLLM's extension; servers without it do not get it
            body["return_token_ids"] = True
        if request.ignore_eos:
            body["ignore_eos"] = True
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(self.body_extra)
        if self.endpoint == "chat":
            body["messages"] = request.messages
        else:
            body["prompt"] = render_completion_prompt(request.messages)
        return body

    def parse_sd(self, obj: dict[str, Any], state: dict[str, Any]) -> SDStats | None:
        """One SSE object -> the request's SD stats when it carries them.  ``state`` is a dict private
        to this request (adapters keep running values there, e.g. TRT-LLM's per-chunk average)."""
        metrics = obj.get("metrics")
        if isinstance(metrics, dict):
            return parse_vllm_sd(metrics.get("speculative_decoding"), self.draft_length)
        return None

    def parse_counters(self, text: str) -> dict[str, Any] | None:
        """A /metrics page -> counter snapshot (metrics/counters.py shape), or None without SD counters."""
        return parse_sd_counters(text, self.counter_prefix)

    def finish_sd(self, sd: SDStats | None, completion_tokens: int, state: dict[str, Any]) -> SDStats | None:
        """Complete the engine's per-request stats once the stream ended (llama.cpp infers steps here).
        ``completion_tokens``: the server's usage count, else the tokens the stream carried."""
        return sd

    async def _post(self, url: str, body: bytes) -> aiohttp.ClientResponse:
        """POST, retried once when a pooled keep-alive connection turns out closed before the server
        answered (the server never saw the request, so the retry cannot double-count it)."""
        assert self._session is not None
        try:
            return await self._session.post(url, data=body, headers=JSON_HEADERS)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):   # could not connect at all: no retry
                raise
            return await self._session.post(url, data=body, headers=JSON_HEADERS)

    # ---- streaming -------------------------------------------------------------------------
    async def stream(self, request: Request) -> AsyncIterator[Event]:
        assert self._session is not None, "start() first"
        url = f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        usage: dict[str, Any] | None = None
        sd: SDStats | None = None
        finish: str | None = None
        done = False
        tokens_seen = 0
        state: dict[str, Any] = {}
        try:
            body = orjson.dumps(self.payload(request))
            async with await self._post(url, body) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    raise RequestError(f"http_{resp.status}", text)
                buf = b""
                async for data in resp.content.iter_any():
                    # split what arrived into lines; a partial last line waits for the next read
                    lines = (buf + data).split(b"\n")
                    buf = lines.pop()
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue  # blank separators, comments, event:/id:/retry: fields
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            done = True
                            break
                        try:
                            obj = json_loads(payload)
                        except ValueError as e:
                            raise RequestError("malformed_stream", f"bad SSE data ({e}): {payload[:120]!r}") from None
                        if not isinstance(obj, dict):
                            raise RequestError("malformed_stream", f"SSE data is not an object: {payload[:120]!r}")
                        if "error" in obj:
                            raise RequestError("server_error", str(obj["error"])[:300])
                        if obj.get("usage"):
                            usage = obj["usage"]
                        got_sd = self.parse_sd(obj, state)
                        if got_sd is not None:
                            sd = got_sd
                        for choice in obj.get("choices") or ():
                            delta = choice.get("delta")
                            text = ((delta.get("content") or "") if isinstance(delta, dict)
                                    else (choice.get("text") or ""))
                            ids = choice.get("token_ids")
                            n = len(ids) if ids is not None else (1 if text else 0)
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                            if n:
                                tokens_seen += n
                                yield Event("chunk", n_tokens=n, text=text, token_ids=ids)
                    if done:
                        break
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionResetError) as e:
            raise RequestError("reset", f"{type(e).__name__}: {e}") from None
        except aiohttp.ClientConnectorError as e:
            raise RequestError("connect_error", f"{url}: {e}") from None
        except aiohttp.ClientError as e:
            raise RequestError("client_error", f"{type(e).__name__}: {e}") from None
        if not done and finish is None:
            raise RequestError("reset", "stream ended without [DONE] or finish_reason")
        n_tokens = int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") is not None \
            else tokens_seen
        yield Event("final", finish_reason=finish, usage=usage, sd=self.finish_sd(sd, n_tokens, state))

    async def counters(self) -> dict[str, Any] | None:
        if self._session is None:
            return None
        try:
            async with self._session.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                if r.status != 200:
                    self.counter_error = f"{self.metrics_url}: HTTP {r.status}"
                    return None
                text = await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            self.counter_error = f"{self.metrics_url}: {type(e).__name__}: {e}"
            return None
        except (UnicodeDecodeError, ValueError) as e:
            self.counter_error = f"{self.metrics_url}: unreadable body ({e})"
            return None
        try:
            snap = self.parse_counters(text)
        except ValueError as e:  # 200 but not Prometheus text (an HTML page, say)
            self.counter_error = f"{self.metrics_url}: not Prometheus text ({e})"
            return None
        if snap is None:
            self.counter_error = f"{self.metrics_url}: no {self.counter_prefix}* counters (SD off?)"
        return snap
