"""Invariant checks run on every summary; each returns an Invariant {name, ok, detail}.

ok is True (holds), False (violated: the figures are in detail) or None (not applicable).

One allowance rule, used by every check that holds an engine's counts against what reached us
(docs/metrics.md "Invariants"):
- a finished request: the engine may have counted up to k accepted drafts it never sent (its last step
  accepted them past the stop point, max_tokens or EOS; the reference engine ends a step on an accepted EOS
  draft without its bonus token, one token fewer than 1 + steps + accepted);
- a failed request (reset, timeout, a broken stream) that reached decoding: the server may have counted the
  steps of what it streamed plus k, and at most what it could decode up to its output limit (it may have gone
  on after the client saw the last chunk).  HTTP errors, connection failures and turns never sent count nothing.
Counts the checks print (decode steps without a draft, drafts past the stop point, failed requests' streamed
work) come from one function each, ``step_account`` and ``failed_work``, so every check says the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.models import Invariant
from speedbench.metrics.sources import DecodeBasis, decode_steps
from speedbench.records import RequestRecord, SDStats

REL_TOL = 0.01


def _inv(name: str, ok: bool | None, detail: str) -> Invariant:
    return Invariant(name=name, ok=ok, detail=detail)


def _n(n: int, what: str) -> str:
    """'1 request', '3 requests' (``what`` in the singular, its last word a regular noun)."""
    return f"{n} {what}" + ("" if n == 1 else "s")


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


# ---- the shared counts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepAccount:
    """Decode steps without a draft and accepted drafts past the stop point, summed over requests.

    Exact where a request says (the engine's ``undrafted_steps``, or one chunk per step next to the engine's
    drafted steps); elsewhere (per-request stats whose steps are drafted steps, chunks not steps) tokens vs
    1 + steps + accepted only gives lower bounds: undrafted steps add one token each, drafts cut at the stop
    point take one each, and the two offset."""

    requests: int = 0  # requests accounted
    bounded: int = 0  # of them, those giving lower bounds only
    undrafted: int = 0
    undrafted_requests: int = 0
    cut: int = 0
    cut_requests: int = 0

    def describe(self, k: int) -> str:
        least = "at least " if self.bounded else ""
        text = (
            f"{_n(self.undrafted_requests, 'request')} had {least}{self.undrafted} decode steps without a draft; "
            f"{_n(self.cut_requests, 'request')} had {least}{self.cut} accepted drafts past the stop point "
            f"(allowed: up to k={k} per request)"
        )
        if self.bounded:
            text += f" [{self.bounded} of {self.requests} requests: lower bounds from tokens vs 1 + steps + accepted]"
        return text


def step_account(pairs: Sequence[tuple[RequestRecord, SDStats]], basis: DecodeBasis) -> StepAccount:
    """The one count of undrafted decode steps and of drafts accepted past the stop point (see StepAccount)."""
    n = bounded = undrafted = n_undrafted = cut = n_cut = 0
    for r, s in pairs:
        d = decode_steps(r, s, basis)
        u_d, c_d = d.undrafted_steps, d.cut
        if u_d is not None and c_d is not None:
            u, c = max(u_d, 0), max(c_d, 0)
        elif s.source == "per_request" and "steps" not in s.inferred and r.completion_tokens is not None:
            over = r.tokens - (1 + s.steps + s.accepted)
            u, c = max(over, 0), max(-over, 0)
            bounded += 1
        else:
            continue
        n += 1
        undrafted += u
        n_undrafted += u > 0
        cut += c
        n_cut += c > 0
    return StepAccount(n, bounded, undrafted, n_undrafted, cut, n_cut)


NOT_DECODED_CAUSES = frozenset({"prior_turn_failed", "connect_error"})  # and http_*: refused before decoding


def reached_decoding(r: RequestRecord) -> bool:
    """Whether a failed request may have been decoded (and counted) by the server: not a turn never sent,
    a connection never made, or an HTTP error status (sent before any token)."""
    cause = (r.error or {}).get("cause", "")
    return bool(r.chunk_tokens) or not (cause in NOT_DECODED_CAUSES or cause.startswith("http_"))


def output_limit(records: Sequence[RequestRecord], max_tokens: int | None) -> tuple[int | None, str]:
    """Per-request output limit and how it was found: ``max_tokens`` when given, else the replies that stopped
    at the length limit, else the longest reply (a lower bound of the limit)."""
    if max_tokens:
        return max_tokens, "max_tokens"
    at_limit = [r.tokens for r in records if r.ok and r.finish_reason == "length"]
    if at_limit:
        return max(at_limit), "replies that stopped at the length limit"
    longest = [r.tokens for r in records if r.ok] + [sum(r.chunk_tokens) for r in records]
    if longest and max(longest) > 0:
        return max(longest), "the longest reply; max_tokens not given"
    return None, "unknown"


@dataclass(frozen=True)
class FailedWork:
    """What the failed requests of a window may have added to the server's counters (the allowance rule)."""

    k: int
    failed: int = 0  # failed requests in the window
    sent: int = 0  # of them, those that may have reached decoding
    tokens: int = 0  # tokens they streamed after their first
    steps_min: int = 0  # decode steps those tokens took at least
    limit: int | None = None  # output limit per request
    limit_note: str = "unknown"
    limit_total: int | None = None  # steps + accepted they can hold, decoded up to the limit (+ k each)

    @property
    def streamed_bound(self) -> int:
        """steps + accepted the counters may hold for what they streamed: one per token, + k each."""
        return self.tokens + self.k * self.sent

    def what(self) -> str:
        who = _n(self.sent, "failed request")
        return f"{who} streamed {self.tokens} tokens (>= {self.steps_min} steps) before failing"

    def explain(self, excess: int, drafted_excess: int = 0) -> tuple[bool, str]:
        """Can the failed requests explain ``excess`` steps + accepted (and ``drafted_excess`` drafted) in the
        counters beyond our successful requests?  (ok, why)."""
        if excess <= 0 and drafted_excess <= 0:
            return True, ""
        if self.sent == 0:
            return False, "no failed request reached decoding to explain it: other traffic on the server?"
        k = max(self.k, 1)
        if excess <= self.streamed_bound and drafted_excess <= k * self.streamed_bound:
            return (
                True,
                f"{self.what()}: up to {self.streamed_bound} steps + accepted (the tokens + k per request): allowed",
            )
        if self.limit_total is not None and excess <= self.limit_total and drafted_excess <= k * self.limit_total:
            return True, (
                f"{self.what()}, less than the counters hold: the server may have gone on decoding them after "
                f"the client's last chunk, up to the output limit of {self.limit} tokens ({self.limit_note}): "
                f"up to {self.limit_total} steps + accepted: allowed"
            )
        most = self.limit_total if self.limit_total is not None else self.streamed_bound
        limit = f" decoded up to the output limit of {self.limit} tokens" if self.limit_total is not None else ""
        return False, f"{self.what()}; even{limit} they explain at most {most}: other traffic on the server?"


def failed_work(
    records: Sequence[RequestRecord], basis: DecodeBasis, limit: tuple[int | None, str] = (None, "unknown")
) -> FailedWork:
    """The one account of the failed requests' work (see FailedWork): chunk 0 is the prefill token, each later
    chunk at least one step (one chunk per step), else each step yields at most k+1 tokens."""
    failed = [r for r in records if not r.ok]
    sent = [r for r in failed if reached_decoding(r)]
    streamed = [max(sum(r.chunk_tokens) - 1, 0) for r in sent]
    k = basis.k
    if basis.chunks_are_steps:
        steps_min = sum(sum(1 for n in r.chunk_tokens[1:] if n > 0) for r in sent)
    else:
        steps_min = sum(math.ceil(t / (k + 1)) for t in streamed)
    lim, note = limit
    total = None if lim is None else sum(max(lim - 1, t) + k for t in streamed)
    return FailedWork(k, len(failed), len(sent), sum(streamed), steps_min, lim, note, total)


# ---- per-request checks --------------------------------------------------------------------------------------


def tokens_match_steps(pairs: Sequence[tuple[RequestRecord, SDStats]], basis: DecodeBasis) -> Invariant:
    """completion tokens vs 1 + steps + accepted (the first token comes from prefill).

    More tokens: decode steps on which the engine drafted nothing (one token each, no verification;
    vLLM's ngram with no match) -- allowed and counted.  Fewer: only the last step may have accepted
    drafts past the stop point (max_tokens or EOS) that the engine counted but did not emit, at most
    k; anything beyond that is a violation.  The counts come from ``step_account``."""
    k = basis.k
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
    detail = f"{len(bad)} of {len(checked)} requests: completion_tokens < 1 + steps + accepted - k" + (
        f"; first (qid, turn, tokens, accepted, steps): {bad[:5]}" if bad else ""
    )
    detail += "; " + step_account(checked, basis).describe(k)
    return _inv("tokens_vs_accepted_plus_steps", not bad, detail)


# ---- sources against each other, per measured window --------------------------------------------------------

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


def per_request_vs_counters(
    per_request: SDStats | None, delta: SDStats | None, segment: int | str, failed: FailedWork | None = None
) -> Invariant:
    """Per-request totals of the successful requests against the counter deltas, within REL_TOL per field;
    fields a source inferred (llama.cpp's steps) are not compared (they would only repeat the inference), and
    the label says so.  Counters above our requests pass when the failed requests' work explains them
    (``FailedWork.explain``); counters below them never do."""
    inferred = list(per_request.inferred) if per_request is not None else []
    label = "requests (steps not compared: inferred)" if "steps" in inferred else "requests"
    name = f"per_request_vs_counter_delta[segment {segment}]"
    fields = [f for f in FIELDS if f not in inferred]
    plain = compare_sources(name, per_request, label, delta, "counters", fields)
    if per_request is None or delta is None or plain.ok:
        return plain
    off = {
        f: getattr(delta, f) - getattr(per_request, f)
        for f in fields
        if abs(getattr(delta, f) - getattr(per_request, f)) / max(abs(getattr(delta, f)), 1) > REL_TOL
    }
    if any(v < 0 for v in off.values()):
        return _inv(name, False, f"{plain.detail} [counters below our successful requests' own counts]")
    excess = sum(v for f, v in off.items() if f in ("steps", "accepted"))
    work = failed or FailedWork(k=0)
    ok, why = work.explain(excess, off.get("drafted", 0))
    gap = ", ".join(f"{v} {f}" for f, v in off.items())
    return _inv(name, ok, f"{plain.detail} [counters exceed our successful requests by {gap}: {why}]")


def chunks_vs(
    other: SDStats | None,
    other_label: str,
    chunks: SDStats | None,
    segment: int | str,
    n_requests: int,
    k: int,
    account: StepAccount | None = None,
    failed: FailedWork | None = None,
) -> Invariant:
    """The chunk estimate (one chunk = one decode step) of the successful requests against an engine source.

    Accepted drafts must agree: a chunk of n tokens holds n-1 accepted drafts, so a decode step without a
    draft (1 token) adds none, and only two steps merged into one chunk (or drafts accepted past the stop
    point, at most k per request, which the engine counts but never sends) make them differ.  Steps: the
    engine's may not exceed the chunks' (chunks count every decode step; vLLM counts only the steps that
    verified a draft, the reference engine all of them); how many drafted nothing comes from
    ``step_account``.  Counters also hold the failed requests' work (``FailedWork.explain``)."""
    name = f"chunks_vs_{other_label}[segment {segment}]"
    if other is None or chunks is None:
        return _inv(name, None, f"needs both chunks and {other_label}")
    gap = other.accepted - chunks.accepted  # >= 0: drafts past the stop point; < 0: merged chunks
    tol_acc = REL_TOL * max(other.accepted, 1)
    allowed = k * n_requests + tol_acc
    detail = (
        f"accepted: chunks {chunks.accepted} vs {other_label} {other.accepted} (gap {gap}; allowed 0..{allowed:.0f}"
        f" = up to k per request accepted past the stop point + 1%); steps: chunks {chunks.steps} decode steps vs "
        f"{other_label} {other.steps} steps"
    )
    if account is not None and account.requests:
        least = "at least " if account.bounded else ""
        detail += f" ({least}{account.undrafted} decode steps without a draft)"
    excess = max(0, gap - k * n_requests) + max(0, other.steps - chunks.steps)
    if gap < -tol_acc:
        return _inv(name, False, detail + " [chunk estimate disagrees: merged chunks, or the engine's counts are off]")
    if excess <= tol_acc + REL_TOL * other.steps:
        return _inv(name, True, detail)
    ok, why = (False, "") if failed is None else failed.explain(excess)
    detail += f"; {other_label} holds {excess} steps + accepted beyond our successful requests' chunks"
    detail += f": {why}" if why else ""
    if not ok:
        detail += " [chunk estimate disagrees: merged chunks, or the engine's counts are off]"
    return _inv(name, ok, detail)


def counters_within_traffic(
    delta: SDStats | None,
    records: Sequence[RequestRecord],
    segment: int | str,
    k: int = 0,
    failed: FailedWork | None = None,
) -> Invariant:
    """Counter deltas cannot exceed what our requests produced: every verification step and every accepted
    draft yields at least one output token beyond each request's first, except up to k drafts per request
    accepted past the stop point; the failed requests' work is allowed by ``FailedWork.explain``."""
    name = f"counters_within_our_traffic[segment {segment}]"
    if delta is None:
        return _inv(name, None, "no counter deltas")
    ok_recs = [r for r in records if r.ok]
    produced = sum(max(r.tokens - 1, 0) for r in ok_recs)
    cut_allowed = k * len(ok_recs)
    total = delta.steps + delta.accepted
    excess = total - produced - cut_allowed
    base = (
        f"steps+accepted {total} {'<=' if excess <= 0 else '>'} {produced} tokens our "
        f"{_n(len(ok_recs), 'successful request')} produced after their first + {cut_allowed} allowed "
        f"(up to k={k} per request accepted past the stop point)"
    )
    if excess <= 0:
        return _inv(name, True, base)
    work = failed if failed is not None else failed_work(records, DecodeBasis(k, chunks_are_steps=False))
    ok, why = work.explain(excess)
    return _inv(name, ok, f"{base} by {excess}: {why}")
