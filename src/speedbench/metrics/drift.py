"""The drift test of one run's measured window (docs/metrics.md "Drift"): did the server get faster (a cold
server warming up) or slower during the run?

The successful requests of the measured window (the final attempt of each turn; warm-up requests are not
records) are ordered by (segment, start time); the first third is compared with the last third on each figure of
``DRIFT_FIGURES``, per request as the summary defines it (metrics/latency.py).  The statistic is the one
``report A B``'s ratios use: the ratio of the two means (last third over first), with a 95% percentile interval
from the same bootstrap (metrics/bootstrap.py): each third's conversations resampled with replacement, each
bringing its requests in that third, the two thirds drawn independently (generators spawned from one seed, as
``analysis.stats.unpaired_ratio`` does), ``RESAMPLES`` resamples, seed ``DRIFT_SEED``: the same records give the
same interval.

A figure **drifted** when its interval excludes 1 and the change is material: |ratio - 1| >= ``DRIFT_THRESHOLD``.
No verdict ("not tested", with the reason) with fewer than ``MIN_PER_THIRD`` requests a third, with fewer than 2
conversations in a third (the bootstrap resamples conversations), or when the run measured per-category counter
windows: those run the categories one after another, so its first and last thirds hold different categories,
whose TTFT and TPOT differ by themselves (prompt lengths, acceptance): a difference would not be the server's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from speedbench.metrics.bootstrap import LEVEL, RESAMPLES, draw_counts, percentile_interval
from speedbench.metrics.latency import tpot_s, ttft_s
from speedbench.metrics.models import Drift, DriftFigure
from speedbench.records import RequestRecord

DRIFT_THRESHOLD = 0.10  # a drift smaller than 10% (|last/first - 1|) is not reported, whatever its interval
MIN_PER_THIRD = 3  # requests in each third (9 successful requests in all) for a verdict
MIN_CONVERSATIONS = 2  # conversations in each third: one shows no spread to resample
DRIFT_SEED = 0  # the summary's drift intervals are always drawn with this seed (and RESAMPLES resamples)

DRIFT_DOC = "metrics.md#drift-of-the-measured-window"
SEQUENTIAL = (
    "per-category counter windows ran the categories one after another: the first and last thirds hold "
    "different categories, whose TTFT and TPOT differ by themselves, so a difference would not be the server's"
)


@dataclass(frozen=True)
class DriftSpec:
    """One figure the drift test compares: its key (``DriftFigure.name``), unit, label, definition link and its
    per-request value (None where a request has none: it is left out of that figure's means)."""

    name: str
    unit: str
    label: str
    doc: str
    value: Callable[[RequestRecord], float | None]


DRIFT_FIGURES: tuple[DriftSpec, ...] = (
    DriftSpec("ttft_s", "s", "TTFT", DRIFT_DOC, ttft_s),
    DriftSpec("tpot_s", "s", "TPOT", DRIFT_DOC, tpot_s),
)


def measured_order(records: Sequence[RequestRecord], closed_loop: bool = True) -> list[RequestRecord]:
    """The successful records by (segment, start time): each segment's client clock is its own process's.
    ``closed_loop``: each segment's burst and drain are left out (``steady``)."""
    ok = [r for r in records if r.ok]
    if closed_loop:
        ok = [r for seg in sorted({r.segment for r in ok}) for r in steady([r for r in ok if r.segment == seg])]
    return sorted(ok, key=lambda r: (r.segment, r.start_ns))


def steady(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """One closed-loop segment's requests that ran at its full concurrency: those that started after the number
    in flight first reached its peak (the first burst, started together and prefilled in one batch, is left out)
    and ended before it fell below the peak for good (the drain, at falling concurrency, is left out).  Both run
    in another state than the rest in any run, warm or cold.  A peak of 1 (one request at a time) leaves all."""
    events = sorted([(r.start_ns, 1) for r in records] + [(r.end_ns, -1) for r in records])  # ends first on a tie
    level, levels = 0, []
    for t, step in events:
        level += step
        levels.append((t, level))
    peak = max((lv for _, lv in levels), default=0)
    if peak <= 1:
        return list(records)
    up = next(t for t, lv in levels if lv == peak)
    last_full = max(i for i, (_, lv) in enumerate(levels) if lv == peak)
    down = levels[last_full + 1][0] if last_full + 1 < len(levels) else levels[-1][0]
    return [r for r in records if r.start_ns > up and r.end_ns <= down]


def thirds(
    records: Sequence[RequestRecord], closed_loop: bool = True
) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """The first and the last third (n // 3 each) of the successful records in measured order."""
    ordered = measured_order(records, closed_loop)
    n = len(ordered) // 3
    return ordered[:n], ordered[len(ordered) - n :]


@dataclass(frozen=True)
class _Third:
    """One third's per-conversation sums and counts of each figure (arrays of shape (conversations,))."""

    conversations: int
    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]

    @classmethod
    def of(cls, records: Sequence[RequestRecord]) -> _Third:
        ids = sorted({r.question_id for r in records})
        col = {q: i for i, q in enumerate(ids)}
        sums = {f.name: np.zeros(len(ids)) for f in DRIFT_FIGURES}
        counts = {f.name: np.zeros(len(ids)) for f in DRIFT_FIGURES}
        for r in records:
            for f in DRIFT_FIGURES:
                v = f.value(r)
                if v is not None:
                    sums[f.name][col[r.question_id]] += v
                    counts[f.name][col[r.question_id]] += 1
        return cls(len(ids), sums, counts)

    def mean(self, name: str) -> float | None:
        n = self.counts[name].sum()
        return float(self.sums[name].sum() / n) if n > 0 else None

    def resampled(self, name: str, w: np.ndarray) -> np.ndarray:
        """The figure's mean in each resample (w: draw counts, (resamples, conversations)); nan when empty."""
        num, den = w @ self.sums[name], w @ self.counts[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def drift(
    records: Sequence[RequestRecord],
    sequential_categories: bool = False,
    closed_loop: bool = True,
    resamples: int = RESAMPLES,
    seed: int = DRIFT_SEED,
    level: float = LEVEL,
) -> Drift:
    """The drift test of the run's records (the final attempt of each turn); ``sequential_categories``: the run
    measured per-category counter windows (manifest ``measurement.mode``), which is never tested; ``closed_loop``:
    a fixed number of requests in flight (no ``--request-rate``: the default), whose burst and drain are left
    out."""
    ok = measured_order(records, closed_loop)
    if sequential_categories:
        return Drift(tested=False, why=SEQUENTIAL, threshold=DRIFT_THRESHOLD)
    first, last = thirds(ok, closed_loop=False)  # ok is already trimmed
    if len(first) < MIN_PER_THIRD:
        left_out = sum(r.ok for r in records) - len(ok)
        burst = f" at full concurrency ({left_out} more in the burst and drain left out)" if left_out else ""
        return Drift(
            tested=False,
            why=f"{len(ok)} successful requests{burst}: the test needs at least {3 * MIN_PER_THIRD} "
            f"({MIN_PER_THIRD} in each third)",
            per_third=len(first),
            threshold=DRIFT_THRESHOLD,
        )
    a, b = _Third.of(first), _Third.of(last)
    n = len(first)
    if min(a.conversations, b.conversations) < MIN_CONVERSATIONS:
        why = (
            f"the first third holds {a.conversations} conversation(s), the last {b.conversations}: the test needs "
            f"at least {MIN_CONVERSATIONS} in each (the bootstrap resamples conversations)"
        )
        figs = [_untested(f.name, a, b) for f in DRIFT_FIGURES]
        return Drift(tested=False, why=why, per_third=n, threshold=DRIFT_THRESHOLD, figures=figs)
    ga, gb = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    wa, wb = draw_counts(ga, a.conversations, resamples), draw_counts(gb, b.conversations, resamples)
    figures = []
    for f in DRIFT_FIGURES:
        fig = _untested(f.name, a, b)
        if fig.ratio is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = b.resampled(f.name, wb) / a.resampled(f.name, wa)
            interval = percentile_interval(ratios, level)
            if interval is not None:
                lo, hi = interval
                material = abs(fig.ratio - 1.0) >= DRIFT_THRESHOLD
                fig = fig.model_copy(update={"ci_low": lo, "ci_high": hi, "drifted": material and not lo <= 1 <= hi})
        figures.append(fig)
    tested = any(fig.ci_low is not None for fig in figures)
    untested = None if tested else "no figure has values in both thirds to draw an interval from"
    drifted = any(f.drifted for f in figures)
    return Drift(tested=tested, why=untested, per_third=n, threshold=DRIFT_THRESHOLD, figures=figures, drifted=drifted)


def _untested(name: str, a: _Third, b: _Third) -> DriftFigure:
    first, last = a.mean(name), b.mean(name)
    ratio = last / first if first and last is not None else None
    return DriftFigure(name=name, first=first, last=last, ratio=ratio)
