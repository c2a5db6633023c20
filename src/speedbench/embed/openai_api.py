"""OpenAI embeddings (``POST {base_url}/embeddings``) over aiohttp, batched and retried.

Request ``{"model", "input": [...], "encoding_format": "float"|"base64"[, "dimensions"]}``; the reply's
``data[i].embedding`` rows are put back in input order by ``data[i].index``.  Limits respected: at most
2048 inputs per request (``batch_size`` is capped there) and a character budget per request
(``max_batch_chars``, default 250k characters, under the 300k-token request limit even at one token
per character).  Empty or blank texts are not sent (the API rejects them): they get a zero row.

429, 408, 409, 5xx, timeouts and connection errors are retried up to ``max_attempts`` in all, waiting
``Retry-After``/``retry-after-ms`` when the server gives one (capped at ``max_wait``), else
exponential backoff with jitter.  Other statuses fail at once.  The final error names the URL, the
status and the start of the body.  The API key (``api_key`` or ``$OPENAI_API_KEY``) only travels in
the Authorization header: it is not in the id, the repr or any error message (``redact``).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from speedbench.embed.base import EmbedderError, Progress, normalize_rows
from speedbench.errors import InvalidInput, SpeedbenchError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_INPUTS = 2048
KNOWN_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
SNIPPET = 300

log = logging.getLogger("speedbench.embed")

Sleep = Callable[[float], Awaitable[None]]


class _Retryable(SpeedbenchError):
    """One attempt failed in a way worth retrying (internal: the retry loop catches it)."""

    def __init__(self, what: str, wait: float | None = None) -> None:
        super().__init__(what)
        self.what, self.wait = what, wait


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "<redacted>") if secret else text


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if any."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _public_host(url: str) -> str:
    """host[:port] of a URL, without any user:password@."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def batches(texts: list[str], size: int, max_chars: int) -> list[list[int]]:
    """Indices of ``texts`` grouped into requests of at most ``size`` inputs and ``max_chars`` characters."""
    out: list[list[int]] = []
    cur: list[int] = []
    chars = 0
    for i, t in enumerate(texts):
        if cur and (len(cur) >= size or chars + len(t) > max_chars):
            out.append(cur)
            cur, chars = [], 0
        cur.append(i)
        chars += len(t)
    if cur:
        out.append(cur)
    return out


def _run(coro_fn: Callable[[], Awaitable[np.ndarray]]) -> np.ndarray:
    """asyncio.run, or in a worker thread when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()  # type: ignore[arg-type]


class OpenAIEmbedder:
    """``openai:<model>``; ``dimensions`` shortens text-embedding-3 vectors (part of the id)."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 512,
        max_batch_chars: int = 250_000,
        concurrency: int = 2,
        max_attempts: int = 6,
        backoff: float = 1.0,
        max_wait: float = 120.0,
        timeout: float = 120.0,
        encoding_format: str = "float",
        progress: Progress | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key.strip():
            raise EmbedderError("the openai embedder needs an API key: set OPENAI_API_KEY")
        if batch_size < 1 or max_attempts < 1 or concurrency < 1 or max_batch_chars < 1:
            raise InvalidInput("batch_size, max_attempts, concurrency and max_batch_chars must be >= 1")
        if encoding_format not in ("float", "base64"):
            raise InvalidInput("encoding_format must be 'float' or 'base64'")
        self.model = model
        self._key = key.strip()
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.url = f"{self.base_url}/embeddings"
        self.dimensions = dimensions
        self.batch_size = min(batch_size, MAX_INPUTS)
        self.max_batch_chars = max_batch_chars
        self.concurrency, self.max_attempts = concurrency, max_attempts
        self.backoff, self.max_wait, self.timeout = backoff, max_wait, timeout
        self.encoding_format = encoding_format
        self.progress = progress
        self._sleep: Sleep = sleep or asyncio.sleep
        self.id = self._make_id()
        self.dim: int | None = dimensions or KNOWN_DIMS.get(model)
        self.requests = 0  # HTTP requests sent (attempts included)

    def _make_id(self) -> str:
        ident = f"openai:{self.model}"
        if self.dimensions:
            ident += f":dim={self.dimensions}"
        if self.base_url != DEFAULT_BASE_URL:
            ident += f"@{_public_host(self.base_url)}"
        return ident

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(id={self.id!r}, url={self._safe_url()!r}, batch_size={self.batch_size})"

    def _safe_url(self) -> str:
        parts = urlsplit(self.url)  # without user:password@ and the query
        return redact(parts._replace(netloc=_public_host(self.url), query="").geturl(), self._key)

    def embed(self, texts: list[str]) -> np.ndarray:
        sendable = [i for i, t in enumerate(texts) if t.strip()]
        out = np.zeros((len(texts), self.dim or 0), np.float32)
        if sendable:
            rows = _run(lambda: self._embed_all([texts[i] for i in sendable]))
            if out.shape[1] != rows.shape[1]:
                out = np.zeros((len(texts), rows.shape[1]), np.float32)
            out[sendable] = rows
        return normalize_rows(out, what=self.id)

    async def _embed_all(self, texts: list[str]) -> np.ndarray:
        import aiohttp

        groups = batches(texts, self.batch_size, self.max_batch_chars)
        results: list[np.ndarray | None] = [None] * len(groups)
        sem = asyncio.Semaphore(self.concurrency)
        done = 0
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

            async def one(g: int) -> None:
                nonlocal done
                async with sem:
                    results[g] = await self._request(session, [texts[i] for i in groups[g]])
                done += len(groups[g])
                if self.progress is not None:
                    self.progress(done, len(texts))

            await asyncio.gather(*(one(g) for g in range(len(groups))))
        rows = np.concatenate([r for r in results if r is not None])
        order = np.concatenate([np.asarray(g) for g in groups])
        out = np.empty_like(rows)
        out[order] = rows
        if self.dim != out.shape[1]:
            if self.dim is not None:
                log.warning("%s: the server returned %d-d embeddings, not %d", self.id, out.shape[1], self.dim)
            self.dim = out.shape[1]
        return out

    async def _request(self, session: Any, inputs: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": self.encoding_format}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._post(session, body, len(inputs))
            except _Retryable as e:
                last = e.what
                if attempt == self.max_attempts:
                    break
                await self._sleep(self._wait(attempt, e.wait))
        raise EmbedderError(self._msg(f"gave up after {self.max_attempts} attempts; last: {last}"))

    def _wait(self, attempt: int, server_says: float | None) -> float:
        if server_says is not None:
            return min(server_says, self.max_wait)
        return min(self.max_wait, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def _msg(self, what: str) -> str:
        return redact(f"openai embeddings POST {self._safe_url()} ({self.model}): {what}", self._key)

    async def _post(self, session: Any, body: dict[str, Any], n: int) -> np.ndarray:
        import aiohttp

        self.requests += 1
        try:
            async with session.post(self.url, json=body) as resp:
                text = await resp.text(errors="replace")
                status, headers = resp.status, resp.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _Retryable(redact(f"{type(e).__name__}: {e}", self._key)) from None
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}: {self._snippet(text)}", retry_after(headers))
        if status != 200:
            raise EmbedderError(self._msg(f"HTTP {status}: {self._snippet(text)}"))
        return self._parse(text, n)

    def _snippet(self, text: str) -> str:
        text = " ".join(text.split())
        return redact(text[:SNIPPET] + ("..." if len(text) > SNIPPET else ""), self._key)

    def _parse(self, text: str, n: int) -> np.ndarray:
        import json

        try:
            data = json.loads(text)["data"]
            pairs = sorted(((int(d["index"]), self._vector(d["embedding"])) for d in data), key=lambda p: p[0])
        except (ValueError, KeyError, TypeError) as e:
            what = f"malformed reply ({type(e).__name__}: {e}): {self._snippet(text)}"
            raise EmbedderError(self._msg(what)) from None
        if [i for i, _ in pairs] != list(range(n)):
            raise EmbedderError(self._msg(f"reply indices {[i for i, _ in pairs][:10]}... do not cover 0..{n - 1}"))
        if len({len(v) for _, v in pairs}) != 1:
            raise EmbedderError(self._msg("reply embeddings have different lengths"))
        return np.stack([v for _, v in pairs]).astype(np.float32)

    def _vector(self, emb: Any) -> np.ndarray:
        if isinstance(emb, str):
            return np.frombuffer(base64.b64decode(emb), dtype="<f4")
        return np.asarray(emb, dtype=np.float32)
