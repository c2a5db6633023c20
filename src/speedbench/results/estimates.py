"""Point estimates with their 95% intervals, and one group's paired statistics: what ``analysis/stats.py``
computes (docs/statistics.md) and ``report/`` draws.  Plain frozen data with the few properties a reader needs
(significance, half-width, the conversations a narrower interval would take)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TARGET_HALF_WIDTH = 0.05  # the speedup half-width `report A B` says how many conversations would reach

# statistic name -> its null value (significance = the interval excludes it); None: a level, never "significant"
STATISTICS: dict[str, float | None] = {
    "speedup": 1.0,
    "ttft_ratio": 1.0,
    "e2e_ratio": 1.0,
    "system_tps_ratio": 1.0,
    "al_a": None,
    "al_b": None,
    "al_diff": 0.0,
}


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its interval (None: not known, or no interval); ``null``: the value of no effect
    (1 for a ratio, 0 for a difference, None for a level such as one run's AL)."""

    point: float | None
    lo: float | None = None
    hi: float | None = None
    null: float | None = None

    @property
    def significant(self) -> bool | None:
        """The interval excludes the null value (None: no interval, or a level)."""
        if self.null is None or self.lo is None or self.hi is None:
            return None
        return not self.lo <= self.null <= self.hi

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2


@dataclass(frozen=True)
class PairedStats:
    """The statistics of one group (a category or overall): ``estimates`` by name (``STATISTICS``);
    ``note`` says why there are no intervals when there are none."""

    conversations: int
    turns: int
    repeats: tuple[int, int]
    resamples: int
    seed: int
    estimates: dict[str, Estimate] = field(default_factory=dict)
    note: str = ""

    def __getitem__(self, name: str) -> Estimate:
        return self.estimates.get(name, Estimate(None, null=STATISTICS.get(name)))

    def conversations_needed(self, target_half_width: float = TARGET_HALF_WIDTH, name: str = "speedup") -> int | None:
        """About how many conversations this group needs for ``name``'s interval to be ± target wide."""
        hw = self[name].half_width
        return None if hw is None else prompts_needed(hw, self.conversations, target_half_width)


def prompts_needed(half_width_now: float, n_now: int, target_half_width: float) -> int:
    """Conversations needed for a target half-width: the half-width shrinks as 1/sqrt(n), so
    n ≈ n_now × (half_width_now / target)², rounded up (at least 2: the bootstrap needs a spread)."""
    if target_half_width <= 0:
        raise ValueError("target half-width must be positive")
    return max(2, math.ceil(n_now * (half_width_now / target_half_width) ** 2 - 1e-9))
