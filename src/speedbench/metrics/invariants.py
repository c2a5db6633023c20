"""Invariant checks run on every summary; each returns an Invariant {name, ok, detail}.

ok is True (holds), False (violated: the figures are in detail) or None (not applicable).
"""

from __future__ import annotations

from collections.abc import Sequence

from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.models import Invariant
from speedbench.records import RequestRecord, SDStats

REL_TOL = 0.01


def _inv(name: str, ok: bool | None, detail: str) -> Invariant:
    return Invariant(name=name, ok=ok, detail=detail)


def al_bounded(pairs: Sequence[tuple[RequestRecord, SDStats]], k: int) -> Invariant:
    bad = [
        (r.question_id, r.turn, acceptance_length(s.accepted, s.steps))
        for r, s in pairs
        if s.steps > 0 and 1.0 + s.accepted / s.steps > k + 1 + 1e-9
    ]
    if not pairs:
        return _inv("al_le_k_plus_1", None, "no acceptance stats")
    return _inv(
        "al_le_k_plus_1",
        not bad,
        f"{len(bad)} of {len(pairs)} requests have AL > k+1={k + 1}" + (f": {bad[:5]}" if bad else ""),
    )


def histogram_sums(pairs: Sequence[tuple[RequestRecord, SDStats]]) -> Invariant:
    with_hist = [(r, s) for r, s in pairs if s.histogram]
    if not with_hist:
        return _inv("histogram_sum_eq_steps", None, "no per-step histogram reported")
    bad = [(r.question_id, r.turn, sum(s.histogram), s.steps) for r, s in with_hist if sum(s.histogram) != s.steps]
    return _inv(
        "histogram_sum_eq_steps",
        not bad,
        f"{len(bad)} of {len(with_hist)} requests: sum(histogram) != steps" + (f": {bad[:5]}" if bad else ""),
    )


def tokens_match_steps(pairs: Sequence[tuple[RequestRecord, SDStats]], k: int) -> Invariant:
    """completion tokens vs 1 + steps + accepted (the first token comes from prefill).

    More tokens: decode steps on which the engine drafted nothing (one token each, no verification;
    vLLM's ngram with no match) -- allowed and counted.  Fewer: only the last step may have accepted
    drafts past the stop point (max_tokens or EOS) that the engine counted but did not emit, at most
    k; anything beyond that is a violation."""
    checked = [
        (r, s) for r, s in pairs if r.completion_tokens is not None and s.steps > 0 and "steps" not in s.inferred
    ]  # inferred steps come from this very equation
    if not checked:
        return _inv(
            "tokens_vs_accepted_plus_steps",
            None,
            "no request with a server token count and reported (not inferred) steps",
        )
    # r.tokens is the server's completion_tokens here (checked keeps only requests that have it)
    bad = [
        (r.question_id, r.turn, r.tokens, s.accepted, s.steps)
        for r, s in checked
        if r.tokens < s.accepted + s.steps + 1 - k
    ]
    over = [r.tokens - (s.accepted + s.steps + 1) for r, s in checked]
    undrafted = sum(v for v in over if v > 0)
    cut = sum(-v for v in over if v < 0)
    detail = f"{len(bad)} of {len(checked)} requests: completion_tokens < 1 + steps + accepted - k" + (
        f"; first (qid, turn, tokens, accepted, steps): {bad[:5]}" if bad else ""
    )
    detail += (
        f"; {sum(1 for v in over if v > 0)} requests had {undrafted} decode steps without a draft; "
        f"{sum(1 for v in over if v < 0)} requests had {cut} accepted drafts past the stop point"
    )
    return _inv("tokens_vs_accepted_plus_steps", not bad, detail)


FIELDS = ("drafted", "accepted", "steps")


def compare_sources(
    name: str,
    a: SDStats | None,
    a_label: str,
    b: SDStats | None,
    b_label: str,
    fields: Sequence[str] = FIELDS,
    note: str = "",
) -> Invariant:
    """Two sources of the same window agree within REL_TOL on each field (relative to b)."""
    if a is None or b is None:
        return _inv(name, None, f"needs both {a_label} and {b_label}")
    diffs: list[str] = []
    same: list[str] = []
    for field in fields:
        x, y = getattr(a, field), getattr(b, field)
        rel = abs(x - y) / max(abs(y), 1)
        (diffs if rel > REL_TOL else same).append(f"{field}: {a_label} {x} vs {b_label} {y} ({rel:.1%})")
    detail = (
        ("; ".join(diffs) + (f" [{note}]" if note else "")) if diffs else "; ".join(same) + f" (within {REL_TOL:.0%})"
    )
    return _inv(name, not diffs, detail)


def per_request_vs_counters(per_request: SDStats | None, delta: SDStats | None, segment: int) -> Invariant:
    """Per-request totals against counter deltas; fields a source inferred (llama.cpp's steps) are not
    compared (they would only repeat the inference), and the label says so."""
    inferred = list(per_request.inferred) if per_request is not None else []
    note = (
        "counters exceed our requests: other traffic on the server?"
        if (per_request is not None and delta is not None and delta.steps > per_request.steps)
        else ""
    )
    label = "requests (steps not compared: inferred)" if "steps" in inferred else "requests"
    return compare_sources(
        f"per_request_vs_counter_delta[segment {segment}]",
        per_request,
        label,
        delta,
        "counters",
        [f for f in FIELDS if f not in inferred],
        note,
    )


def chunks_vs(
    other: SDStats | None, other_label: str, chunks: SDStats | None, segment: int, n_requests: int, k: int
) -> Invariant:
    """The chunk estimate (one chunk = one decode step) against an engine source.

    Accepted drafts must agree: a chunk of n tokens holds n-1 accepted drafts, so a decode step
    without a draft (1 token) adds none, and only two steps merged into one chunk (or drafts
    accepted past the stop point, at most k per request, which the engine counts but never sends)
    make them differ.  Steps are reported, not compared: chunks count every decode step, engines
    only the steps that verified a draft."""
    name = f"chunks_vs_{other_label}[segment {segment}]"
    if other is None or chunks is None:
        return _inv(name, None, f"needs both chunks and {other_label}")
    gap = other.accepted - chunks.accepted  # >= 0: drafts past the stop point; < 0: merged chunks
    allowed = k * n_requests + REL_TOL * max(other.accepted, 1)
    ok = -REL_TOL * max(other.accepted, 1) <= gap <= allowed and chunks.steps >= other.steps * (1 - REL_TOL)
    detail = (
        f"accepted: chunks {chunks.accepted} vs {other_label} {other.accepted} (gap {gap}; allowed 0..{allowed:.0f}"
        f" = up to k per request cut at the stop point + 1%); steps: chunks {chunks.steps} decode steps vs "
        f"{other_label} {other.steps} verification steps ({chunks.steps - other.steps} without a draft)"
    )
    if not ok:
        detail += " [chunk estimate disagrees: merged chunks, or the engine's counts are off]"
    return _inv(name, ok, detail)


def counters_within_traffic(delta: SDStats | None, records: Sequence[RequestRecord], segment: int) -> Invariant:
    """Counter deltas cannot exceed what our requests produced: every verification step and every
    accepted draft yields at least one output token beyond each request's first."""
    name = f"counters_within_our_traffic[segment {segment}]"
    if delta is None:
        return _inv(name, None, "no counter deltas")
    bound = sum(max(r.tokens - 1, 0) for r in records)
    over = [f"{f} {getattr(delta, f)}" for f in ("steps", "accepted") if getattr(delta, f) > bound]
    if delta.steps + delta.accepted > bound:
        over.append(f"steps+accepted {delta.steps + delta.accepted}")
    if over:
        return _inv(
            name,
            False,
            f"counter deltas {', '.join(over)} exceed the {bound} tokens our "
            f"{len(records)} requests produced after their first: other traffic on the server",
        )
    return _inv(
        name,
        True,
        f"steps+accepted {delta.steps + delta.accepted} <= {bound} tokens our requests produced after their first",
    )
