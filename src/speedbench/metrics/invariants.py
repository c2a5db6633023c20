"""Invariant checks run on every summary; each returns {name, ok, detail}.

ok is True (holds), False (violated: the figures are in detail) or None (not applicable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from speedbench.metrics.acceptance import acceptance_length
from speedbench.records import RequestRecord, SDStats

REL_TOL = 0.01


def _inv(name: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def al_bounded(pairs: Sequence[tuple[RequestRecord, SDStats]], k: int) -> dict[str, Any]:
    bad = [(r.question_id, r.turn, acceptance_length(s.accepted, s.steps)) for r, s in pairs
           if s.steps > 0 and 1.0 + s.accepted / s.steps > k + 1 + 1e-9]
    if not pairs:
        return _inv("al_le_k_plus_1", None, "no acceptance stats")
    return _inv("al_le_k_plus_1", not bad,
                f"{len(bad)} of {len(pairs)} requests have AL > k+1={k + 1}" + (f": {bad[:5]}" if bad else ""))


def histogram_sums(pairs: Sequence[tuple[RequestRecord, SDStats]]) -> dict[str, Any]:
    with_hist = [(r, s) for r, s in pairs if s.histogram]
    if not with_hist:
        return _inv("histogram_sum_eq_steps", None, "no per-step histogram reported")
    bad = [(r.question_id, r.turn, sum(s.histogram), s.steps) for r, s in with_hist if sum(s.histogram) != s.steps]
    return _inv("histogram_sum_eq_steps", not bad,
                f"{len(bad)} of {len(with_hist)} requests: sum(histogram) != steps" + (f": {bad[:5]}" if bad else ""))


def tokens_match_steps(pairs: Sequence[tuple[RequestRecord, SDStats]]) -> dict[str, Any]:
    """completion tokens = accepted + steps + 1 (the first token comes from prefill)."""
    checked = [(r, s) for r, s in pairs if r.completion_tokens is not None and s.steps > 0]
    if not checked:
        return _inv("tokens_eq_accepted_plus_steps", None, "no server token counts with SD stats")
    bad = [(r.question_id, r.turn, r.completion_tokens, s.accepted, s.steps) for r, s in checked
           if r.completion_tokens != s.accepted + s.steps + 1]
    return _inv("tokens_eq_accepted_plus_steps", not bad,
                f"{len(bad)} of {len(checked)} requests: completion_tokens != accepted + steps + 1 (prefill token)"
                + (f"; first (qid, turn, tokens, accepted, steps): {bad[:5]}" if bad else ""))


def per_request_vs_counters(per_request: SDStats | None, delta: SDStats | None, segment: int) -> dict[str, Any]:
    name = f"per_request_vs_counter_delta[segment {segment}]"
    if per_request is None or delta is None:
        return _inv(name, None, "needs both per-request stats and counter deltas")
    diffs = []
    for field in ("drafted", "accepted", "steps"):
        a, b = getattr(per_request, field), getattr(delta, field)
        rel = abs(a - b) / max(abs(b), 1)
        if rel > REL_TOL:
            note = " (counters exceed our requests: other traffic on the server?)" if b > a else ""
            diffs.append(f"{field}: requests {a} vs counters {b} ({rel:.1%}){note}")
    ok = not diffs
    detail = "; ".join(diffs) if diffs else (
        f"drafted {per_request.drafted}/{delta.drafted}, accepted {per_request.accepted}/{delta.accepted}, "
        f"steps {per_request.steps}/{delta.steps} within {REL_TOL:.0%}")
    return _inv(name, ok, detail)
