"""Aggregate records into typed results (RunSummary = summary.json, see docs/results.md).

Small functions that the analysis layer calls on any subset of records (a category, a bootstrap
resample): ``group_acceptance`` and ``group_timing`` (and ``group_stats`` combining them with the figures
metrics/figures.py computes on their own), the run-level
acceptance with its source choice (``overall_acceptance``), the counter deltas per measured window
(``window_deltas``) and the cross-checks (``cross_checks``); ``summarize`` composes them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from speedbench.metrics import invariants as inv
from speedbench.metrics.acceptance import acceptance_length, acceptance_stats, step_figures, sum_stats
from speedbench.metrics.counters import counter_delta
from speedbench.metrics.drift import drift
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
from speedbench.metrics.sd_label import sd_check
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
    pairs = request_pairs(records, basis)
    acc = acceptance_stats([s for _, s in pairs], basis.k)
    source = _joined({s.source for _, s in pairs})
    return acc.model_copy(
        update={
            **step_figures(decode_items(records, basis)),
            "acceptance_source": source,
            "acceptance_length_source": source,
            "per_position_source": source if acc.conditional_acceptance_rate else "none",
        }
    )


def _joined(sources: Iterable[str]) -> str:
    """One source name for a set of them ("none" when empty, a "+"-join when several)."""
    names = sorted(set(sources))
    return "+".join(names) if names else "none"


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


# a measured window: its segment and, with per-category windows, its category (None: every category at once)
WindowKey = tuple[int, "str | None"]


def window_deltas(counter_windows: Sequence[dict[str, Any]]) -> dict[WindowKey, SDStats]:
    """Counter delta per measured window: one per segment (a resumed run has several), or with per-category
    windows one per (segment, category).  A window without both snapshots (interrupted) has none."""
    deltas: dict[WindowKey, SDStats] = {}
    for w in counter_windows:
        d = counter_delta(w.get("before"), w.get("after"))
        if d is not None:
            deltas[(int(w.get("segment", 0)), w.get("category"))] = d
    return deltas


def by_category(counter_windows: Sequence[dict[str, Any]]) -> bool:
    """Whether the run measured each category in its own counter window (``--per-category-windows``)."""
    return any(w.get("category") is not None for w in counter_windows)


def per_category_deltas(deltas: dict[WindowKey, SDStats]) -> bool:
    """Whether ``deltas`` are those of per-category windows (keyed by a category, not by segment alone)."""
    return any(cat is not None for _, cat in deltas)


def window_of(r: RequestRecord, per_category_windows: bool) -> WindowKey:
    """The measured window a record was sent in."""
    return (r.segment, r.category if per_category_windows else None)


def window_label(key: WindowKey) -> str:
    """How an invariant names a window: its segment, and its category with per-category windows."""
    return str(key[0]) if key[1] is None else f"{key[0]} {key[1]}"


@dataclass(frozen=True)
class OverallAcceptance:
    stats: AcceptanceStats
    source: str  # the run-level figures' source
    per_position_source: str  # where the per-position figures came from


def overall_acceptance(
    pairs: Sequence[Pair],
    n_ok: int,
    total_delta: SDStats | None,
    k: int,
    steps: Sequence[DecodeSteps] = (),
    prefer_counters: bool = False,
) -> OverallAcceptance:
    """Run-level acceptance: per-request stats when every ok request has them, else the counter delta
    (macro AL still from the requests), else whatever per-request source there is (chunks).  Per-position
    figures missing from the requests (llama.cpp) come from the counters when they have them.  With no
    successful request there are no figures (source ``none``): whatever the counters saw was the work of
    failed requests (or other traffic), not this run's acceptance; it stays in ``counter_delta``.

    The step figures come from ``steps`` (every ok request's ``DecodeSteps``); when the requests do not tell
    their drafted steps (llama.cpp, chunks alone) the token-weighted AL over drafted steps comes from the
    counters, whose steps are the steps that drafted (vLLM's ``num_drafts``), unless the adapter inferred them.

    ``prefer_counters`` (per-category counter windows, where ``total_delta`` is the group's own window delta):
    the counters give the figures whenever they counted steps, per-request stats or not, and the macro AL (a
    mean over requests) comes only from per-request stats, never from chunks (one source per figure)."""
    if n_ok == 0:
        return OverallAcceptance(acceptance_stats([], k), "none", "none")
    stats = [s for _, s in pairs]
    req_sources = sorted({s.source for s in stats})
    all_per_request = bool(pairs) and req_sources == ["per_request"] and len(pairs) == n_ok
    counted = total_delta is not None and total_delta.steps > 0
    source = "none"
    if all_per_request and not (prefer_counters and counted):
        source = "per_request"
    elif counted:
        source = "counter_delta"
    elif pairs:
        source = _joined(req_sources)

    acc = acceptance_stats(stats, k)
    macro_source = _joined(req_sources)
    if prefer_counters and not all_per_request:
        acc = acc.model_copy(update={"acceptance_length": None})
        macro_source = "none: no per-request SD stats (chunks are not used beside counters)"
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
    acc = acc.model_copy(
        update={
            "acceptance_source": source,
            "acceptance_length_source": (
                macro_source if acc.acceptance_length is not None or macro_source.startswith("none") else "none"
            ),
            "per_position_source": per_position_source,
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
    deltas: dict[WindowKey, SDStats],
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
    windowed = per_category_deltas(deltas)
    out: list[Invariant] = []
    keys = set(deltas) | {window_of(r, windowed) for r in ok}
    for key in sorted(keys, key=lambda w: (w[0], w[1] or "")):
        seg = window_label(key)
        seg_ok = [r for r in ok if window_of(r, windowed) == key]
        seg_records = [r for r in sent if window_of(r, windowed) == key]
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
        d = deltas.get(key)
        if d is not None:
            out.append(inv.per_request_vs_counters(seg_req, d, seg, failed))
            out.append(inv.counters_within_traffic(d, seg_records, seg, k, failed))
        if seg_chunks is not None and (seg_req is not None or d is not None):
            if d is not None:
                out.append(inv.chunks_vs(d, "counter_delta", seg_chunks, seg, len(seg_ok), k, account, failed))
            if seg_req is not None:
                out.append(inv.chunks_vs(seg_req, "per_request", seg_chunks, seg, len(seg_ok), k, account))
    return out


def per_category(
    records: Sequence[RequestRecord], basis: DecodeBasis, deltas: dict[WindowKey, SDStats] | None = None
) -> dict[str, GroupStats]:
    """Group stats per category, sorted by name; a category whose requests all failed is listed too.  With
    per-category counter windows (``deltas`` keyed by (segment, category)) a category's acceptance comes from the
    sum of its own windows' counter deltas (``window_acceptance``)."""
    by_cat: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        by_cat[r.category].append(r)
    windowed = deltas is not None and per_category_deltas(deltas)
    out: dict[str, GroupStats] = {}
    for cat in sorted(by_cat):
        if not windowed or deltas is None:
            out[cat] = group_stats(by_cat[cat], basis)
            continue
        ok = [r for r in by_cat[cat] if r.ok]
        acc = window_acceptance(ok, basis, deltas)
        out[cat] = GroupStats.combine(
            group_counts(by_cat[cat]), acc, group_timing(ok, basis), computed(by_cat[cat], basis)
        )
    return out


def window_acceptance(
    ok: Sequence[RequestRecord], basis: DecodeBasis, deltas: dict[WindowKey, SDStats]
) -> AcceptanceStats:
    """The acceptance of ``ok`` requests measured in per-category windows: the summed counter deltas of the
    windows they were sent in, when every one of those windows has a delta; otherwise (a window without both
    snapshots) no counter figures: partial sums never pass for a category's.  A window whose
    records a ``--resume`` sent again holds no final record, so its delta is not counted here."""
    keys = {window_of(r, True) for r in ok}
    complete = bool(keys) and all(key in deltas for key in keys)
    total = sum_stats([deltas[key] for key in sorted(keys, key=str)], source="counter_delta") if complete else None
    pairs = request_pairs(ok, basis)
    return overall_acceptance(pairs, len(ok), total, basis.k, decode_items(ok, basis), prefer_counters=True).stats


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
    label: tuple[str | None, int] | None = None,
    sequential_categories: bool = False,
    closed_loop: bool = True,
) -> RunSummary:
    """Every figure of a run from its records (the final attempt of each turn) and the counter snapshots around
    its measured windows (``max_tokens``: the per-request output limit, for the failed requests' allowance; None:
    from the replies; ``superseded``: earlier failed attempts, which only the counter cross-checks see; ``label``:
    the run's (--sd, k) as labelled, checked against the counters: ``sd_check``; ``sequential_categories``: the run
    measured per-category counter windows, one category after another, which the drift test does not test;
    ``closed_loop``: a fixed number of requests in flight, whose burst and drain the drift test leaves out)."""
    ok = [r for r in records if r.ok]
    pairs = request_pairs(ok, basis)
    deltas = window_deltas(counter_windows)
    windowed = by_category(counter_windows)
    total_delta = sum_stats(deltas.values(), source="counter_delta")
    if windowed:  # the windows the final records were sent in (not those a --resume ran again)
        acc = window_acceptance(ok, basis, deltas)
        overall_acc = OverallAcceptance(acc, acc.acceptance_source, acc.per_position_source)
    else:
        overall_acc = overall_acceptance(pairs, len(ok), total_delta, basis.k, decode_items(ok, basis))
    overall = GroupStats.combine(group_counts(records), overall_acc.stats, group_timing(ok, basis), computed(ok, basis))
    req_sources = sorted({s.source for _, s in pairs})
    categories = per_category(records, basis, deltas if windowed else None)
    per_category_source = (
        _joined(g.acceptance_source for g in categories.values() if g.requests) if windowed else _joined(req_sources)
    )
    return RunSummary(
        k=basis.k,
        overall=overall,
        per_category=categories,
        errors_by_cause=dict(Counter(r.error["cause"] for r in records if not r.ok and r.error)),
        sources=Sources(
            acceptance=overall_acc.source,
            acceptance_per_category=per_category_source,
            acceptance_per_position=overall_acc.per_position_source,
            tokens=sorted({r.completion_tokens_source for r in ok}),
        ),
        counter_delta=_totals(total_delta),
        invariants=per_request_checks(pairs, basis) + cross_checks(records, deltas, basis, max_tokens, superseded),
        sd_check=sd_check(*label, total_delta, len(ok)) if label is not None and counter_windows else None,
        drift=drift(records, sequential_categories, closed_loop),
    )
