"""A comparison of two runs as ``report A B`` draws it: what differs between their manifests, which
(question_id, turn) paired and what was dropped from each side and why, and each category's figures of both runs
over the paired requests with their paired statistics.  Built by ``analysis/pairing.py``, drawn by ``report/``."""

from __future__ import annotations

from dataclasses import dataclass

from speedbench.metrics.models import GroupStats
from speedbench.records import RequestRecord
from speedbench.results.estimates import PairedStats

Key = tuple[str, int]  # (question_id, turn)

MISSING = "missing in the other run"
FAILED_A = "failed in A"
FAILED_B = "failed in B"
DROP_REASONS = (MISSING, FAILED_A, FAILED_B)


@dataclass(frozen=True)
class ManifestDifference:
    """One setting that differs between the runs, as each run has it."""

    field: str
    a: str
    b: str

    def __str__(self) -> str:
        return f"{self.field} {self.a} (A) vs {self.b} (B)"


@dataclass(frozen=True)
class Dropped:
    """Records of one run left out of the pairing, by reason (each record counted once: missing in the other
    run first, then its own failure, then the other run's)."""

    missing_in_other: int = 0
    failed_in_a: int = 0
    failed_in_b: int = 0

    @property
    def total(self) -> int:
        return self.missing_in_other + self.failed_in_a + self.failed_in_b

    def by_reason(self) -> dict[str, int]:
        return {MISSING: self.missing_in_other, FAILED_A: self.failed_in_a, FAILED_B: self.failed_in_b}

    def describe(self) -> str:
        """'3 (1 missing in the other run, 2 failed in A)'; '0' when nothing was dropped."""
        parts = [f"{n} {reason}" for reason, n in self.by_reason().items() if n]
        return f"{self.total} ({', '.join(parts)})" if parts else "0"


@dataclass(frozen=True)
class Pairing:
    """The (question_id, turn) present and successful in both runs, their records, and what was dropped."""

    keys: tuple[Key, ...]
    a: tuple[RequestRecord, ...]  # A's record of each paired key, in key order
    b: tuple[RequestRecord, ...]
    dropped_a: Dropped
    dropped_b: Dropped
    differences: tuple[ManifestDifference, ...] = ()

    @property
    def paired(self) -> int:
        return len(self.keys)

    def describe(self) -> str:
        return (
            f"paired {self.paired} (question_id, turn) present and successful in both runs; "
            f"dropped from A: {self.dropped_a.describe()}; dropped from B: {self.dropped_b.describe()}"
        )


@dataclass(frozen=True)
class CategoryComparison:
    """One category (or ``overall``): both runs' figures over the paired requests and the speedup."""

    category: str
    paired: int
    a: GroupStats
    b: GroupStats
    speedup: float | None  # mean user tok/s of B / of A over the paired requests
    stats: PairedStats  # every paired statistic with its interval (analysis.stats)


@dataclass(frozen=True)
class Comparison:
    pairing: Pairing
    per_category: tuple[CategoryComparison, ...]
    overall: CategoryComparison

    @property
    def rows(self) -> tuple[CategoryComparison, ...]:
        """The table's rows: each category, then overall."""
        return (*self.per_category, self.overall)
