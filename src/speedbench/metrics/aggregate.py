"""Aggregate records into the summary.json contract (see docs/results.md)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from speedbench.metrics import invariants as inv
from speedbench.metrics.acceptance import acceptance_summary, sum_stats
from speedbench.metrics.counters import counter_delta
from speedbench.metrics.latency import (
    distribution, e2e_s, itl_s, output_tps, step_times_s, tpot_s, ttft_s, user_tps,
)
from speedbench.metrics.sources import chunk_stats, request_stats
from speedbench.records import RequestRecord, SDStats


def _timing(records: Sequence[RequestRecord], chunks_are_steps: bool = True) -> dict[str, Any]:
    """Client-timestamp figures.  Step time (gaps between chunks) only where a chunk is a step."""
    return {
        "ttft_s": distribution(ttft_s(r) for r in records),
        "tpot_s": distribution(tpot_s(r) for r in records),
        "itl_s": distribution(v for r in records for v in itl_s(r)),
        "step_time_s": distribution(v for r in records for v in step_times_s(r)) if chunks_are_steps
        else distribution([]),
        "e2e_s": distribution(e2e_s(r) for r in records),
        "user_tps": distribution(user_tps(r) for r in records),
        "output_tps": output_tps(records),
        "output_tokens": sum(r.tokens for r in records),
    }


def summarize(
    records: Sequence[RequestRecord],
    k: int,
    chunks_are_steps: bool = True,
    counter_windows: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    errors = [r for r in records if not r.ok]
    pairs: list[tuple[RequestRecord, SDStats]] = []
    for r in ok:
        s = request_stats(r, k, chunks_are_steps)
        if s is not None:
            pairs.append((r, s))
    req_sources = sorted({s.source for _, s in pairs})

    # Counter deltas per segment (a resumed run has one measured window per segment).
    deltas: dict[int, SDStats] = {}
    for w in counter_windows:
        d = counter_delta(w.get("before"), w.get("after"))
        if d is not None:
            deltas[int(w.get("segment", 0))] = d
    total_delta = sum_stats(deltas.values(), source="counter_delta")

    overall_stats = [s for _, s in pairs]
    overall_source = "none"
    if pairs and req_sources == ["per_request"] and len(pairs) == len(ok):
        overall_source = "per_request"
    elif total_delta is not None and total_delta.steps > 0:
        overall_source = "counter_delta"
    elif pairs:
        overall_source = req_sources[0] if len(req_sources) == 1 else "+".join(req_sources)

    overall: dict[str, Any] = {"requests": len(ok), "errors": len(errors)}
    acc = acceptance_summary(overall_stats, k)
    if overall_source == "counter_delta" and total_delta is not None:
        # Run-level figures from the counters; the macro (per-request) AL needs per-request data.
        acc_c = acceptance_summary([total_delta], k)
        acc_c["acceptance_length"] = acc["acceptance_length"]
        acc = acc_c
    per_position_source = overall_source if acc["conditional_acceptance_rate"] else "none"
    if not acc["conditional_acceptance_rate"] and total_delta is not None and total_delta.per_position:
        # per-request stats without per-position counts (llama.cpp): the counters have them
        acc_c = acceptance_summary([total_delta], k)
        acc["conditional_acceptance_rate"] = acc_c["conditional_acceptance_rate"]
        acc["joint_acceptance_rate"] = acc_c["joint_acceptance_rate"]
        acc["histogram"] = acc_c["histogram"]
        per_position_source = "counter_delta"
    overall.update(acc)
    overall.update(_timing(ok, chunks_are_steps))

    by_cat: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in ok:
        by_cat[r.category].append(r)
    stats_by_id = {id(r): s for r, s in pairs}
    errors_by_cat = Counter(r.category for r in errors)
    per_category: dict[str, Any] = {}
    for cat in sorted(set(by_cat) | set(errors_by_cat)):   # a category whose requests all failed is listed too
        rs = by_cat.get(cat, [])
        cat_stats = [stats_by_id[id(r)] for r in rs if id(r) in stats_by_id]
        entry: dict[str, Any] = {"requests": len(rs), "errors": errors_by_cat.get(cat, 0)}
        entry.update(acceptance_summary(cat_stats, k))
        entry.update(_timing(rs, chunks_are_steps))
        per_category[cat] = entry

    invariants = [
        inv.al_bounded(pairs, k),
        inv.histogram_sums(pairs),
        inv.tokens_match_steps([(r, s) for r, s in pairs if s.source == "per_request"], k),
    ]
    # Cross-check the three sources per measured window: per-request totals, counter deltas, and the
    # chunk estimate (engines that stream one chunk per step).  A source is only summed over a segment
    # when every ok request of it has that source, so partial sums never pass for disagreement.
    segments = sorted(set(deltas) | {r.segment for r in ok})
    for seg in segments:
        seg_ok = [r for r in ok if r.segment == seg]
        req_stats = [r.sd for r in seg_ok if r.sd is not None and r.sd.source == "per_request"]
        seg_req = sum_stats(req_stats) if req_stats and len(req_stats) == len(seg_ok) else None
        seg_chunks = None
        if chunks_are_steps and k > 0:
            ch = [chunk_stats(r, k) for r in seg_ok]
            if ch and all(c is not None for c in ch):
                seg_chunks = sum_stats([c for c in ch if c is not None])
        d = deltas.get(seg)
        if d is not None:
            invariants.append(inv.per_request_vs_counters(seg_req, d, seg))
            invariants.append(inv.counters_within_traffic(d, [r for r in records if r.segment == seg], seg))
        if seg_chunks is not None and (seg_req is not None or d is not None):
            if d is not None:
                invariants.append(inv.chunks_vs(d, "counter_delta", seg_chunks, seg, len(seg_ok), k))
            if seg_req is not None:
                invariants.append(inv.chunks_vs(seg_req, "per_request", seg_chunks, seg, len(seg_ok), k))

    return {
        "k": k,
        "overall": overall,
        "per_category": per_category,
        "errors_by_cause": dict(Counter(r.error["cause"] for r in errors if r.error)),
        "sources": {
            "acceptance": overall_source,
            "acceptance_per_category": "+".join(req_sources) if req_sources else "none",
            "acceptance_per_position": per_position_source,
            "timing": "client perf_counter_ns timestamps",
            "tokens": sorted({r.completion_tokens_source for r in ok}),
        },
        "counter_delta": total_delta.to_dict() if total_delta else None,
        "invariants": invariants,
    }
