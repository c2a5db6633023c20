"""The ``Embedder`` protocol, row normalisation and the ``get_embedder`` factory.

An embedder maps texts to float32 rows of unit L2 norm.  A text the model maps to the zero vector
(tf-idf of a text with no known term, an empty string sent to the OpenAI embedder) stays an all-zero
row: it is never divided by zero, a warning on the ``speedbench.embed`` logger counts such rows, and
the diversity scores treat it as cosine 0 with every other row (:func:`zero_rows` lists them).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger("speedbench.embed")

Progress = Callable[[int, int], None]
"""``progress(done, total)``: texts embedded so far out of the texts asked for."""

KNOWN_SPECS = ("minilm", "openai:text-embedding-3-small", "openai:text-embedding-3-large", "openai:<model>",
               "tfidf")

_EXTRA = "pip install 'speedbench[embed]'"


class EmbedderError(RuntimeError):
    """An embedder could not produce embeddings (bad response, gave up retrying, bad configuration)."""


class EmbedderUnavailable(ImportError):
    """An optional package an embedder needs is not installed; the message names what to install."""


@runtime_checkable
class Embedder(Protocol):
    """``id`` identifies the model fully (cache key); ``dim`` is the row length (``None`` until known)."""

    id: str
    dim: int | None

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array (len(texts), dim), rows of L2 norm 1 (or all-zero, see the module doc)."""
        ...


def normalize_rows(x: np.ndarray, *, what: str = "embedder", warn: bool = True) -> np.ndarray:
    """float32 copy of ``x`` with unit rows; all-zero rows (norm <= 1e-12) stay zero, counted in a warning."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise EmbedderError(f"{what}: expected a 2-d array of embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise EmbedderError(f"{what}: embeddings contain NaN or inf")
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    zero = norms <= 1e-12
    if warn and zero.any():
        log.warning("%s: %d of %d texts have a zero embedding; they stay zero rows (cosine 0 with every text)",
                    what, int(zero.sum()), len(x))
    out = np.zeros_like(x)
    out[~zero] = (x[~zero] / norms[~zero, None]).astype(np.float32)
    return out


def zero_rows(e: np.ndarray) -> np.ndarray:
    """Indices of all-zero rows (texts the embedder could not place)."""
    return np.flatnonzero(~np.any(np.asarray(e) != 0, axis=1))


def require(module: str, package: str, embedder: str) -> None:
    """Raise :class:`EmbedderUnavailable` (one line naming the pip install) when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        raise EmbedderUnavailable(f"the {embedder} embedder needs {package}: {_EXTRA} (or pip install {package})")


def get_embedder(spec: str, *, cache: bool = True, **options: Any) -> Embedder:
    """Build an embedder from ``spec``: ``minilm``, ``openai:<model>`` or ``tfidf``.

    ``options`` go to the embedder's constructor, except ``cache_root`` (where the disk cache lives,
    default ``cache_dir()/embeddings``) and ``progress`` (given to the cache layer when caching, which
    reports hits as done).  ``cache`` wraps minilm and openai in :class:`~speedbench.embed.cache.CachedEmbedder`;
    tfidf is never cached (its vectors depend on the corpus it is fitted on).
    """
    kind, _, arg = spec.strip().partition(":")
    cache_root = options.pop("cache_root", None)
    progress: Progress | None = options.pop("progress", None)
    if kind == "tfidf" and not arg:
        from speedbench.embed.tfidf import TfidfEmbedder

        return TfidfEmbedder(**options)
    if kind == "minilm" and not arg:
        from speedbench.embed.minilm import MiniLMEmbedder

        inner: Embedder = MiniLMEmbedder(progress=None if cache else progress, **options)
    elif kind == "openai" and arg:
        from speedbench.embed.openai_api import OpenAIEmbedder

        inner = OpenAIEmbedder(arg, progress=None if cache else progress, **options)
    else:
        raise ValueError(f"unknown embedder {spec!r}; known: {', '.join(KNOWN_SPECS)}")
    if not cache:
        return inner
    from speedbench.embed.cache import CachedEmbedder

    return CachedEmbedder(inner, root=Path(cache_root) if cache_root else None, progress=progress)
