"""The shared OpenAI-compatible streaming client: what every OpenAI-compatible server shares.

One aiohttp session per started engine (one run, or several in a row).  Every HTTP engine subclasses
``OpenAIClient`` (``--engine openai`` and vLLM through vLLM's dialect, engines/vllm.py; SGLang, TensorRT-LLM and
llama.cpp through ``LaunchedEngine``) and overrides only the hooks: ``payload`` (request body extras),
``parse_sd`` / ``finish_sd`` (their per-request SD stats, with a per-request ``state`` dict), ``parse_counters``,
``counter_prefix`` / ``metrics_path`` for /metrics, ``token_ids_field``.  The client itself reads no engine's
SD figures: a server's stream gives its chunks, text, usage and finish reason, and SD stats only through a hook.

Options (``-E``, typed in ``OpenAIOptions``): ``chunks_are_steps`` (the engine's declared value), ``api_token``
(the API key itself instead of ``$OPENAI_API_KEY``; redacted in the run directory), ``enable_thinking`` (sent as
``chat_template_kwargs.enable_thinking``, merged with an explicit ``body.chat_template_kwargs``; a contradiction is
refused), and ``body.FIELD=VALUE`` for a field passed verbatim into every request body (JSON values parsed:
``-E body.top_p=0.9``).  ``--sd`` is a label of what the server runs, recorded as declared and not verified.

Secrets: a URL with ``user:password@`` is requested as written (aiohttp sends basic auth) and without the bearer
key (HTTP has one Authorization header); URLs in messages (start errors, request error details,
``counter_error``) have their userinfo redacted, and ``secrets`` (the key, URL passwords) lets the sinks that write
or print scrub their values (config.Secrets).

Token counting: a chunk's tokens are ``len(choice.token_ids)`` when the server returns token
ids (asked for with ``token_ids_field`` when the engine declares ``token_ids``: vLLM's ``return_token_ids``);
otherwise a chunk with text counts as one token and the record is marked ``chunk_tokens_exact=False`` unless the
server's usage total confirms it.

Reasoning models: a chat delta's thinking (``delta.reasoning``, newer vLLM; ``delta.reasoning_content``, SGLang and
older vLLM; one of them when both come) is output like ``content``: counted and timed by the same rule, yielded as
the chunk's ``reasoning_text``.  A delta with thinking and answer both is one chunk (one arrival, one step).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import orjson

from speedbench.config import REDACTED, EngineSpec, engine_secrets, has_userinfo, redact_urls
from speedbench.engines.base import Capabilities, EngineBase, Request, check_sd
from speedbench.engines.errors import EngineStartError
from speedbench.engines.options import EngineOptions, parse_options, split_body, with_thinking
from speedbench.engines.prometheus import parse_sd_counters
from speedbench.errors import InvalidInput
from speedbench.prompts import render_completion_prompt
from speedbench.records import Event, RequestError, SDStats

json_loads = orjson.loads
JSON_HEADERS = {"Content-Type": "application/json"}


class Chunk(NamedTuple):
    """One choice's output in one SSE object: its token count, answer text, thinking text, token ids."""

    n_tokens: int
    text: str
    reasoning: str
    token_ids: list[int] | None


REASONING_FIELDS = ("reasoning", "reasoning_content")  # newer vLLM's name first; SGLang and older vLLM: the second


def _reasoning(delta: dict[str, Any]) -> str:
    """A chat delta's thinking text: ``reasoning`` (newer vLLM), else ``reasoning_content`` (SGLang, older vLLM).
    A server that sends both sends the same text under both names (vLLM while it renamed the field), so
    the first non-empty one is taken, never both."""
    for key in REASONING_FIELDS:
        v = delta.get(key)
        if v is None:
            continue
        if not isinstance(v, str):
            raise TypeError(f"{key} is {type(v).__name__}, not a string")
        if v:
            return v
    return ""


def root_url(base_url: str) -> str:
    """The server's root for an OpenAI base URL: ``http://h:p/v1`` -> ``http://h:p`` (/metrics, /health, /version)."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")


class OpenAIOptions(EngineOptions):
    """``-E`` options of the OpenAI client (and of every server adapter built on it)."""

    chunks_are_steps: bool | None = None  # None: as the engine declares; false: a chunk is a token, not a step
    api_token: str | None = None  # the API key itself (else $OPENAI_API_KEY); never written unredacted
    # thinking on/off for chat templates that take it: chat_template_kwargs.enable_thinking; None sends nothing
    enable_thinking: bool | None = None


class OpenAIClient(EngineBase):
    """The streaming client every HTTP engine is built on; a subclass names itself and its ``capabilities``."""

    name: str
    capabilities: Capabilities
    counter_prefix: str | None = None  # the /metrics SD counter family in vLLM's shape (prometheus.py); None: none
    metrics_path = "/metrics"  # default --metrics-url under the server's root
    token_ids_field: str | None = None  # the request field asking for token ids, sent when capabilities.token_ids
    Options: type[OpenAIOptions] = OpenAIOptions
    # idle pooled connections are dropped after this; keep it below the server's own keep-alive timeout
    # (llama-server closes idle connections after 5 s) so a request never goes out on a closing socket
    keepalive_timeout_s = 15.0
    # False: a new connection per request (llama-server closes kept-alive connections under aiohttp's feet)
    reuse_connections = True
    opts: OpenAIOptions

    def __init__(self, spec: EngineSpec) -> None:
        # a server speedbench launched serves what it was told (llama-server lists its model path and accepts any
        # name), so --model is checked against /v1/models only for attached servers
        self.launch = spec.launch
        own, self.body_extra = split_body(spec.options)  # -E body.FIELD=VALUE: into every request body
        self.options = own
        self.opts = parse_options(type(self).Options, self.name, own, body=True)
        self.sd = check_sd(self.name, type(self).capabilities, spec.sd)
        self.k = 3 if spec.draft_length is None else spec.draft_length
        # -E chunks_are_steps=false changes what the chunks mean: computed once, for this instance
        declared = type(self).capabilities
        steps = declared.chunks_are_steps if self.opts.chunks_are_steps is None else self.opts.chunks_are_steps
        self.capabilities = dataclasses.replace(declared, chunks_are_steps=steps)
        spec = self.server_spec(spec)
        if not spec.base_url:
            raise EngineStartError(f"engine {self.name!r} needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        self.base_url = spec.base_url.rstrip("/")
        self.model = spec.model
        self.metrics_url = spec.metrics_url or root_url(self.base_url) + self.metrics_path
        self.endpoint = spec.endpoint
        if self.opts.enable_thinking is not None:
            if self.endpoint != "chat":
                raise InvalidInput(
                    f"-E enable_thinking={str(self.opts.enable_thinking).lower()}: thinking is switched in the chat "
                    f"template, and --endpoint {self.endpoint} sends a plain prompt without one (use --endpoint chat)"
                )
            # sent as chat_template_kwargs.enable_thinking, merged with an explicit -E body.chat_template_kwargs
            self.body_extra = with_thinking(self.body_extra, self.opts.enable_thinking)
        # a resumed run reads its config back with secrets redacted: the key then comes from the environment
        token = self.opts.api_token if self.opts.api_token != REDACTED else None
        self.api_key = token or os.environ.get(spec.api_key_env) or None
        self.secrets = engine_secrets(spec, os.environ)
        self.send_seed = spec.request_seed
        self._session: aiohttp.ClientSession | None = None
        self.counter_error: str | None = None
        self.server_version: str | None = None

    def server_spec(self, spec: EngineSpec) -> EngineSpec:
        """Hook: the spec of the server to talk to (a launching adapter fills in the URL it will start)."""
        return spec

    # ---- lifecycle -------------------------------------------------------------------------
    def auth_headers(self, url: str) -> dict[str, str]:
        """The bearer key for a URL without credentials of its own (aiohttp sends a URL's ``user:pass@`` as
        basic auth, and a request has one Authorization header)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key and not has_userinfo(url) else {}

    async def start(self) -> None:
        conn = (
            aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=self.keepalive_timeout_s)
            if self.reuse_connections
            else aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True)
        )
        self._session = aiohttp.ClientSession(
            connector=conn, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)
        )
        try:
            await self._models()
            self.server_version = await self._server_version()
        except BaseException:
            await self.close()  # every failed start closes its session (no "Unclosed connector" at exit)
            raise

    async def _models(self) -> None:
        """GET /v1/models: its JSON, or EngineStartError (unreachable, an HTTP error, not JSON, a --model it
        does not serve).  Picks the first listed model when --model is not given."""
        assert self._session is not None
        url = f"{self.base_url}/models"
        shown = redact_urls(url)
        try:
            async with self._session.get(
                url, headers=self.auth_headers(url), timeout=aiohttp.ClientTimeout(total=30)
            ) as r:
                raw = await r.read()
                if r.status != 200:
                    text = raw[:200].decode(errors="replace")
                    raise EngineStartError(
                        redact_urls(f"{shown} answered HTTP {r.status}: {text!r}; check --base-url and the API key")
                    )
                content_type = r.headers.get("Content-Type", "none")
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EngineStartError(
                redact_urls(f"cannot reach {shown} ({type(e).__name__}: {e}); is the server running? check --base-url")
            ) from None
        try:
            data = json_loads(raw)
        except ValueError:
            raise EngineStartError(
                redact_urls(
                    f"{shown} did not answer JSON (Content-Type {content_type}, body starts {raw[:80]!r}); "
                    "is --base-url the server's OpenAI API (usually ending in /v1)?"
                )
            ) from None
        listed = data.get("data") if isinstance(data, dict) else None
        ids = (
            [m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
            if isinstance(listed, list)
            else []
        )
        if self.model is None:
            if not ids:
                raise EngineStartError(f"{shown} lists no model; pass --model")
            self.model = ids[0]
        elif ids and self.model not in ids and not self.launch:
            # a server speedbench launched was given this name itself (llama-server lists its model path
            # and accepts any name): only an attached server's list is held against --model
            raise EngineStartError(
                redact_urls(f"--model {self.model!r} is not served by {self.base_url} (it serves: {', '.join(ids)})")
            )

    async def preconnect(self, n: int) -> int:
        """Open ``n`` kept-alive connections before the measured window (``n`` GET /v1/models at once, each
        connection back in the pool when its answer is read), so that a first-wave request starts on an open
        connection as a later wave's does and its TTFT holds no TCP connect.  Returns how many answered 200;
        0 when this engine does not reuse connections.  A failure here is not the run's: the run opens what it
        lacks as it goes."""
        if not self.reuse_connections or n <= 0 or self._session is None:
            return 0
        session, url = self._session, f"{self.base_url}/models"
        headers = self.auth_headers(url)

        async def one() -> bool:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
                return r.status == 200

        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        return sum(1 for r in results if r is True)

    async def _server_version(self) -> str | None:
        """vLLM and SGLang answer GET /version; others may not (then None)."""
        assert self._session is not None
        try:
            url = f"{root_url(self.base_url)}/version"
            async with self._session.get(
                url, headers=self.auth_headers(url), timeout=aiohttp.ClientTimeout(total=5)
            ) as r:
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
        """``sd`` as declared (an attached server's SD is a label, not verified); ``k`` 0 with SD off."""
        return {
            "engine": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "metrics_url": self.metrics_url,
            "endpoint": self.endpoint,
            "server_version": self.server_version,
            "sd": self.sd,
            "k": 0 if self.sd == "none" else self.k,
            "chunks_are_steps": self.capabilities.chunks_are_steps,
            "options": self.options,
            "body": self.body_extra,
            "request_seed": self.send_seed,
        }

    # ---- hooks for adapters ----------------------------------------------------------------
    def payload(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.capabilities.token_ids and self.token_ids_field:  # an extension: servers without it do not get it
            body[self.token_ids_field] = True
        if request.ignore_eos:
            body["ignore_eos"] = True
        if self.send_seed:  # --request-seed: the request's derived sampling seed (load/seeds.py)
            body["seed"] = request.seed
        body.update(self.body_extra)
        body.update(request.extra_body)
        if self.endpoint == "chat":
            body["messages"] = request.messages
        else:
            body["prompt"] = render_completion_prompt(request.messages)
        return body

    def parse_sd(self, obj: dict[str, Any], state: dict[str, Any]) -> SDStats | None:
        """One SSE object -> the request's SD stats when it carries them (plain OpenAI carries none).  ``state``
        is a dict private to this request (adapters keep running values there, e.g. TRT-LLM's per-chunk average)."""
        return None

    def parse_counters(self, text: str) -> dict[str, Any] | None:
        """A /metrics page -> counter snapshot (metrics/counters.py shape), or None without SD counters."""
        return parse_sd_counters(text, self.counter_prefix) if self.counter_prefix else None

    def finish_sd(self, sd: SDStats | None, completion_tokens: int, state: dict[str, Any]) -> SDStats | None:
        """Complete the engine's per-request stats once the stream ended (llama.cpp infers steps here).
        ``completion_tokens``: the server's usage count, else the tokens the stream carried."""
        return sd

    async def _post(self, url: str, body: bytes) -> aiohttp.ClientResponse:
        """POST, retried once when a pooled keep-alive connection turns out closed before the server
        answered (the server never saw the request, so the retry cannot double-count it)."""
        assert self._session is not None
        headers = {**JSON_HEADERS, **self.auth_headers(url)}
        try:
            return await self._session.post(url, data=body, headers=headers)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):  # could not connect at all: no retry
                raise
            return await self._session.post(url, data=body, headers=headers)

    # ---- streaming -------------------------------------------------------------------------
    @staticmethod
    def _read_chunk(obj: dict[str, Any]) -> tuple[list[Chunk], str | None]:
        """One SSE object's choices -> ([Chunk] for choices that carry output, the last finish_reason);
        TypeError/AttributeError when the object is not shaped as a completion chunk.

        A chat delta's thinking (``reasoning``, else ``reasoning_content``) is output like its ``content``: a
        choice with either carries tokens, counted by the one rule (``len(token_ids)``, else 1 per chunk with
        text); a delta with both thinking and answer (the step that ended the thinking) is one chunk."""
        choices = obj.get("choices") or []
        if not isinstance(choices, list):
            raise TypeError(f"choices is {type(choices).__name__}, not a list")
        out: list[Chunk] = []
        finish: str | None = None
        for choice in choices:
            if not isinstance(choice, dict):
                raise TypeError(f"a choice is {type(choice).__name__}, not an object")
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content") or ""
                reasoning = _reasoning(delta)
            else:
                text, reasoning = choice.get("text") or "", ""
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}, not a string")
            ids = choice.get("token_ids")
            if ids is not None and not isinstance(ids, list):
                raise TypeError(f"token_ids is {type(ids).__name__}, not a list")
            n = len(ids) if ids is not None else (1 if text or reasoning else 0)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
            if n:
                out.append(Chunk(n, text, reasoning, ids))
        return out, finish

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
                if resp.content_type != "text/event-stream":
                    # a proxy's HTML page, or a non-streaming JSON completion: not the stream asked for
                    head = await resp.content.read(80)
                    content_type = resp.headers.get("Content-Type", "none")
                    raise RequestError(
                        "not_streaming",
                        f"HTTP 200 with Content-Type {content_type}, not text/event-stream; body starts {head!r}",
                    )
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
                        try:  # a chunk of the wrong shape is the server's fault, not the client's
                            chunks, got_finish = self._read_chunk(obj)
                            got_usage = obj.get("usage")
                            if got_usage and not isinstance(got_usage, dict):
                                raise TypeError(f"usage is {type(got_usage).__name__}, not an object")
                            got_sd = self.parse_sd(obj, state)
                        except (AttributeError, TypeError, ValueError, KeyError) as e:
                            raise RequestError(
                                "malformed_stream",
                                f"chunk of the wrong shape ({type(e).__name__}: {e}): {payload[:120]!r}",
                            ) from None
                        if got_usage:
                            usage = got_usage
                        if got_sd is not None:
                            sd = got_sd
                        if got_finish:
                            finish = got_finish
                        for c in chunks:
                            tokens_seen += c.n_tokens
                            yield Event(
                                "chunk",
                                n_tokens=c.n_tokens,
                                text=c.text,
                                reasoning_text=c.reasoning,
                                token_ids=c.token_ids,
                            )
                    if done:
                        break
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionResetError) as e:
            raise RequestError("reset", f"{type(e).__name__}: {e}") from None
        except aiohttp.ClientConnectorError as e:
            raise RequestError("connect_error", redact_urls(f"{url}: {e}")) from None
        except aiohttp.ClientError as e:
            raise RequestError("client_error", f"{type(e).__name__}: {e}") from None
        if not done and finish is None:
            raise RequestError("reset", "stream ended without [DONE] or finish_reason")
        try:
            n_tokens = (
                int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") is not None else tokens_seen
            )
        except (TypeError, ValueError):
            raise RequestError("malformed_stream", f"usage.completion_tokens is not a count: {usage!r}"[:200]) from None
        yield Event("final", finish_reason=finish, usage=usage, sd=self.finish_sd(sd, n_tokens, state))

    async def counters(self) -> dict[str, Any] | None:
        self.counter_error = None
        if self._session is None:
            self.counter_error = "not started"
            return None
        url = self.metrics_url
        try:
            async with self._session.get(
                url, headers=self.auth_headers(url), timeout=aiohttp.ClientTimeout(total=30)
            ) as r:
                if r.status != 200:
                    return self._no_counters(f"HTTP {r.status}")
                text = await r.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return self._no_counters(f"{type(e).__name__}: {e}")
        except (UnicodeDecodeError, ValueError) as e:
            return self._no_counters(f"unreadable body ({e})")
        try:
            snap = self.parse_counters(text)
        except ValueError as e:  # 200 but not Prometheus text (an HTML page, say)
            return self._no_counters(f"not Prometheus text ({e})")
        if snap is None:
            return self._no_counters(
                f"no {self.counter_prefix}* counters (SD off?)" if self.counter_prefix else "no SD counters known"
            )
        return snap

    def _no_counters(self, why: str) -> dict[str, Any] | None:
        """No counters: say why in ``counter_error`` (the metrics URL's userinfo redacted)."""
        self.counter_error = redact_urls(f"{self.metrics_url}: {why}")
        return None
