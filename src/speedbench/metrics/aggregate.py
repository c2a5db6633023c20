"""Aggregate records into typed results (RunSummary = summary.json, see docs/results.md).

Small functions that the analysis layer calls on any subset of records (a category, a bootstrap
resample): ``group_acceptance`` and ``group_timing`` (and ``group_stats`` combining them with the figures
metrics/figures.py computes on their own), the run-level
acceptance with its source choice (``overall_acceptance``), the counter deltas per measured window
(``window_deltas``) and the cross-checks (``cross_checks``); ``summarize`` composes them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from speedbench.metrics import invariants as inv
from speedbench.metrics.acceptance import acceptance_length, acceptance_stats, step_figures, sum_stats
from speedbench.metrics.counters import counter_delta
from speedbench.metrics.figures import computed
from speedbench.metrics.latency import distribution, e2e_s, itl_s, output_tps, step_times_s, tpot_s, ttft_s, user_tps
from speedbench.metrics.models import (
    AcceptanceStats,
    CountStats,
    GroupStats,
    Invariant,
    RunSummary,
    SDTotals,
    Sources,
    TimingStats,
)
from speedbench.metrics.sources import DecodeBasis, DecodeSteps, chunk_stats, decode_steps, request_stats
from speedbench.records import RequestRecord, SDStats

Pair = tuple[RequestRecord, SDStats]


def request_pairs(records: Sequence[RequestRecord], basis: DecodeBasis) -> list[Pair]:
    """(record, its acceptance stats) for each successful request that has stats from its best source."""
    out: list[Pair] = []
    for r in records:
        if r.ok and (s := request_stats(r, basis)) is not None:
            out.append((r, s))
    return out


def decode_items(records: Sequence[RequestRecord], basis: DecodeBasis) -> list[DecodeSteps]:
    """Each successful request's decode steps on the one definition (sources.decode_steps)."""
    return [decode_steps(r, request_stats(r, basis), basis) for r in records if r.ok]


def group_acceptance(records: Sequence[RequestRecord], basis: DecodeBasis) -> AcceptanceStats:
    """Acceptance of the successful requests among ``records`` from their per-request sources, with the
    engine-independent step figures (AL over drafted steps, tokens per decode step, undrafted share)."""
    acc = acceptance_stats([s for _, s in request_pairs(records, basis)], basis.k)
    return acc.model_copy(update=step_figures(decode_items(records, basis)))


def group_timing(records: Sequence[RequestRecord], basis: DecodeBasis) -> TimingStats:
    """Client-timestamp figures of the successful requests.  Step time only where a chunk is a step."""
    ok = [r for r in records if r.ok]
    return TimingStats(
        ttft_s=distribution(ttft_s(r) for r in ok),
        tpot_s=distribution(tpot_s(r) for r in ok),
        itl_s=distribution(v for r in ok for v in itl_s(r)),
        step_time_s=distribution(v for r in ok for v in step_times_s(r))
        if basis.chunks_are_steps
        else distribution([]),
        e2e_s=distribution(e2e_s(r) for r in ok),
        user_tps=distribution(user_tps(r) for r in ok),
        output_tps=output_tps(ok),
        output_tokens=sum(r.tokens for r in ok),
    )


def group_counts(records: Sequence[RequestRecord]) -> CountStats:
    ok = sum(1 for r in records if r.ok)
    return CountStats(requests=ok, errors=len(records) - ok)


def group_stats(records: Sequence[RequestRecord], basis: DecodeBasis) -> GroupStats:
    """Counts, acceptance (per-request sources), timing and the figures computed on their own of any group."""
    return GroupStats.combine(
        group_counts(records), group_acceptance(records, basis), group_timing(records, basis), computed(records, basis)
    )


def window_deltas(counter_windows: Sequence[dict[str, Any]]) -> dict[int, SDStats]:
    """Counter delta per measured window (a resumed run has one window per segment)."""
    deltas: dict[int, SDStats] = {}
    for w in counter_windows:
        d = counter_delta(w.get("before"), w.get("after"))
        if d is not None:
            deltas[int(w.get("segment", 0))] = d
    return deltas


@dataclass(frozen=True)
class OverallAcceptance:
    stats: AcceptanceStats
    source: str  # the run-level figures' source
    per_position_source: str  # where the per-position figures came from


def overall_acceptance(
    pairs: Sequence[Pair], n_ok: int, total_delta: SDStats | None, k: int, steps: Sequence[DecodeSteps] = ()
) -> OverallAcceptance:
    """Run-level acceptance: per-request stats when every ok request has them, else the counter delta
    (macro AL still from the requests), else whatever per-request source there is (chunks).  Per-position
    figures missing from the requests (llama.cpp) come from the counters when they have them.  With no
    successful request there are no figures (source ``none``): whatever the counters saw was the work of
    failed requests (or other traffic), not this run's acceptance; it stays in ``counter_delta``.

    The step figures come from ``steps`` (every ok request's ``DecodeSteps``); when the requests do not tell
    their drafted steps (llama.cpp, chunks alone) the token-weighted AL over drafted steps comes from the
    counters, whose steps are the steps that drafted (vLLM's ``num_drafts``), unless the adapter inferred them."""
    if n_ok == 0:
        return OverallAcceptance(acceptance_stats([], k), "none", "none")
    stats = [s for _, s in pairs]
    req_sources = sorted({s.source for s in stats})
    source = "none"
    if pairs and req_sources == ["per_request"] and len(pairs) == n_ok:
        source = "per_request"
    elif total_delta is not None and total_delta.steps > 0:
        source = "counter_delta"
    elif pairs:
        source = req_sources[0] if len(req_sources) == 1 else "+".join(req_sources)

    acc = acceptance_stats(stats, k)
    if source == "counter_delta" and total_delta is not None:
        # run-level figures from the counters; the macro (per-request) AL needs per-request data
        acc = acceptance_stats([total_delta], k).model_copy(update={"acceptance_length": acc.acceptance_length})
    per_position_source = source if acc.conditional_acceptance_rate else "none"
    if not acc.conditional_acceptance_rate and total_delta is not None and total_delta.per_position:
        c = acceptance_stats([total_delta], k)
        acc = acc.model_copy(
            update={
                "conditional_acceptance_rate": c.conditional_acceptance_rate,
                "joint_acceptance_rate": c.joint_acceptance_rate,
                "histogram": c.histogram,
            }
        )
        per_position_source = "counter_delta"
    acc = acc.model_copy(update=step_figures(steps))
    if (
        acc.drafted_steps is None
        and total_delta is not None
        and total_delta.steps > 0
        and "steps" not in total_delta.inferred
    ):
        acc = acc.model_copy(
            update={
                "acceptance_length_drafted_steps_token_weighted": acceptance_length(
                    total_delta.accepted, total_delta.steps
                ),
                "drafted_steps": total_delta.steps,
                "drafted_steps_source": "counter_delta",
            }
        )
    return OverallAcceptance(acc, source, per_position_source)


def per_request_checks(pairs: Sequence[Pair], basis: DecodeBasis) -> list[Invariant]:
    """Checks of each request's own figures."""
    return [
        inv.al_bounded(pairs, basis.k),
        inv.histogram_sums(pairs),
        inv.tokens_match_steps([(r, s) for r, s in pairs if s.source == "per_request"], basis),
    ]


def cross_checks(
    records: Sequence[RequestRecord],
    deltas: dict[int, SDStats],
    basis: DecodeBasis,
    max_tokens: int | None = None,
    superseded: Sequence[RequestRecord] = (),
) -> list[Invariant]:
    """The three sources compared per measured window: per-request totals, counter deltas and the chunk
    estimate (engines that stream one chunk per step).  A source is only summed over a segment when
    every ok request of it has that source, so partial sums never pass for disagreement.  The counters also
    hold the failed requests' work, allowed per ``invariants.failed_work`` (``max_tokens``: the per-request
    output limit; None: taken from the replies), and the failed attempts a ``--resume`` retried (``superseded``):
    the server did their work in the segment that sent them."""
    k = basis.k
    ok = [r for r in records if r.ok]
    sent = [*records, *superseded]
    limit = inv.output_limit(sent, max_tokens)
    out: list[Invariant] = []
    for seg in sorted(set(deltas) | {r.segment for r in ok}):
        seg_ok = [r for r in ok if r.segment == seg]
        seg_records = [r for r in sent if r.segment == seg]
        req_pairs = [(r, r.sd) for r in seg_ok if r.sd is not None and r.sd.source == "per_request"]
        req_stats = [s for _, s in req_pairs]
        seg_req = sum_stats(req_stats) if req_stats and len(req_stats) == len(seg_ok) else None
        account = inv.step_account(req_pairs if seg_req is not None else [], basis)
        failed = inv.failed_work(seg_records, basis, limit)
        seg_chunks = None
        if basis.chunks_are_steps and k > 0:
            ch = [chunk_stats(r, k) for r in seg_ok]
            if ch and all(c is not None for c in ch):
                seg_chunks = sum_stats([c for c in ch if c is not None])
        d = deltas.get(seg)
        if d is not None:
            out.append(inv.per_request_vs_counters(seg_req, d, seg, failed))
            out.append(inv.counters_within_traffic(d, seg_records, seg, k, failed))
        if seg_chunks is not None and (seg_req is not None or d is not None):
            if d is not None:
                out.append(inv.chunks_vs(d, "counter_delta", seg_chunks, seg, len(seg_ok), k, account, failed))
            if seg_req is not None:
                out.append(inv.chunks_vs(seg_req, "per_request", seg_chunks, seg, len(seg_ok), k, account))
    return out


def per_category(records: Sequence[RequestRecord], basis: DecodeBasis) -> dict[str, GroupStats]:
    """Group stats per category, sorted by name; a category whose requests all failed is listed too."""
    by_cat: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_cat[r.category].append(r)
    return {cat: group_stats(by_cat[cat], basis) for cat in sorted(by_cat)}


def _totals(delta: SDStats | None) -> SDTotals | None:
    """summary.json's counter_delta.  Counters never say which steps drafted nothing (vLLM's count only the
    steps that drafted), so ``undrafted_steps`` is not one of its keys."""
    if delta is None:
        return None
    d = delta.to_dict()
    d.pop("undrafted_steps", None)
    return SDTotals(**d)


def summarize(
    records: Sequence[RequestRecord],
    basis: DecodeBasis,
    counter_windows: Sequence[dict[str, Any]] = (),
    max_tokens: int | None = None,
    superseded: Sequence[RequestRecord] = (),
) -> RunSummary:
    """Every figure of a run from its records (the final attempt of each turn) and the counter snapshots around
    its measured windows (``max_tokens``: the per-request output limit, for the failed requests' allowance; None:
    from the replies; ``superseded``: earlier failed attempts, which only the counter cross-checks see)."""
    ok = [r for r in records if r.ok]
    pairs = request_pairs(ok, basis)
    deltas = window_deltas(counter_windows)
    total_delta = sum_stats(deltas.values(), source="counter_delta")
    overall_acc = overall_acceptance(pairs, len(ok), total_delta, basis.k, decode_items(ok, basis))
    overall = GroupStats.combine(group_counts(records), overall_acc.stats, group_timing(ok, basis), computed(ok, basis))
    req_sources = sorted({s.source for _, s in pairs})
    return RunSummary(
        k=basis.k,
        overall=overall,
        per_category=per_category(records, basis),
        errors_by_cause=dict(Counter(r.error["cause"] for r in records if not r.ok and r.error)),
        sources=Sources(
            acceptance=overall_acc.source,
            acceptance_per_category="+".join(req_sources) if req_sources else "none",
            acceptance_per_position=overall_acc.per_position_source,
            tokens=sorted({r.completion_tokens_source for r in ok}),
        ),
        counter_delta=_totals(total_delta),
        invariants=per_request_checks(pairs, basis) + cross_checks(records, deltas, basis, max_tokens, superseded),
    )
