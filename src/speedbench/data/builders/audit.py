"""Diversity audit of prompt sets: how similar are a set's prompts to each other, against chance?

For each file, per category and overall:
- ``mean_cos``: mean pairwise cosine similarity of the L2-normalised embeddings (distinct pairs);
- the same statistic for uniform random subsets of the same size drawn from a reference set (mean
  and sd over ``draws`` >= 10 draws) and ``z = (random mean - mean_cos) / random sd`` (positive: the
  set is more diverse than chance);
- near-duplicate pairs (cosine >= threshold).

The reference set, named in every row:
- with ``--pool`` (the candidates a selection was made from): per category, the pool's rows of that
  category; where the pool holds no more of a category than the set, there was no choice and there is
  no baseline ("n/a"); a category the pool lacks is compared with the whole pool.  For "all": random
  subsets with the set's count per category, each drawn from the pool's rows of that category
  (stratified), so the category mix is the same and only the choice within categories differs.
- without one: per category, the whole file (is this category tighter than the file?); no baseline
  for "all" (a file is not a random draw from itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speedbench.data.builders.select import sample_text
from speedbench.data.sample import Sample, category_indices
from speedbench.embed.base import Embedder
from speedbench.embed.diversity import (
    mean_pairwise_cosine,
    near_duplicates,
    random_subset_baseline,
    stratified_subset_baseline,
)
from speedbench.errors import InvalidInput
from speedbench.extras import require

PLOT_NEEDS = ("matplotlib", "report")  # (module, extra) of :func:`plot`


@dataclass
class AuditRow:
    file: str
    category: str  # "all" for the whole file
    n: int
    mean_cos: float
    random_mean: float | None
    random_sd: float | None
    reference: str  # where the random subsets came from

    @property
    def z(self) -> float | None:
        if self.random_mean is None or not self.random_sd:
            return None
        return (self.random_mean - self.mean_cos) / self.random_sd


@dataclass
class AuditResult:
    embedder: str
    draws: int
    seed: int
    threshold: float
    rows: list[AuditRow] = field(default_factory=list)
    near_duplicates: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder,
            "draws": self.draws,
            "seed": self.seed,
            "threshold": self.threshold,
            "definition": "mean pairwise cosine similarity of L2-normalised embeddings over distinct pairs; "
            "z = (random mean - mean_cos) / random sd",
            "rows": [{**r.__dict__, "z": r.z} for r in self.rows],
            "near_duplicates": {f: [list(p) for p in pairs] for f, pairs in self.near_duplicates.items()},
        }


def embed_all(embedder: Embedder, groups: list[list[Sample]]) -> list[np.ndarray]:
    """Embed every group with one embedder call over the distinct texts."""
    index: dict[str, int] = {}
    for g in groups:
        for s in g:
            index.setdefault(sample_text(s), len(index))
    E = embedder.embed(list(index)) if index else np.zeros((0, 1), dtype=np.float32)
    return [E[[index[sample_text(s)] for s in g]] if g else E[:0] for g in groups]


def _baseline(ref: np.ndarray, size: int, draws: int, seed: int) -> tuple[float | None, float | None]:
    if size < 2 or ref.shape[0] <= size:
        return None, None
    return random_subset_baseline(ref, size, draws=draws, seed=seed)


def _category_reference(
    cat: str, size: int, P: np.ndarray | None, pool_cats: dict[str, list[int]], E: np.ndarray, pool_name: str
) -> tuple[np.ndarray | None, str]:
    """(rows to draw random subsets from, or None when there was no choice; the label)."""
    if P is None:
        return E, f"whole file ({len(E)})"
    if cat not in pool_cats:
        return P, f"{pool_name} ({len(P)}; no {cat} in it)"
    if len(pool_cats[cat]) <= size:
        return None, f"n/a ({pool_name}[{cat}] has {len(pool_cats[cat])}: no choice)"
    return P[pool_cats[cat]], f"{pool_name}[{cat}] ({len(pool_cats[cat])})"


def _stratified(
    cats: dict[str, list[int]], P: np.ndarray, pool_cats: dict[str, list[int]], draws: int, seed: int
) -> tuple[float | None, float | None]:
    groups = [P[pool_cats[c]] if c in pool_cats and len(pool_cats[c]) >= len(ix) else P for c, ix in cats.items()]
    sizes = [len(ix) for ix in cats.values()]
    if sum(sizes) < 2:
        return None, None
    return stratified_subset_baseline(groups, sizes, draws=draws, seed=seed)


def audit(
    files: dict[str, list[Sample]],
    embedder: Embedder,
    *,
    pool: list[Sample] | None = None,
    pool_name: str = "pool",
    draws: int = 20,
    seed: int = 0,
    threshold: float = 0.95,
) -> AuditResult:
    if draws < 10:
        raise InvalidInput("draws must be >= 10")
    names = list(files)
    groups = [files[n] for n in names] + ([pool] if pool else [])
    embedded = embed_all(embedder, groups)
    P = embedded[-1] if pool else None
    pool_cats = category_indices(pool) if pool else {}
    result = AuditResult(embedder=embedder.id, draws=draws, seed=seed, threshold=threshold)
    for name, samples, E in zip(names, groups, embedded, strict=False):
        cats = dict(sorted(category_indices(samples).items()))
        for cat, ix in cats.items():
            ref, ref_name = _category_reference(cat, len(ix), P, pool_cats, E, pool_name)
            m, sd = _baseline(ref, len(ix), draws, seed) if ref is not None else (None, None)
            if m is None and ref is not None:
                ref_name = f"n/a ({ref_name}: too small)"
            result.rows.append(AuditRow(name, cat, len(ix), mean_pairwise_cosine(E[ix]), m, sd, ref_name))
        if P is not None:
            m, sd = _stratified(cats, P, pool_cats, draws, seed)
            ref_name = f"{pool_name}, same count per category" if m is not None else "n/a"
        else:
            m, sd, ref_name = None, None, "n/a (no --pool)"
        result.rows.append(AuditRow(name, "all", len(samples), mean_pairwise_cosine(E), m, sd, ref_name))
        result.near_duplicates[name] = near_duplicates(E, [s.question_id for s in samples], threshold)
    return result


def plot(result: AuditResult, dest: str | Path) -> Path:
    """One panel per file: each category's mean cosine, and the random subsets' mean +- sd (needs matplotlib)."""
    require(*PLOT_NEEDS, "the audit plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = list(dict.fromkeys(r.file for r in result.rows))
    fig, axes = plt.subplots(len(files), 1, figsize=(10, 3.6 * len(files)), squeeze=False)
    for ax, f in zip(axes[:, 0], files, strict=True):
        rows = [r for r in result.rows if r.file == f]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r.mean_cos for r in rows], 0.4, label="this set")
        rm = [r.random_mean if r.random_mean is not None else math.nan for r in rows]
        rs = [r.random_sd if r.random_sd is not None else 0.0 for r in rows]
        ax.bar(x + 0.2, rm, 0.4, yerr=rs, capsize=3, alpha=0.6, label="random subsets (mean ± sd)")
        ax.set_xticks(x, [f"{r.category}\n(n={r.n})" for r in rows], fontsize=8)
        ax.set_ylabel("mean pairwise cosine")
        ax.set_title(f"{Path(f).name} — {result.embedder}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest
