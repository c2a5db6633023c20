"""Diversity selection: k prompts per category minimising the sum of pairwise cosine similarities.

SPEED-Bench's qualitative split picks, in each category, the k candidates whose L2-normalised
embeddings have the smallest sum of pairwise cosine similarities
    f(S) = sum_{i<j in S} e_i . e_j
It is NP-hard in general; like SPEED-Bench we use

- ``greedy``: a seeded random first pick, then repeatedly the candidate with the smallest summed
  similarity to everything chosen so far.  A running vector ``acc[c] = sum_{s in S} e_c . e_s`` is
  kept, so each pick costs one matrix-vector product (O(n d)).
- ``swap`` refinement (the default method ``greedy+swap``): best-improvement 1-for-1 swaps between
  a chosen and an unchosen candidate until no swap lowers f or ``max_iter`` swaps were made.  Swapping
  chosen i for unchosen j changes f by ``(acc[j] - e_i.e_j) - (acc[i] - e_i.e_i)``; the k x n block
  of similarities between chosen and all candidates is kept and one row replaced per swap.
- ``qp``: the convex relaxation baseline: min w^T G w over w in [0,1]^n, sum w = k (G = E E^T is
  positive semi-definite), solved by accelerated projected gradient (FISTA) with an exact projection
  onto the capped simplex, then the k largest weights.  For comparison only.

Zero embedding rows (an embedder that saw no known token) have similarity 0 to everything; they
are legal picks, which is why the swap rule uses e_i.e_i rather than assuming 1.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speedbench.data.sample import DatasetError, Sample, category_indices
from speedbench.embed.diversity import pairwise_sum
from speedbench.errors import InvalidInput

METHODS = ("greedy+swap", "greedy", "qp")


def sample_text(s: Sample) -> str:
    """The text a prompt is embedded as: its user turns, blank-line separated."""
    return "\n\n".join(s.turns)


def objective(E: np.ndarray, idx: list[int] | np.ndarray) -> float:
    """f(S) = sum over distinct pairs of e_i . e_j."""
    return pairwise_sum(np.asarray(E)[np.asarray(idx, dtype=np.int64)])


def greedy(E: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    n = E.shape[0]
    if k >= n:
        return list(range(n))
    first = int(rng.integers(n))
    chosen = [first]
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    acc = (E @ E[first]).astype(np.float64)
    while len(chosen) < k:
        masked = np.where(taken, np.inf, acc)
        j = int(np.argmin(masked))
        chosen.append(j)
        taken[j] = True
        acc += E @ E[j]
    return chosen


def swap_refine(E: np.ndarray, chosen: list[int], max_iter: int = 10_000, tol: float = 1e-9) -> tuple[list[int], int]:
    """Best-improvement swaps until none lowers f (or ``max_iter``); returns (chosen, swaps made)."""
    n = E.shape[0]
    sel = list(chosen)
    if len(sel) >= n or not sel:
        return sel, 0
    taken = np.zeros(n, dtype=bool)
    taken[sel] = True
    E64 = np.asarray(E, dtype=np.float64)
    acc = E64 @ E64[sel].sum(axis=0)  # acc[c] = sum_{s in S} e_c . e_s
    block = E64[sel] @ E64.T  # block[p, c] = e_{sel[p]} . e_c
    self_sim = np.einsum("ij,ij->i", E64, E64)
    swaps = 0
    while swaps < max_iter:
        contrib = acc[sel] - self_sim[sel]  # each chosen item's share of f
        delta = acc[None, :] - block - contrib[:, None]
        delta[:, taken] = np.inf
        p, j = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if not delta[p, j] < -tol:
            break
        i = sel[p]
        acc += E64 @ (E64[j] - E64[i])
        block[p] = E64 @ E64[j]
        taken[i], taken[j] = False, True
        sel[p] = int(j)
        swaps += 1
    return sel, swaps


def _project_capped_simplex(v: np.ndarray, k: float) -> np.ndarray:
    """Euclidean projection onto {w : 0 <= w <= 1, sum w = k} (bisection on the shift)."""
    lo, hi = float(v.min()) - 1.0, float(v.max())
    for _ in range(100):
        tau = (lo + hi) / 2
        s = np.clip(v - tau, 0.0, 1.0).sum()
        if s > k:
            lo = tau
        else:
            hi = tau
        if hi - lo < 1e-12:
            break
    return np.clip(v - (lo + hi) / 2, 0.0, 1.0)


def qp_weights(E: np.ndarray, k: int, iters: int = 500, tol: float = 1e-9) -> np.ndarray:
    """FISTA on min ||E^T w||^2 over the capped simplex (never forms the n x n Gram matrix)."""
    n = E.shape[0]
    E64 = np.asarray(E, dtype=np.float64)
    L = 2.0 * float(np.linalg.norm(E64, 2)) ** 2 or 1.0  # Lipschitz constant of the gradient
    w = np.full(n, k / n)
    y, t = w.copy(), 1.0
    for _ in range(iters):
        grad = 2.0 * (E64 @ (E64.T @ y))
        w_next = _project_capped_simplex(y - grad / L, k)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = w_next + ((t - 1) / t_next) * (w_next - w)
        if np.max(np.abs(w_next - w)) < tol:
            w = w_next
            break
        w, t = w_next, t_next
    return w


def qp_select(E: np.ndarray, k: int, rng: np.random.Generator, iters: int = 500) -> list[int]:
    n = E.shape[0]
    if k >= n:
        return list(range(n))
    w = qp_weights(E, k, iters)
    # ties (many weights at exactly 1 or 0) are broken by a seeded random order
    order = np.lexsort((rng.permutation(n), -w))
    return [int(i) for i in order[:k]]


@dataclass
class CategoryResult:
    category: str
    candidates: int
    selected: list[str]  # question ids, in pick order
    objective: float  # f of the final selection
    mean_cosine: float  # f / number of pairs
    greedy_objective: float | None = None
    swaps: int = 0
    seconds: float = 0.0


@dataclass
class Selection:
    method: str
    k: int
    seed: int
    max_iter: int
    embedder: str
    pool_hash: str
    categories: list[CategoryResult] = field(default_factory=list)

    @property
    def selected_ids(self) -> list[str]:
        return [q for c in self.categories for q in c.selected]

    def selection_hash(self) -> str:
        """sha256 over the sorted selected ids per category (independent of pick order)."""
        body = json.dumps({c.category: sorted(c.selected) for c in self.categories}, sort_keys=True)
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "k": self.k,
            "seed": self.seed,
            "max_iter": self.max_iter,
            "embedder": self.embedder,
            "pool_hash": self.pool_hash,
            "selection_hash": self.selection_hash(),
            "objective": "sum over pairs of cosine similarity of L2-normalised embeddings, per category",
            "categories": [c.__dict__ for c in self.categories],
        }


def _pairs(m: int) -> int:
    return m * (m - 1) // 2


def select_indices(
    E: np.ndarray, k: int, method: str, rng: np.random.Generator, max_iter: int
) -> tuple[list[int], float | None, int]:
    """(chosen indices, greedy objective before swaps or None, swaps) for one category."""
    if method == "qp":
        return qp_select(E, k, rng), None, 0
    chosen = greedy(E, k, rng)
    if method == "greedy":
        return chosen, None, 0
    g = objective(E, chosen)
    chosen, swaps = swap_refine(E, chosen, max_iter)
    return chosen, g, swaps


def select(
    samples: list[Sample],
    embeddings: np.ndarray,
    *,
    k: int = 80,
    method: str = "greedy+swap",
    seed: int = 0,
    max_iter: int = 10_000,
    embedder: str = "",
    pool_hash: str = "",
    allow_short: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[Sample], Selection]:
    """Select k per category.  ``embeddings[i]`` belongs to ``samples[i]`` (rows L2-normalised).

    Each category gets its own generator seeded by (seed, category), so a category's pick does not
    depend on the other categories or their order.  A category with fewer than k candidates is an
    error unless ``allow_short`` (then all of its candidates are taken).
    """
    if method not in METHODS:
        raise InvalidInput(f"unknown selection method {method!r} (use {', '.join(METHODS)})")
    if k < 1:
        raise InvalidInput("k must be >= 1")
    if len(samples) != embeddings.shape[0]:
        raise ValueError(f"{len(samples)} samples but {embeddings.shape[0]} embeddings")
    by_cat = category_indices(samples)
    short = {c: len(ix) for c, ix in by_cat.items() if len(ix) < k}
    if short and not allow_short:
        listing = ", ".join(f"{c} ({n})" for c, n in sorted(short.items()))
        raise DatasetError(
            "candidate pool",
            None,
            "category",
            f"fewer than k={k} candidates in: {listing}; lower --k or pass --allow-short",
        )
    result = Selection(method=method, k=k, seed=seed, max_iter=max_iter, embedder=embedder, pool_hash=pool_hash)
    picked: list[Sample] = []
    cats = sorted(by_cat)
    for n_done, cat in enumerate(cats):
        ix = np.asarray(by_cat[cat])
        E = embeddings[ix]
        digest = hashlib.sha256(f"{seed}:{cat}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        t0 = time.perf_counter()
        local, g_obj, swaps = select_indices(E, k, method, rng, max_iter)
        secs = time.perf_counter() - t0
        f = objective(E, local)
        chosen = [samples[int(ix[j])] for j in local]
        picked.extend(chosen)
        result.categories.append(
            CategoryResult(
                category=cat,
                candidates=len(ix),
                selected=[s.question_id for s in chosen],
                objective=f,
                mean_cosine=f / _pairs(len(local)) if len(local) > 1 else float("nan"),
                greedy_objective=g_obj,
                swaps=swaps,
                seconds=secs,
            )
        )
        if progress:
            progress(cat, n_done + 1, len(cats))
    return picked, result
