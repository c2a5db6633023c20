"""A no-model fallback: tf-idf fitted on the texts of each ``embed`` call, reduced by LSA to ``dim``.

Representation: a 20k-text corpus has a vocabulary of ~10^5 terms, so dense tf-idf rows (20k x 10^5
float32 = 8 GB) are out of the question and a sparse matrix would break the ``Embedder`` contract
(selection wants a dense (n, d) array and a Gram matrix).  We therefore keep the top ``dim`` (256)
components of a truncated SVD (latent semantic analysis, randomized, fixed seed: deterministic) and
re-normalise the rows; cosine in LSA space approximates tf-idf cosine and also merges terms that
co-occur.  Up to ``GRAM_MAX`` texts the LSA rows come exactly from the eigen-decomposition of the
n x n Gram matrix (faster than randomized SVD over a wide vocabulary); with n <= dim texts (or <= dim
terms) that is no approximation at all: the rows' Gram matrix equals the tf-idf Gram matrix
(zero-padded to ``dim``).  Texts with no known term (empty, stop words only) get zero rows.

The vectors depend on the whole corpus passed to ``embed`` (idf, vocabulary, SVD basis), so this
embedder is never cached per text; its id ends in ``:per-corpus`` to say so.
"""

from __future__ import annotations

import numpy as np

from speedbench.embed.base import EmbedderError, normalize_rows, require
from speedbench.errors import InvalidInput

GRAM_MAX = 2000  # up to this many texts, LSA is computed exactly from the Gram matrix (faster, exact)


class TfidfEmbedder:
    """sklearn TfidfVectorizer(sublinear_tf) + TruncatedSVD to ``dim``; fitted anew on each ``embed`` call."""

    def __init__(
        self,
        *,
        dim: int = 256,
        ngram_max: int = 2,
        max_features: int = 50_000,
        min_df: int = 1,
        stop_words: str | None = "english",
        svd_iter: int = 5,
        seed: int = 0,
    ) -> None:
        require("sklearn", "scikit-learn", "tfidf")
        if dim < 1 or ngram_max < 1 or max_features < 1 or min_df < 1:
            raise InvalidInput("dim, ngram_max, max_features and min_df must be >= 1")
        from importlib.metadata import version

        self.dim: int | None = dim
        self.ngram_max, self.max_features, self.min_df = ngram_max, max_features, min_df
        self.stop_words, self.seed, self.svd_iter = stop_words, seed, svd_iter
        params = (
            f"sublinear_tf,stop={stop_words or 'none'},ngram=1-{ngram_max},min_df={min_df},"
            f"max_features={max_features},lsa={dim},svd_iter={svd_iter},seed={seed}"
        )
        self.id = f"tfidf:sklearn=={version('scikit-learn')}:{params}:per-corpus"

    def __repr__(self) -> str:
        return f"TfidfEmbedder(id={self.id!r})"

    def embed(self, texts: list[str]) -> np.ndarray:
        dim = self.dim or 256
        if not texts:
            return np.zeros((0, dim), np.float32)
        x = self._tfidf(texts)
        if x is None:
            return normalize_rows(np.zeros((len(texts), dim), np.float32), what=self.id)
        return normalize_rows(self._reduce(x, dim), what=self.id)

    def _tfidf(self, texts: list[str]):  # -> scipy.sparse.csr_matrix | None
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(
            sublinear_tf=True,
            stop_words=self.stop_words,
            ngram_range=(1, self.ngram_max),
            min_df=self.min_df,
            max_features=self.max_features,
            dtype=np.float32,
        )
        try:
            return vec.fit_transform(texts)
        except ValueError as e:  # every text empty or stop words only
            if "empty vocabulary" in str(e):
                return None
            raise EmbedderError(f"{self.id}: {e}") from e

    def _reduce(self, x, dim: int) -> np.ndarray:
        n, f = x.shape
        if f <= dim:
            return _pad(x.toarray(), dim)
        if n <= GRAM_MAX:
            return _pad(_gram_lsa(x, dim), dim)
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=self.svd_iter, random_state=self.seed)
        return svd.fit_transform(x).astype(np.float32)


def _gram_lsa(x, dim: int) -> np.ndarray:
    """Exact LSA through the Gram matrix: rows U_k S_k for the top k = min(dim, n) singular values.

    ``y @ y.T`` is the best rank-k approximation of ``x @ x.T`` (equal to it when n <= dim).
    """
    from scipy.linalg import eigh

    g = (x @ x.T).toarray().astype(np.float64)
    n = g.shape[0]
    k = min(dim, n)
    w, q = eigh(g, subset_by_index=[n - k, n - 1])
    return (q * np.sqrt(np.clip(w, 0.0, None))).astype(np.float32)


def _pad(y: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros((y.shape[0], dim), np.float32)
    out[:, : y.shape[1]] = y
    return out
