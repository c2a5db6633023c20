"""The ``Embedder`` protocol, row normalisation and the embedders' errors (the factory: :mod:`.factory`).

An embedder maps texts to float32 rows of unit L2 norm.  A text the model maps to the zero vector
(tf-idf of a text with no known term, an empty string sent to the OpenAI embedder) stays an all-zero
row: it is never divided by zero, a warning on the ``speedbench.embed`` logger counts such rows, and
the diversity scores treat it as cosine 0 with every other row (:func:`zero_rows` lists them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from speedbench import extras
from speedbench.errors import UserError
from speedbench.extras import MissingExtra

log = logging.getLogger("speedbench.embed")

Progress = Callable[[int, int], None]
"""``progress(done, total)``: texts embedded so far out of the texts asked for."""


class EmbedderError(UserError, RuntimeError):
    """An embedder could not produce embeddings (bad response, gave up retrying, bad configuration)."""


class EmbedderUnavailable(MissingExtra):
    """An optional package an embedder needs is not installed; the message names what to install."""


@runtime_checkable
class Embedder(Protocol):
    """``id`` identifies the model fully (cache key); ``dim`` is the row length (``None`` until known)."""

    id: str

    @property
    def dim(self) -> int | None: ...

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
        log.warning(
            "%s: %d of %d texts have a zero embedding; they stay zero rows (cosine 0 with every text)",
            what,
            int(zero.sum()),
            len(x),
        )
    out = np.zeros_like(x)
    out[~zero] = (x[~zero] / norms[~zero, None]).astype(np.float32)
    return out


def zero_rows(e: np.ndarray) -> np.ndarray:
    """Indices of all-zero rows (texts the embedder could not place)."""
    return np.flatnonzero(~np.any(np.asarray(e) != 0, axis=1))


def require(module: str, package: str, embedder: str) -> None:
    """Raise :class:`EmbedderUnavailable` (one line naming the pip install) when ``module`` is missing."""
    extras.require(module, "embed", f"the {embedder} embedder", package=package, error=EmbedderUnavailable)
