"""A disk cache of embeddings, so a text is sent to a model once per embedder id.

Layout: ``cache_dir()/embeddings/<slug of the embedder id>/`` holds ``meta.json`` (the full id, the
dimension) and append-only *shards* ``shard-<ns>-<pid>-<rand>.npy``: one structured numpy array per
batch of newly embedded texts, fields ``key`` (32 bytes: sha256 of ``id + "\\0" + text``) and ``vec``
(float32, dim).  A shard is written under a temporary name, fsynced and renamed into place, so an
interrupted run leaves whole shards (everything embedded before the interruption) and no partial
one; unreadable files are skipped with a warning.  All shards are read once per process into one
matrix and a ``key -> row`` dict; when there are more than ``COMPACT_AT`` shards they are merged into
one.  Two processes may share a directory: each writes its own shards, duplicates are harmless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path

import numpy as np

from speedbench.atomic import atomic_path
from speedbench.embed.base import Embedder, EmbedderError, Progress, normalize_rows, zero_rows

log = logging.getLogger("speedbench.embed")

KEY_BYTES = 32
COMPACT_AT = 32
STALE_TMP_S = 24 * 3600
FORMAT = 1


def default_root() -> Path:
    from speedbench.paths import cache_dir

    return cache_dir() / "embeddings"


def slug(embedder_id: str) -> str:
    """A file-name-safe, unique directory name for an embedder id."""
    readable = re.sub(r"[^A-Za-z0-9._=-]+", "_", embedder_id).strip("_")[:80]
    return f"{readable}-{hashlib.sha256(embedder_id.encode()).hexdigest()[:12]}"


def text_key(embedder_id: str, text: str) -> bytes:
    return hashlib.sha256(embedder_id.encode() + b"\0" + text.encode("utf-8", "surrogatepass")).digest()


def _shard_dtype(dim: int) -> np.dtype:
    return np.dtype([("key", np.uint8, (KEY_BYTES,)), ("vec", np.float32, (dim,))])


def _split_keys(keys: np.ndarray) -> list[bytes]:
    raw = np.ascontiguousarray(keys, dtype=np.uint8).tobytes()
    return [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]


class EmbeddingCache:
    """The shards of one embedder id: ``lookup`` keys, ``add`` new rows."""

    def __init__(self, embedder_id: str, root: Path | None = None) -> None:
        self.id = embedder_id
        self.dir = (root or default_root()) / slug(embedder_id)
        self.dim: int | None = None
        self._row: dict[bytes, int] = {}
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._loaded = False

    def __len__(self) -> int:
        self._load()
        return len(self._row)

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npy"))

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found): rows (len(keys), dim) with zeros where not found; found a bool mask."""
        self._load()
        idx = np.fromiter((self._row.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        found = idx >= 0
        if self.dim is None:
            return np.zeros((len(keys), 0), np.float32), found
        rows = np.zeros((len(keys), self.dim), np.float32)
        if found.any():
            rows[found] = self._all()[idx[found]]
        return rows, found

    def add(self, keys: list[bytes], vecs: np.ndarray) -> None:
        """Write one shard with these rows (atomically) and index it."""
        self._load()
        vecs = np.asarray(vecs, dtype=np.float32)
        if len(keys) == 0:
            return
        if self.dim is None:
            self._write_meta(vecs.shape[1])
        if vecs.shape != (len(keys), self.dim):
            raise EmbedderError(f"cache {self.dir}: rows of shape {vecs.shape}, expected ({len(keys)}, {self.dim})")
        self._write_shard(f"shard-{time.time_ns()}-{os.getpid()}-{secrets.token_hex(3)}.npy", keys, vecs)
        self._index(keys, vecs)

    def compact(self) -> None:
        """Merge all shards into one (duplicates dropped); old shards are removed after the new one lands."""
        self._load()
        old = self.shards()
        if len(old) < 2 or self.dim is None:
            return
        keys = list(self._row)
        self._write_shard(
            f"shard-{time.time_ns()}-{os.getpid()}-merged.npy", keys, self._all()[[self._row[k] for k in keys]]
        )
        for p in old:
            p.unlink(missing_ok=True)

    # -- internals -------------------------------------------------------------------------------

    def _write_shard(self, name: str, keys: list[bytes], vecs: np.ndarray) -> None:
        """One shard file with these rows, written atomically."""
        assert self.dim is not None
        arr = np.empty(len(keys), dtype=_shard_dtype(self.dim))
        arr["key"] = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        arr["vec"] = vecs
        with atomic_path(self.dir / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    def _all(self) -> np.ndarray:
        if self._matrix is None or len(self._matrix) != sum(len(b) for b in self._blocks):
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, self.dim or 0), np.float32)
            self._blocks = [self._matrix]
        return self._matrix

    def _index(self, keys: list[bytes], vecs: np.ndarray) -> None:
        start = sum(len(b) for b in self._blocks)
        fresh = [(k, i) for i, k in enumerate(keys) if k not in self._row]
        if not fresh:
            return
        sel = [i for _, i in fresh]
        self._blocks.append(vecs[sel])
        for n, (k, _) in enumerate(fresh):
            self._row[k] = start + n

    def _write_meta(self, dim: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / "meta.json") as tmp:
            tmp.write_text(json.dumps({"format": FORMAT, "id": self.id, "dim": dim}) + "\n")
        self.dim = dim

    def _read_meta(self) -> None:
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            return
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise EmbedderError(f"cache {self.dir}: unreadable meta.json ({e}); delete the folder to rebuild") from e
        if meta.get("id") != self.id:
            raise EmbedderError(f"cache {self.dir} holds {meta.get('id')!r}, not {self.id!r}")
        self.dim = int(meta["dim"])

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        self._read_meta()
        if self.dim is None:
            return
        self._clean_stale_tmp()
        paths = self.shards()
        for p in paths:
            arr = self._read_shard(p)
            if arr is not None:
                self._index(_split_keys(arr["key"]), arr["vec"])
        if len(paths) > COMPACT_AT:
            self.compact()

    def _read_shard(self, p: Path) -> np.ndarray | None:
        assert self.dim is not None
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            return None  # merged away by another process
        except (OSError, ValueError, EOFError) as e:
            log.warning("embedding cache: skipping unreadable shard %s (%s)", p, e)
            return None
        if arr.dtype != _shard_dtype(self.dim) or arr.ndim != 1:
            log.warning("embedding cache: skipping shard %s with dtype %s (dim %d expected)", p, arr.dtype, self.dim)
            return None
        return arr

    def _clean_stale_tmp(self) -> None:
        now = time.time()
        for p in self.dir.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > STALE_TMP_S:
                    p.unlink()
            except OSError:
                pass


class CachedEmbedder:
    """Wrap an embedder with an :class:`EmbeddingCache`: only texts not yet cached reach ``inner``.

    Missing texts (deduplicated) go to ``inner.embed`` in chunks of ``chunk_size``; each chunk is
    written as one shard as soon as it is back, so an interrupted run keeps what it paid for.
    ``progress(done, total)`` counts cache hits as done.
    """

    def __init__(
        self, inner: Embedder, *, root: Path | None = None, chunk_size: int = 256, progress: Progress | None = None
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.inner = inner
        self.id = inner.id
        self.cache = EmbeddingCache(inner.id, root)
        self.chunk_size = chunk_size
        self.progress = progress
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int | None:
        return self.inner.dim or self.cache.dim

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, dir={str(self.cache.dir)!r})"

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [text_key(self.id, t) for t in texts]
        rows, found = self.cache.lookup(keys)
        missing = self._unique_missing(keys, found)
        self.hits += int(found.sum())
        self.misses += len(missing)
        done = int(found.sum())
        self._report(done, len(texts))
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            vecs = self._embed_chunk([texts[i] for i in chunk])
            self.cache.add([keys[i] for i in chunk], vecs)
            done += len(chunk)
            self._report(min(done, len(texts)), len(texts))
        self._warn_cached_zeros(rows, found)
        if missing:
            rows, found = self.cache.lookup(keys)
            if not found.all():
                raise EmbedderError("embedding cache: texts missing after embedding them (concurrent deletion?)")
        self._report(len(texts), len(texts))
        return rows if len(texts) else np.zeros((0, self.dim or 0), np.float32)

    def _unique_missing(self, keys: list[bytes], found: np.ndarray) -> list[int]:
        seen: set[bytes] = set()
        out: list[int] = []
        for i in np.flatnonzero(~found):
            if keys[i] not in seen:
                seen.add(keys[i])
                out.append(int(i))
        return out

    def _embed_chunk(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self.inner.embed(texts))
        if vecs.ndim != 2 or len(vecs) != len(texts):
            raise EmbedderError(f"{self.id}: returned shape {vecs.shape} for {len(texts)} texts")
        return normalize_rows(vecs, what=self.id, warn=False)  # the inner embedder reports its zero rows

    def _warn_cached_zeros(self, rows: np.ndarray, found: np.ndarray) -> None:
        n = len(zero_rows(rows[found])) if found.any() else 0
        if n:
            log.warning("%s: %d cached texts have a zero embedding; they stay zero rows", self.id, n)

    def _report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)
