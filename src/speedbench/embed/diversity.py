"""Diversity scores over embedding rows (unit L2 norm, or all-zero for texts an embedder could not place).

SPEED-Bench picks prompts that minimise the sum of pairwise cosine similarities; these are that
objective and the figures the audit reports next to it.  With unit rows, cos(i, j) = e_i . e_j, and
the sum over distinct pairs needs no Gram matrix: sum_{i<j} e_i.e_j = (|sum_i e_i|^2 - sum_i |e_i|^2) / 2.
An all-zero row has cosine 0 with every row: it lowers the mean like an orthogonal text would
(``speedbench.embed.zero_rows`` finds them; callers that mind should drop them first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NORM_TOL = 1e-3
GRAM_BLOCK_ELEMENTS = 8_000_000  # near_duplicates works on (rows x n) blocks of at most this many floats


def _rows(e: np.ndarray) -> np.ndarray:
    """``e`` as a float array after checking every row has norm 1 or 0 (within ``NORM_TOL``)."""
    x = np.asarray(e)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    bad = ~((np.abs(norms - 1.0) <= NORM_TOL) | (norms <= NORM_TOL))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} rows are not unit-normalised (first: row {int(np.flatnonzero(bad)[0])}, "
            f"norm {norms[bad][0]:.4g}); use speedbench.embed.normalize_rows"
        )
    return x


def _pair_sum(x: np.ndarray) -> float:
    s = x.sum(axis=0, dtype=np.float64)
    return float((s @ s - np.einsum("ij,ij->", x, x, dtype=np.float64)) / 2.0)


def _pair_mean(x: np.ndarray) -> float:
    n = len(x)
    return _pair_sum(x) / (n * (n - 1) / 2) if n >= 2 else float("nan")


def pairwise_sum(e: np.ndarray) -> float:
    """Sum of cosine similarities over distinct pairs i < j (SPEED-Bench's objective; lower = more diverse)."""
    return _pair_sum(_rows(e))


def mean_pairwise_cosine(e: np.ndarray) -> float:
    """Mean cosine over the n(n-1)/2 distinct pairs; NaN for fewer than 2 rows."""
    return _pair_mean(_rows(e))


def random_subset_baseline(e: np.ndarray, size: int, draws: int = 100, seed: int = 0) -> tuple[float, float]:
    """(mean, sample sd) of ``mean_pairwise_cosine`` over ``draws`` uniform random subsets of ``size`` rows.

    The yardstick for a selection: a selected subset should sit well below the random mean.
    Reproducible for a given ``seed`` (numpy ``default_rng``).
    """
    return stratified_subset_baseline([e], [size], draws=draws, seed=seed)


def stratified_subset_baseline(
    groups: Sequence[np.ndarray], sizes: Sequence[int], draws: int = 100, seed: int = 0
) -> tuple[float, float]:
    """(mean, sample sd) of ``mean_pairwise_cosine`` over ``draws`` random subsets that take ``sizes[g]``
    rows uniformly from each ``groups[g]`` (e.g. the same count per category as a selection).  With
    one group this is :func:`random_subset_baseline`."""
    xs = [_rows(g) for g in groups]
    if draws < 10:
        raise ValueError("draws must be >= 10")
    if len(xs) != len(sizes):
        raise ValueError(f"{len(xs)} groups but {len(sizes)} sizes")
    for x, size in zip(xs, sizes, strict=True):
        if not 0 <= size <= len(x):
            raise ValueError(f"size must be between 0 and the number of rows of its group ({len(x)}), got {size}")
    if sum(sizes) < 2:
        raise ValueError(f"size must be between 2 and the number of rows ({sum(len(x) for x in xs)}), got {sum(sizes)}")
    rng = np.random.default_rng(seed)
    vals = np.array(
        [
            _pair_mean(
                np.concatenate(
                    [x[rng.choice(len(x), size=size, replace=False)] for x, size in zip(xs, sizes, strict=True)]
                )
            )
            for _ in range(draws)
        ]
    )
    return float(vals.mean()), float(vals.std(ddof=1))


def near_duplicates(e: np.ndarray, ids: Sequence[str], threshold: float = 0.95) -> list[tuple[str, str, float]]:
    """Pairs (id_a, id_b, cos) with cos >= ``threshold``, most similar first (ties: input order).

    ``id_a`` comes before ``id_b`` in the input.  Works through row blocks of the Gram matrix
    (at most ``GRAM_BLOCK_ELEMENTS`` floats at a time), so memory stays O(n) blocks, not O(n^2).
    """
    x = _rows(e).astype(np.float32, copy=False)
    n = len(x)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} rows")
    block = max(1, GRAM_BLOCK_ELEMENTS // max(n, 1))
    found: list[tuple[float, int, int]] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x[start:].T  # rows start..stop against columns start..n
        sims[np.tril_indices(stop - start, m=n - start)] = -np.inf  # keep j > i only
        bi, bj = np.nonzero(sims >= threshold)
        found.extend((float(sims[a, b]), start + int(a), start + int(b)) for a, b in zip(bi, bj, strict=True))
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(ids[i], ids[j], c) for c, i, j in found]
