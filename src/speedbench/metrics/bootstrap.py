"""The bootstrap's two primitives, shared by every interval speedbench computes: which units a resample draws
(``draw_counts``: how many times each of n units is drawn, n drawn with replacement, from one seeded generator)
and the percentile interval of the resampled values (``percentile_interval``).  ``analysis/stats.py`` builds the
paired comparisons on them (docs/statistics.md); ``metrics/drift.py`` the drift test of one run's measured window,
which summary.json carries (so it lives below ``results/``, which writes the summary)."""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def draw_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n): how many times each of n units is drawn when n are drawn with replacement."""
    idx = rng.integers(0, n, size=(resamples, n))
    flat = idx + n * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile interval (numpy's linear interpolation) of the finite resampled values; None when the
    statistic is undefined (not finite) in more than half of the resamples."""
    ok = values[np.isfinite(values)]
    if ok.size * 2 < values.size:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return float(lo), float(hi)
