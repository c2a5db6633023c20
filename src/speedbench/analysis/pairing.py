"""Compare two runs like for like: what differs between their manifests, which requests pair, and the
per-category comparison over the paired requests only.

Two runs are comparable when they ran the same prompts the same way: the same dataset content (hash), the
same selected question ids, the same output length, temperature and ignore_eos (``manifest_differences``
lists what differs; ``report A B`` refuses unless ``--force``).  Even then a request can fail in one run and
not in the other, so the comparison pairs records by (question_id, turn) and keeps only the keys present
and successful in both (``pair_records``); every other record is dropped from its side with one reason:
missing in the other run, failed in A, or failed in B.  ``compare_paired`` computes each category's and the
overall figures of both runs over the paired records only (``group_stats`` on each paired subset) and the
speedup = mean user tok/s of B / mean user tok/s of A over those requests, with the paired statistics of
``analysis.stats`` (95% intervals from a bootstrap over conversations, docs/statistics.md) of every row.
``compare_repeats`` gives the same statistics for several repeats of each side (the sweep's ``--repeats``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from speedbench.analysis.stats import RESAMPLES, PairedSample, combine_repeats, stats_by_category
from speedbench.metrics.aggregate import group_stats
from speedbench.metrics.models import GroupStats
from speedbench.records import RequestRecord
from speedbench.results.comparison import (
    FAILED_A,
    FAILED_B,
    MISSING,
    CategoryComparison,
    Comparison,
    Dropped,
    Key,
    ManifestDifference,
    Pairing,
)
from speedbench.results.estimates import PairedStats
from speedbench.results.loader import RunResult
from speedbench.results.manifest import Manifest

Side = Literal["a", "b"]


# ---- what must match ---------------------------------------------------------------------------------


def _output_len(m: Manifest) -> int | None:
    """The output length the run asked for: the configured one, else the engine's declared default."""
    if m.config.output_len is not None:
        return m.config.output_len
    default = m.engine.capabilities.get("default_output_len") if m.engine is not None else None
    return default if isinstance(default, int) else None


def _show_output_len(m: Manifest) -> str:
    if m.config.output_len is not None:
        return str(m.config.output_len)
    n = _output_len(m)
    return "the engine's default" + ("" if n is None else f" ({n})")


def _ids_side(ids: set[str], other: set[str]) -> str:
    only = sorted(ids - other)
    shown = ", ".join(only[:3]) + (", …" if len(only) > 3 else "")
    return f"{len(ids)} ids" + (f" ({len(only)} not in the other: {shown})" if only else "")


def manifest_differences(a: Manifest, b: Manifest) -> list[ManifestDifference]:
    """The settings that make two runs incomparable and differ: dataset content hash, selected question ids,
    output length, temperature, ignore_eos."""
    out: list[ManifestDifference] = []
    if a.dataset.content_hash != b.dataset.content_hash:
        out.append(ManifestDifference("dataset content hash", a.dataset.content_hash, b.dataset.content_hash))
    ids_a, ids_b = set(a.dataset.question_ids), set(b.dataset.question_ids)
    if ids_a != ids_b:
        out.append(ManifestDifference("selected question ids", _ids_side(ids_a, ids_b), _ids_side(ids_b, ids_a)))
    if _output_len(a) != _output_len(b):
        out.append(ManifestDifference("output length", _show_output_len(a), _show_output_len(b)))
    if a.config.temperature != b.config.temperature:
        out.append(ManifestDifference("temperature", str(a.config.temperature), str(b.config.temperature)))
    if a.config.ignore_eos != b.config.ignore_eos:
        out.append(ManifestDifference("ignore_eos", str(a.config.ignore_eos), str(b.config.ignore_eos)))
    return out


# ---- pairing -------------------------------------------------------------------------------------------


def by_key(records: Iterable[RequestRecord]) -> dict[Key, RequestRecord]:
    """Each (question_id, turn)'s record; the last one wins (a retried request's final attempt)."""
    return {(r.question_id, r.turn): r for r in records}


def _drop_reason(key: Key, mine: dict[Key, RequestRecord], other: dict[Key, RequestRecord], side: Side) -> str:
    if key not in other:
        return MISSING
    if not mine[key].ok:
        return FAILED_A if side == "a" else FAILED_B
    return FAILED_B if side == "a" else FAILED_A


def _dropped(mine: dict[Key, RequestRecord], other: dict[Key, RequestRecord], paired: set[Key], side: Side) -> Dropped:
    reasons = [_drop_reason(key, mine, other, side) for key in mine if key not in paired]
    return Dropped(reasons.count(MISSING), reasons.count(FAILED_A), reasons.count(FAILED_B))


def pair_records(
    a: Sequence[RequestRecord], b: Sequence[RequestRecord], differences: Sequence[ManifestDifference] = ()
) -> Pairing:
    """Pair two runs' records by (question_id, turn), keeping the keys present and successful in both."""
    ra, rb = by_key(a), by_key(b)
    keys = sorted(k for k in ra.keys() & rb.keys() if ra[k].ok and rb[k].ok)
    paired = set(keys)
    return Pairing(
        keys=tuple(keys),
        a=tuple(ra[k] for k in keys),
        b=tuple(rb[k] for k in keys),
        dropped_a=_dropped(ra, rb, paired, "a"),
        dropped_b=_dropped(rb, ra, paired, "b"),
        differences=tuple(differences),
    )


def pair_runs(a: RunResult, b: RunResult) -> Pairing:
    """Pair two loaded runs; the manifest differences travel with the pairing."""
    return pair_records(a.records, b.records, manifest_differences(a.manifest, b.manifest))


# ---- the comparison over the paired records ------------------------------------------------------------


def speedup(a: GroupStats, b: GroupStats) -> float | None:
    """Mean user tok/s of B over that of A (None when either has none)."""
    ua, ub = a.user_tps.mean, b.user_tps.mean
    return ub / ua if ua and ub else None


def _row(
    name: str, ra: Sequence[RequestRecord], rb: Sequence[RequestRecord], a: RunResult, b: RunResult, stats: PairedStats
) -> CategoryComparison:
    ga = group_stats(ra, a.manifest.basis)
    gb = group_stats(rb, b.manifest.basis)
    return CategoryComparison(name, len(ra), ga, gb, speedup(ga, gb), stats)


def _categories(a: RunResult, b: RunResult) -> list[str]:
    return sorted({r.category for r in (*a.records, *b.records)})


def compare_paired(
    a: RunResult, b: RunResult, pairing: Pairing | None = None, resamples: int = RESAMPLES, seed: int = 0
) -> Comparison:
    """Per category (A's category of each key; every category either run has, 0 paired included) and
    overall: both runs' figures over the paired records only, and the paired statistics with their intervals
    (``resamples`` bootstrap resamples of the conversations, seeded)."""
    pairing = pairing or pair_runs(a, b)
    cat_a: dict[str, list[RequestRecord]] = defaultdict(list)
    cat_b: dict[str, list[RequestRecord]] = defaultdict(list)
    for ra, rb in zip(pairing.a, pairing.b, strict=True):
        cat_a[ra.category].append(ra)
        cat_b[ra.category].append(rb)
    categories = _categories(a, b)
    ba, bb = a.manifest.basis, b.manifest.basis
    sample = combine_repeats([pairing.a], [pairing.b], ba, bb)
    stats = stats_by_category(sample, categories, resamples, seed)
    rows = tuple(_row(c, cat_a[c], cat_b[c], a, b, stats[c]) for c in categories)
    return Comparison(pairing, rows, _row("overall", pairing.a, pairing.b, a, b, stats["overall"]))


def repeats_sample(a_runs: Sequence[RunResult], b_runs: Sequence[RunResult]) -> PairedSample:
    """The paired sample of repeats of A against repeats of B (``stats.combine_repeats``); A's and B's decode
    basis (k, whether a chunk is a step) are those of their first repeat."""
    if not a_runs or not b_runs:
        raise ValueError("compare_repeats needs at least one run of each side")
    ma, mb = a_runs[0].manifest.basis, b_runs[0].manifest.basis
    return combine_repeats([r.records for r in a_runs], [r.records for r in b_runs], ma, mb)


def compare_repeats(
    a_runs: Sequence[RunResult], b_runs: Sequence[RunResult], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, PairedStats]:
    """The paired statistics of repeats of A against repeats of B (the same prompts, each repeat a run): per
    category and ``overall``, over the (question_id, turn) successful in every repeat of both; each resample
    draws each side's repeats as well as the conversations (``repeats_sample``, docs/statistics.md)."""
    sample = repeats_sample(a_runs, b_runs)
    categories = sorted({r.category for run in (*a_runs, *b_runs) for r in run.records})
    return stats_by_category(sample, categories, resamples, seed)
