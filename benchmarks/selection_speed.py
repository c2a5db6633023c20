"""Time diversity selection (greedy, greedy+swap, qp) for a large candidate pool.

Embeddings are synthetic (anisotropic Gaussian rows, L2-normalised, like sentence embeddings whose
pairwise cosine is positive on average) so the figure is the selection's cost alone; embedding time
depends on the embedder (MiniLM ~36 texts/s on 2 cores) and is cached on disk.

    .venv/bin/python benchmarks/selection_speed.py                      # 20,000 candidates, 11 categories, k=80, d=384
    .venv/bin/python benchmarks/selection_speed.py --n 20000 --categories 1 --k 80
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from speedbench.data.builders.select import select
from speedbench.data.sample import CATEGORIES, Sample
from speedbench.embed.diversity import random_subset_baseline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--categories", type=int, default=11)
    ap.add_argument("--k", type=int, default=80)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--methods", default="greedy,greedy+swap,qp")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.dim)).astype(np.float32) * np.linspace(2.0, 0.2, args.dim) + 1.0
    E = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    cats = [CATEGORIES[i % args.categories] for i in range(args.n)]
    samples = [Sample(str(i), c, None, ("x",), None, None, None, False) for i, c in enumerate(cats)]
    print(
        f"{args.n} candidates in {args.categories} categories (~{args.n // args.categories} each), "
        f"k={args.k}, dim={args.dim}"
    )
    rand = [
        random_subset_baseline(E[np.flatnonzero(np.asarray(cats) == c)], args.k, draws=10, seed=0)[0]
        for c in sorted(set(cats))
    ]
    print(f"  random subsets: mean pairwise cosine {np.mean(rand):.4f}")
    for m in args.methods.split(","):
        t0 = time.perf_counter()
        _, sel = select(samples, E, k=args.k, method=m, seed=0)
        dt = time.perf_counter() - t0
        mean_cos = np.mean([c.mean_cosine for c in sel.categories])
        swaps = sum(c.swaps for c in sel.categories)
        print(f"  {m:12s} {dt:7.2f} s  mean pairwise cosine {mean_cos:.4f}  swaps {swaps}")


if __name__ == "__main__":
    main()
