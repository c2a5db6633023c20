"""Paired statistics of two runs (A = baseline, B = the other): point estimates and 95% intervals from a
bootstrap over conversations that keeps the pairing (docs/statistics.md).

What is resampled: conversations (question ids), with replacement, each drawn conversation bringing all its
paired (question_id, turn) records of both runs.  Turns of one conversation share a prompt, a history and
often a speedup, so they are not independent; resampling turns would understate the interval.

The statistics (each B over A; the point estimate is the statistic of the sample itself):

- ``speedup``: mean user tok/s of B / mean user tok/s of A (``metrics.latency.user_tps`` per request, the
  mean over the requests that have one): the comparison table's speedup, > 1 = B faster per user;
- ``ttft_ratio``: mean TTFT of B / of A (< 1 = B faster to the first token);
- ``e2e_ratio``: mean end-to-end latency of B / of A (< 1 = B faster);
- ``system_tps_ratio``: system output tok/s of B / of A, each side's = Σ output tokens / Σ E2E of the
  resampled requests × the run's occupancy (Σ E2E / (last end − first start) of all its paired requests:
  the mean number of requests in flight, fixed per run), so that on the whole sample it is the run's output
  tok/s over its paired requests;
- ``al_a``, ``al_b``: AL of each run (macro: mean over requests of 1 + accepted/steps, the comparison
  table's AL) with its own interval, and ``al_diff`` = AL of B − AL of A.

The interval is the 2.5th-97.5th percentile of the statistic over the resamples (percentile bootstrap).
A ratio is significant when its interval excludes 1.0, a difference when it excludes 0.

Repeats (``combine_repeats``): each side may hold several runs of the same configuration on the same
prompts.  Each resample then also draws, per side, as many repeats as it has, with replacement (a two-way
bootstrap of conversations crossed with repeats; the repeat weights' spread scaled by sqrt(R / (R - 1)) so that
it is not understated with few repeats): the interval covers run-to-run spread as well as prompt sampling.  With
one repeat per side it is the plain conversation bootstrap.

Everything is computed from per-conversation sums (arrays of shape (repeats, conversations)), so a resample is
a weighted sum: 2,000 resamples of 100 conversations take tens of milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.bootstrap import LEVEL, RESAMPLES, draw_counts, percentile_interval
from speedbench.metrics.latency import e2e_s, ttft_s, user_tps
from speedbench.metrics.sources import DecodeBasis, request_stats
from speedbench.records import RequestRecord
from speedbench.results.estimates import STATISTICS, Estimate, PairedStats

Array = np.ndarray
Key = tuple[str, int]  # (question_id, turn)

# per-conversation sums of one side: (sum, count) of each per-request mean, and output tokens
COMPONENTS = ("tps_sum", "tps_n", "ttft_sum", "ttft_n", "e2e_sum", "e2e_n", "tokens", "al_sum", "al_n")

NO_PAIRS = "no paired conversation"
ONE_CONVERSATION = (
    "1 conversation: no interval (the bootstrap resamples conversations; one conversation shows no spread "
    "between conversations)"
)


# ---- per-request values and per-conversation sums ------------------------------------------------------


def request_values(r: RequestRecord, basis: DecodeBasis) -> dict[str, float | None]:
    """One successful request's figures: user tok/s, TTFT and E2E (s), output tokens, AL (engine steps)."""
    s = request_stats(r, basis)
    return {
        "tps": user_tps(r),
        "ttft": ttft_s(r),
        "e2e": e2e_s(r),
        "tokens": float(r.tokens),
        "al": acceptance_length(s.accepted, s.steps) if s is not None else None,
    }


def conversation_sums(conversations: Sequence[Sequence[RequestRecord]], basis: DecodeBasis) -> dict[str, Array]:
    """Each conversation's sums (``COMPONENTS``, arrays of shape (conversations,)): for each per-request mean,
    the sum of the values it has and how many it has (a request without a value, e.g. no user tok/s for a
    1-token reply, is left out of that mean only, as ``group_stats`` does)."""
    out = {c: np.zeros(len(conversations)) for c in COMPONENTS}
    for i, records in enumerate(conversations):
        for r in records:
            v = request_values(r, basis)
            out["tokens"][i] += v["tokens"] or 0.0
            for name in ("tps", "ttft", "e2e", "al"):
                x = v[name]
                if x is not None:
                    out[f"{name}_sum"][i] += x
                    out[f"{name}_n"][i] += 1
    return out


def occupancy(records: Sequence[RequestRecord]) -> float:
    """Mean requests in flight over the records' span: Σ E2E / (last end − first start); nan when no span."""
    if not records:
        return math.nan
    span = max(r.end_ns for r in records) - min(r.start_ns for r in records)
    return sum(e2e_s(r) for r in records) / (span / 1e9) if span > 0 else math.nan


# ---- the sample -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One run's (or one configuration's repeats') per-conversation sums: each array (repeats, conversations);
    ``occupancy`` (repeats,): each repeat's mean requests in flight over its paired requests."""

    sums: Mapping[str, Array]
    occupancy: Array

    @property
    def repeats(self) -> int:
        return int(self.occupancy.shape[0])

    def take(self, columns: Array) -> Side:
        return Side({c: v[:, columns] for c, v in self.sums.items()}, self.occupancy)


@dataclass(frozen=True)
class PairedSample:
    """The paired conversations of two sides: their ids and categories (A's), the paired (question_id, turn)
    count (the same in every repeat), and each side's sums."""

    conversations: tuple[str, ...]
    categories: tuple[str, ...]
    turns: int
    a: Side
    b: Side

    def category(self, name: str) -> PairedSample:
        """The conversations of one category (occupancy stays the run's: it is a property of the whole run)."""
        cols = np.array([i for i, c in enumerate(self.categories) if c == name], dtype=int)
        n_turns = self.turns_per_conversation[cols].sum() if cols.size else 0
        return PairedSample(
            tuple(self.conversations[i] for i in cols),
            tuple(self.categories[i] for i in cols),
            int(n_turns),
            self.a.take(cols),
            self.b.take(cols),
        )

    @property
    def turns_per_conversation(self) -> Array:
        return self.a.sums["e2e_n"][0] if self.a.repeats else np.zeros(0)


def _by_key(records: Sequence[RequestRecord]) -> dict[Key, RequestRecord]:
    return {(r.question_id, r.turn): r for r in records}


def combine_repeats(
    a_repeats: Sequence[Sequence[RequestRecord]],
    b_repeats: Sequence[Sequence[RequestRecord]],
    basis_a: DecodeBasis,
    basis_b: DecodeBasis,
) -> PairedSample:
    """The paired sample of several repeats of A and of B on the same prompts: the (question_id, turn)
    successful in every repeat of both sides (for a key recorded more than once, its last record), grouped
    into conversations (A's category of the conversation's first turn).  One repeat each: ``report A B``."""
    if not a_repeats or not b_repeats:
        raise ValueError("combine_repeats needs at least one repeat of each side")
    runs = [_by_key(rs) for rs in (*a_repeats, *b_repeats)]
    keys = sorted(set.intersection(*(set(k for k, r in run.items() if r.ok) for run in runs)))
    conv_ids = sorted({q for q, _ in keys})
    col = {q: i for i, q in enumerate(conv_ids)}
    first = _by_key(a_repeats[0])
    first_turn: dict[str, Key] = {}
    for key in keys:  # sorted: a conversation's first paired turn comes first
        first_turn.setdefault(key[0], key)
    categories = tuple(first[first_turn[q]].category for q in conv_ids)

    def side(repeats: Sequence[Sequence[RequestRecord]], basis: DecodeBasis) -> Side:
        rows = []
        occ = []
        for rs in repeats:
            run = _by_key(rs)
            grouped: list[list[RequestRecord]] = [[] for _ in conv_ids]
            for key in keys:
                grouped[col[key[0]]].append(run[key])
            rows.append(conversation_sums(grouped, basis))
            occ.append(occupancy([run[key] for key in keys]))
        return Side({c: np.stack([r[c] for r in rows]) for c in COMPONENTS}, np.asarray(occ, dtype=float))

    return PairedSample(tuple(conv_ids), categories, len(keys), side(a_repeats, basis_a), side(b_repeats, basis_b))


# ---- statistics of weighted sums ------------------------------------------------------------------------


def _div(num: Array, den: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted(side: Side, w_rep: Array, w_conv: Array) -> dict[str, Array]:
    """Each component summed over the drawn repeats and conversations: w_rep (B, R) and w_conv (B, C) weigh each
    repeat / conversation in each of B resamples (how many times it was drawn; ``repeat_weights`` for repeats);
    returns arrays of shape (B,)."""
    return {c: ((w_rep @ v) * w_conv).sum(axis=1) for c, v in side.sums.items()}


def side_figures(sums: Mapping[str, Array], occ: Array) -> dict[str, Array]:
    """One side's means from summed components (``occ``: the drawn repeats' mean occupancy)."""
    return {
        "user_tps": _div(sums["tps_sum"], sums["tps_n"]),
        "ttft": _div(sums["ttft_sum"], sums["ttft_n"]),
        "e2e": _div(sums["e2e_sum"], sums["e2e_n"]),
        "system_tps": _div(sums["tokens"], sums["e2e_sum"]) * occ,
        "al": _div(sums["al_sum"], sums["al_n"]),
    }


def paired_statistics(a: Mapping[str, Array], b: Mapping[str, Array]) -> dict[str, Array]:
    """Every statistic of ``STATISTICS`` from the two sides' figures (B over A)."""
    return {
        "speedup": _div(b["user_tps"], a["user_tps"]),
        "ttft_ratio": _div(b["ttft"], a["ttft"]),
        "e2e_ratio": _div(b["e2e"], a["e2e"]),
        "system_tps_ratio": _div(b["system_tps"], a["system_tps"]),
        "al_a": a["al"],
        "al_b": b["al"],
        "al_diff": b["al"] - a["al"],
    }


def resample_statistics(sample: PairedSample, w_conv: Array, w_rep_a: Array, w_rep_b: Array) -> dict[str, Array]:
    """The statistics of B weighted resamples (weights: draw counts, as in ``_weighted``)."""
    figs = []
    for side, w_rep in ((sample.a, w_rep_a), (sample.b, w_rep_b)):
        occ = _div(w_rep @ side.occupancy, w_rep.sum(axis=1))  # nan when a repeat has no span
        figs.append(side_figures(_weighted(side, w_rep, w_conv), occ))
    return paired_statistics(figs[0], figs[1])


def repeat_weights(rng: np.random.Generator, repeats: int, resamples: int) -> Array:
    """(resamples, repeats): each side's repeat weights.  The draw counts of R repeats drawn with replacement,
    their deviation from 1 scaled by sqrt(R / (R - 1)): a resample's repeat mean then varies as much as the
    mean of R repeats does (s² / R), where plain draw counts give (R - 1) / R of it (half with 2 repeats).
    Weights still sum to R.  One repeat: weight 1, nothing drawn."""
    if repeats < 2:
        return np.ones((resamples, 1))
    counts = draw_counts(rng, repeats, resamples)
    return 1.0 + math.sqrt(repeats / (repeats - 1)) * (counts - 1.0)


# ---- estimates --------------------------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def bootstrap(sample: PairedSample, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> PairedStats:
    """Point estimates and percentile intervals of every statistic over ``resamples`` paired resamples of the
    conversations (and of each side's repeats when it has several), seeded.  Fewer than 2 conversations: point
    estimates only (``note`` says why).  A statistic undefined in more than half of the resamples (its
    denominator drawn empty) gets no interval."""
    n = len(sample.conversations)

    def result(estimates: dict[str, Estimate], note: str = "") -> PairedStats:
        repeats = (sample.a.repeats, sample.b.repeats)
        return PairedStats(n, sample.turns, repeats, resamples, seed, estimates, note)

    if n == 0:
        return result({}, NO_PAIRS)
    point = point_statistics(sample)
    if n < 2:
        return result({k: Estimate(_finite(v), null=STATISTICS[k]) for k, v in point.items()}, ONE_CONVERSATION)
    stats = resampled_statistics(sample, resamples, np.random.default_rng(seed))
    return result({name: _estimate(name, point[name], values, level) for name, values in stats.items()})


def point_statistics(sample: PairedSample) -> dict[str, float]:
    """Every statistic of the sample itself (each conversation and repeat once)."""
    n = len(sample.conversations)
    ones = np.ones((1, n))
    point = resample_statistics(sample, ones, np.ones((1, sample.a.repeats)), np.ones((1, sample.b.repeats)))
    return {k: float(v[0]) for k, v in point.items()}


def resampled_statistics(sample: PairedSample, resamples: int, rng: np.random.Generator) -> dict[str, Array]:
    """Every statistic over ``resamples`` paired resamples drawn from ``rng`` (conversations, and each side's
    repeats when it has several): arrays of shape (resamples,)."""
    w_conv = draw_counts(rng, len(sample.conversations), resamples)
    w_rep = [repeat_weights(rng, r, resamples) for r in (sample.a.repeats, sample.b.repeats)]
    return resample_statistics(sample, w_conv, w_rep[0], w_rep[1])


def unpaired_ratio(
    x: PairedSample, y: PairedSample, name: str, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Estimate:
    """The ratio of one statistic between two samples of **different** prompts (y over x, e.g. the speedup on
    random-token prompts over the speedup on real ones): nothing pairs them, so each side is resampled on its
    own (independent generators spawned from ``seed``), each with its own paired bootstrap inside, and the
    interval is the percentile interval of the ratio of the two resampled statistics.  Null 1.0: significant =
    the two prompt sets give different values.  No interval with fewer than 2 conversations on a side."""
    px, py = point_statistics(x).get(name), point_statistics(y).get(name)
    point = py / px if px and py is not None and np.isfinite(px) and np.isfinite(py) else math.nan
    if len(x.conversations) < 2 or len(y.conversations) < 2:
        return Estimate(_finite(point), null=1.0)
    gx, gy = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    vx = resampled_statistics(x, resamples, gx)[name]
    vy = resampled_statistics(y, resamples, gy)[name]
    return percentile_estimate(point, _div(vy, vx), level, 1.0)


def percentile_estimate(point: float, values: Array, level: float, null: float | None) -> Estimate:
    """The point and the percentile interval of the resampled values (none when the point is undefined, or the
    statistic is undefined in more than half of the resamples)."""
    p = _finite(point)
    interval = percentile_interval(values, level) if p is not None else None
    if p is None or interval is None:
        return Estimate(p, null=null)
    return Estimate(p, *interval, null)


def _estimate(name: str, point: float, values: Array, level: float) -> Estimate:
    return percentile_estimate(point, values, level, STATISTICS[name])


def stats_by_category(
    sample: PairedSample, categories: Sequence[str], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, PairedStats]:
    """``bootstrap`` of each category's conversations (every name in ``categories``, 0 paired included) and of
    all of them, keyed ``overall``, each with the same seed (a category's interval does not depend on which
    other categories there are)."""
    out = {c: bootstrap(sample.category(c), resamples, seed) for c in categories}
    out["overall"] = bootstrap(sample, resamples, seed)
    return out


def al_by_category(
    records: Sequence[RequestRecord],
    basis: DecodeBasis,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Estimate]:
    """One run's macro AL (mean over successful requests of 1 + accepted/steps) per category and ``overall``, each
    with a percentile interval over ``resamples`` resamples of its conversations (the same seed for every group).
    Fewer than 2 conversations with an AL: the point only."""
    by_conv: dict[str, list[RequestRecord]] = {}
    for r in records:
        if r.ok:
            by_conv.setdefault(r.question_id, []).append(r)
    ids = sorted(by_conv)
    sums = conversation_sums([by_conv[i] for i in ids], basis)
    cats = [by_conv[i][0].category for i in ids]
    groups = {c: [j for j, x in enumerate(cats) if x == c] for c in sorted(set(cats))}
    groups["overall"] = list(range(len(ids)))
    out: dict[str, Estimate] = {}
    for name, cols in groups.items():
        num, den = sums["al_sum"][cols], sums["al_n"][cols]
        point = num.sum() / den.sum() if den.sum() > 0 else math.nan
        if not np.isfinite(point) or int((den > 0).sum()) < 2:
            out[name] = Estimate(_finite(point))
            continue
        w = draw_counts(np.random.default_rng(seed), len(cols), resamples)
        out[name] = percentile_estimate(point, _div(w @ num, w @ den), level, None)
    return out
