"""Metric units with hand-computed expected values."""

import pytest

from speedbench.metrics import invariants as inv
from speedbench.metrics.acceptance import (
    acceptance_length,
    acceptance_rate,
    acceptance_stats,
    conditional_acceptance,
    histogram_dict,
    joint_acceptance,
    macro_acceptance_length,
    sum_stats,
)
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.counters import counter_delta
from speedbench.metrics.latency import distribution, e2e_s, itl_s, output_tps, step_times_s, tpot_s, ttft_s, user_tps
from speedbench.metrics.sources import (
    REASON_CHUNKS_ONLY,
    REASON_DRAFTED_ONLY,
    REASON_INFERRED,
    DecodeBasis,
    chunk_stats,
    decode_steps,
    request_stats,
)
from speedbench.records import RequestRecord, SDStats, final_attempts, per_position_from_histogram

MS = 1_000_000  # ns per ms

# SPEED-Bench blog: Llama-3.3-70B + EAGLE3 on TRT-LLM, BS 32; histogram keyed by tokens per step L
SPEED_HIST = [57385, 36968, 24441, 61182]


def test_published_speed_bench_histogram_conditional_ar():
    per_pos = per_position_from_histogram(SPEED_HIST)
    assert per_pos == [122591, 85623, 61182]
    steps = sum(SPEED_HIST)
    assert steps == 179976
    cond = conditional_acceptance(per_pos, steps)
    assert [round(c, 3) for c in cond] == [0.681, 0.698, 0.715]
    joint = joint_acceptance(per_pos, steps)
    assert joint[0] == pytest.approx(122591 / 179976)
    assert joint[2] == pytest.approx(61182 / 179976)
    s = SDStats.from_histogram(SPEED_HIST, "per_request", k=3)
    assert s.accepted == 36968 + 2 * 24441 + 3 * 61182 == 269396
    assert s.drafted == 3 * 179976
    assert acceptance_length(s.accepted, s.steps) == pytest.approx(1 + 269396 / 179976)
    assert histogram_dict(SPEED_HIST) == {"1": 57385, "2": 36968, "3": 24441, "4": 61182}


def test_al_ar_basic_and_empty():
    assert acceptance_length(6, 4) == 2.5
    assert acceptance_length(0, 0) is None
    assert acceptance_rate(6, 12) == 0.5
    assert acceptance_rate(0, 0) is None
    assert conditional_acceptance([0, 0], 0) == [None, None]


def test_macro_vs_token_weighted():
    a = SDStats(drafted=30, accepted=20, steps=10)  # AL 3.0
    b = SDStats(drafted=90, accepted=0, steps=30)  # AL 1.0
    assert macro_acceptance_length([a, b]) == pytest.approx(2.0)
    summ = acceptance_stats([a, b], k=3)
    assert summ.acceptance_length == pytest.approx(2.0)
    assert summ.acceptance_length_token_weighted == pytest.approx(1 + 20 / 40)
    assert summ.acceptance_rate == pytest.approx(20 / 120)


def test_sum_stats_pads_lists():
    a = SDStats(3, 2, 1, per_position=[1, 1], histogram=[0, 0, 1])
    b = SDStats(3, 3, 1, per_position=[1, 1, 1], histogram=[0, 0, 0, 1])
    t = sum_stats([a, b])
    assert (t.drafted, t.accepted, t.steps) == (6, 5, 2)
    assert t.per_position == [2, 2, 1]
    assert t.histogram == [0, 0, 1, 1]
    assert sum_stats([]) is None


def _record(**kw) -> RequestRecord:
    base = dict(
        question_id="q",
        category="c",
        turn=0,
        start_ns=0,
        end_ns=170 * MS,
        chunk_ns=[100 * MS, 110 * MS, 130 * MS, 160 * MS],
        chunk_tokens=[1, 2, 1, 3],
    )
    base.update(kw)
    return RequestRecord(**base)


def test_latency_definitions_by_hand():
    r = _record()
    assert r.tokens == 7
    assert ttft_s(r) == pytest.approx(0.100)
    assert e2e_s(r) == pytest.approx(0.170)
    assert tpot_s(r) == pytest.approx(0.070 / 6)
    assert step_times_s(r) == pytest.approx([0.010, 0.020, 0.030])
    # ITL per token: 10 ms gap over 2 tokens -> 5, 5; 20 ms over 1 -> 20; 30 ms over 3 -> 10, 10, 10
    assert itl_s(r) == pytest.approx([0.005, 0.005, 0.020, 0.010, 0.010, 0.010])
    assert user_tps(r) == pytest.approx(6 / 0.060)


def test_output_tps_and_distribution():
    r1 = RequestRecord("a", "c", 0, start_ns=0, end_ns=1000 * MS, chunk_ns=[1], chunk_tokens=[10])
    r2 = RequestRecord("b", "c", 0, start_ns=500 * MS, end_ns=2000 * MS, chunk_ns=[1], chunk_tokens=[30])
    bad = RequestRecord("x", "c", 0, start_ns=0, end_ns=9000 * MS, error={"cause": "timeout", "detail": ""})
    assert output_tps([r1, r2, bad]) == pytest.approx(40 / 2.0)
    d = distribution([1.0, 2.0, 3.0, 4.0, None])
    assert d.mean == 2.5 and d.p50 == 2.5 and d.n == 4
    assert d.p90 == pytest.approx(3.7)
    assert distribution([None]).mean is None


def test_chunk_stats_treat_first_chunk_as_prefill():
    r = _record()
    s = chunk_stats(r, k=3)
    assert s.histogram == [1, 1, 1, 0]  # steps with 1, 2 and 3 tokens -> 0, 1, 2 accepted
    assert (s.steps, s.accepted, s.drafted) == (3, 3, 9)
    assert s.per_position == [2, 1, 0]
    assert s.source == "chunks"
    assert r.tokens == 1 + s.steps + s.accepted
    # a chunk with more than k+1 tokens means chunks are not steps: no estimate
    assert chunk_stats(_record(chunk_tokens=[1, 5, 1, 1]), k=3) is None
    assert chunk_stats(_record(chunk_tokens_exact=False), k=3) is None
    # per-request stats win over chunk counting
    sd = SDStats(9, 4, 3, source="per_request")
    assert request_stats(_record(sd=sd), DecodeBasis(3, True)) is sd
    assert request_stats(_record(), DecodeBasis(3, False)) is None


def test_counter_delta():
    before = {
        "num_drafts": 10,
        "num_draft_tokens": 30,
        "num_accepted_tokens": 12,
        "per_position": {"0": 6, "1": 4, "2": 2},
    }
    after = {
        "num_drafts": 20,
        "num_draft_tokens": 60,
        "num_accepted_tokens": 27,
        "per_position": {"0": 13, "1": 9, "2": 5},
    }
    d = counter_delta(before, after)
    assert (d.steps, d.drafted, d.accepted) == (10, 30, 15)
    assert d.per_position == [7, 5, 3]
    assert d.histogram == [3, 2, 2, 3]
    assert d.source == "counter_delta"
    assert counter_delta(None, after) is None
    assert counter_delta({"num_drafts": 1}, after) is None


def test_invariants_flag_violations():
    r = _record(completion_tokens=7)
    tokens_only = DecodeBasis(3, chunks_are_steps=False)
    good = SDStats(drafted=9, accepted=3, steps=3, histogram=[1, 1, 1, 0])
    assert inv.al_bounded([(r, good)], k=3).ok is True
    too_high = SDStats(drafted=9, accepted=12, steps=3)
    assert inv.al_bounded([(r, too_high)], k=3).ok is False
    assert inv.histogram_sums([(r, good)]).ok is True
    assert inv.histogram_sums([(r, SDStats(9, 3, 3, histogram=[1, 1, 0, 0]))]).ok is False
    assert inv.tokens_match_steps([(r, good)], tokens_only).ok is True  # 7 = 1 + 3 steps + 3 accepted
    # more tokens than 1 + steps + accepted: decode steps without a draft (vLLM/llama.cpp count only
    # steps that verified a draft) -- allowed, and counted in the detail
    # (chunks not steps here: tokens vs 1 + steps + accepted only bound them from below)
    undrafted = inv.tokens_match_steps([(r, SDStats(9, 2, 3))], tokens_only)
    assert undrafted.ok is True and "1 request had at least 1 decode steps without a draft" in undrafted.detail
    # fewer: the last step's drafts accepted past the stop point, at most k: 7 = 1 + 3 + 5 - 2
    cut = inv.tokens_match_steps([(r, SDStats(12, 5, 3))], tokens_only)
    assert cut.ok is True and "1 request had at least 2 accepted drafts past the stop point" in cut.detail
    assert "allowed: up to k=3 per request" in cut.detail
    # more than k short is impossible: 7 < 1 + 4 + 6 - 3
    assert inv.tokens_match_steps([(r, SDStats(12, 6, 4))], tokens_only).ok is False
    # steps a source inferred from the token count are not checked against it
    assert inv.tokens_match_steps([(r, SDStats(12, 6, 4, inferred=["steps"]))], tokens_only).ok is None
    assert inv.histogram_sums([]).ok is None
    ok = inv.per_request_vs_counters(SDStats(100, 50, 40), SDStats(100, 50, 40), 0)
    assert ok.ok is True
    near = inv.per_request_vs_counters(SDStats(1000, 500, 400), SDStats(1005, 503, 402), 0)
    assert near.ok is True  # within 1 %
    off = inv.per_request_vs_counters(SDStats(100, 50, 40), SDStats(200, 90, 80), 0)
    assert off.ok is False and "other traffic" in off.detail
    # llama.cpp: steps inferred per request are not compared; drafted/accepted are
    inferred = inv.per_request_vs_counters(SDStats(30, 12, 11, inferred=["steps"]), SDStats(30, 12, 10), 0)
    assert inferred.ok is True and "steps:" not in inferred.detail
    assert inv.per_request_vs_counters(SDStats(30, 12, 11, inferred=["steps"]), SDStats(33, 12, 11), 0).ok is False
    # counters beyond what our requests could produce: 7 tokens -> at most 6 steps + accepted
    assert inv.counters_within_traffic(SDStats(9, 3, 3), [r], 0).ok is True
    extra = inv.counters_within_traffic(SDStats(30, 10, 20), [r], 0)
    assert extra.ok is False and "other traffic" in extra.detail
    # chunk estimate vs an engine source: accepted must agree up to k per request cut at the stop point;
    # steps are reported (chunks also count decode steps without a draft)
    ch = inv.chunks_vs(SDStats(30, 10, 10), "per_request", SDStats(60, 8, 20), 0, n_requests=1, k=3)
    assert ch.ok is True and "gap 2" in ch.detail and "chunks 20 decode steps vs per_request 10 steps" in ch.detail
    counted = inv.StepAccount(requests=1, undrafted=10, undrafted_requests=1)
    ch = inv.chunks_vs(SDStats(30, 10, 10), "per_request", SDStats(60, 8, 20), 0, 1, 3, counted)
    assert "(10 decode steps without a draft)" in ch.detail
    merged = inv.chunks_vs(SDStats(30, 10, 10), "per_request", SDStats(27, 12, 9), 0, n_requests=1, k=3)
    assert merged.ok is False and "merged chunks" in merged.detail  # chunks saw 2 more accepted
    too_far = inv.chunks_vs(SDStats(300, 100, 100), "counter_delta", SDStats(300, 90, 100), 0, n_requests=2, k=3)
    assert too_far.ok is False  # gap 10 > 2 x 3 + 1
    assert inv.chunks_vs(None, "per_request", SDStats(1, 1, 1), 0, 1, 3).ok is None


def test_summarize_contract_and_sources():
    sd1 = SDStats(drafted=9, accepted=3, steps=3, per_position=[2, 1, 0], histogram=[1, 1, 1, 0])
    recs = [
        _record(question_id="a", category="math", sd=sd1, completion_tokens=7),
        _record(question_id="b", category="coding", sd=sd1, completion_tokens=7),
        RequestRecord("c", "coding", 0, start_ns=0, end_ns=1, error={"cause": "http_500", "detail": ""}),
    ]
    s = summarize(recs, DecodeBasis(3))
    o = s.overall
    assert o.requests == 2 and o.errors == 1
    assert o.acceptance_length == pytest.approx(2.0)
    assert o.acceptance_length_token_weighted == pytest.approx(2.0)
    assert o.acceptance_rate == pytest.approx(6 / 18)
    assert o.conditional_acceptance_rate == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert o.joint_acceptance_rate == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert o.histogram == {"1": 2, "2": 2, "3": 2, "4": 0}
    for key in ("ttft_s", "tpot_s", "itl_s", "step_time_s", "e2e_s", "user_tps"):
        assert set(getattr(o, key).to_dict()) >= {"mean", "p50", "p90", "p99"}
    assert o.output_tps is not None
    assert s.errors_by_cause == {"http_500": 1}
    assert s.per_category["coding"].requests == 1 and s.per_category["coding"].errors == 1
    assert s.sources.acceptance == "per_request"
    assert all(i.ok for i in s.invariants if i.ok is not None)


def test_summarize_falls_back_to_counters_then_chunks():
    recs = [_record(question_id="a"), _record(question_id="b")]  # no per-request stats
    s = summarize(recs, DecodeBasis(3))
    assert s.sources.acceptance == "chunks"
    assert s.overall.acceptance_length_token_weighted == pytest.approx(2.0)
    window = {
        "segment": 0,
        "before": {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "per_position": {}},
        "after": {"num_drafts": 6, "num_draft_tokens": 18, "num_accepted_tokens": 6, "per_position": {}},
    }
    s2 = summarize(recs, DecodeBasis(3), counter_windows=[window])
    assert s2.sources.acceptance == "counter_delta"
    assert s2.sources.acceptance_per_category == "chunks"
    check = [i for i in s2.invariants if i.name.startswith("chunks_vs_counter_delta")]
    assert check and check[0].ok is True


# ---- figures that mean the same on every engine (docs/metrics.md) -------------------------------------------

K = 3
CHUNK_STEPS = DecodeBasis(K)  # one chunk per verification step
TOKEN_CHUNKS = DecodeBasis(K, chunks_are_steps=False)


def _stream(chunk_tokens: list[int], **kw) -> RequestRecord:
    """A record whose chunks arrive 10 ms apart."""
    return _record(chunk_tokens=chunk_tokens, chunk_ns=[(100 + 10 * i) * MS for i in range(len(chunk_tokens))], **kw)


def _reference_like(**kw) -> RequestRecord:
    """The reference engine: steps count every target pass; 2 of its 6 steps found no n-gram match.
    Steps yield 3, 1, 1, 4, 2, 1 tokens (accepted 2, 0, 0, 3, 1, 0 = 6; 13 tokens in all)."""
    sd = SDStats(12, 6, 6, per_position=[3, 2, 1], histogram=[3, 1, 1, 1], undrafted_steps=2)
    return _stream([1, 3, 1, 1, 4, 2, 1], sd=sd, completion_tokens=13, **kw)


def _vllm_like(accepted: int = 6, **kw) -> RequestRecord:
    """vLLM: one chunk per step; its stats count the 4 steps that drafted (6 chunks after the first: 2 of the
    1-token chunks drafted nothing).  Chunk tokens 4, 1, 2, 1, 1, 3 hold 3 + 1 + 2 = 6 accepted drafts;
    ``accepted=7``: the last step accepted one draft past the stop point (counted, never sent)."""
    hist = [1, 1, 1, 1] if accepted == 6 else [1, 1, 0, 2]
    sd = SDStats(12, accepted, 4, per_position=per_position_from_histogram(hist), histogram=hist)
    return _stream([1, 4, 1, 2, 1, 1, 3], sd=sd, completion_tokens=13, finish_reason="length", **kw)


def test_decode_steps_reference_like_record():
    r = _reference_like()
    d = decode_steps(r, r.sd, CHUNK_STEPS)
    assert (d.tokens, d.decode_steps, d.drafted_steps, d.undrafted_steps, d.cut) == (12, 6, 4, 2, 0)
    assert d.source == "per_request" and d.reason == ""
    o = summarize([r], CHUNK_STEPS).overall
    assert o.acceptance_length == pytest.approx(1 + 6 / 6)  # the engine's steps: every target pass
    assert o.acceptance_length_drafted_steps == pytest.approx(1 + 6 / 4)
    assert o.acceptance_length_drafted_steps_token_weighted == pytest.approx(1 + 6 / 4)
    assert o.drafted_steps == 4 and o.drafted_steps_source == "per_request"
    assert o.tokens_per_decode_step == pytest.approx(12 / 6)
    assert (o.decode_steps, o.decode_tokens, o.decode_steps_source) == (6, 12, "per_request")
    assert o.undrafted_steps == 2 and o.undrafted_step_share == pytest.approx(2 / 6)


def test_decode_steps_vllm_like_record():
    r = _vllm_like()
    d = decode_steps(r, r.sd, CHUNK_STEPS)
    assert (d.tokens, d.decode_steps, d.drafted_steps, d.undrafted_steps, d.cut) == (12, 6, 4, 2, 0)
    assert d.source == "chunks"
    o = summarize([r], CHUNK_STEPS).overall
    assert o.acceptance_length == pytest.approx(1 + 6 / 4)  # vLLM's steps: drafted ones only
    assert o.acceptance_length_drafted_steps == pytest.approx(1 + 6 / 4)
    assert o.acceptance_length_drafted_steps_token_weighted == pytest.approx(1 + 6 / 4)
    assert o.tokens_per_decode_step == pytest.approx(12 / 6)
    assert o.decode_steps_source == "chunks" and o.undrafted_step_share == pytest.approx(2 / 6)
    # the same request, the one engine (reference-like) and the other (vLLM-like): the same three figures
    ref = summarize([_reference_like()], CHUNK_STEPS).overall
    for key in ("acceptance_length_drafted_steps_token_weighted", "tokens_per_decode_step", "undrafted_step_share"):
        assert getattr(o, key) == pytest.approx(getattr(ref, key)), key
    # one draft accepted past the stop point: counted by the engine, never sent
    cut = decode_steps(_vllm_like(accepted=7), _vllm_like(accepted=7).sd, CHUNK_STEPS)
    assert (cut.decode_steps, cut.drafted_steps, cut.cut) == (6, 4, 1)
    assert summarize([_vllm_like(accepted=7)], CHUNK_STEPS).overall.acceptance_length_drafted_steps == pytest.approx(
        2.75
    )
    # fewer chunks than the engine's drafted steps: merged, so the chunks count nothing
    merged = _stream([1, 7, 5], sd=SDStats(12, 6, 4), completion_tokens=13)
    assert decode_steps(merged, merged.sd, CHUNK_STEPS).decode_steps is None  # a 7-token chunk: not steps at all
    merged = _stream([1, 4, 4, 4], sd=SDStats(12, 9, 4), completion_tokens=13)
    m = decode_steps(merged, merged.sd, CHUNK_STEPS)
    assert m.decode_steps is None and m.drafted_steps == 4 and "merged" in m.reason


def test_decode_steps_without_the_information_are_none_with_the_reason():
    # per-request steps = drafted steps, chunks not steps: decode steps unknown; AL over drafted steps known
    r = _vllm_like()
    s = summarize([r], TOKEN_CHUNKS).overall
    assert s.acceptance_length_drafted_steps_token_weighted == pytest.approx(2.5)
    assert s.tokens_per_decode_step is None and s.undrafted_step_share is None and s.decode_steps is None
    assert s.decode_steps_source == f"none: 1 of 1 requests: {REASON_DRAFTED_ONLY}"
    # no SD stats at all: nothing, and why
    bare = _stream([1, 4, 1, 2])
    n = summarize([bare], TOKEN_CHUNKS).overall
    assert n.acceptance_length_drafted_steps is None and n.tokens_per_decode_step is None
    assert n.drafted_steps_source == n.decode_steps_source == "none: 1 of 1 requests: no SD stats"
    # chunks alone: decode steps known, which of them drafted is not
    c = summarize([bare], CHUNK_STEPS).overall
    assert c.tokens_per_decode_step == pytest.approx(7 / 3) and c.decode_steps_source == "chunks"
    assert c.acceptance_length_drafted_steps is None and c.undrafted_step_share is None
    assert c.drafted_steps_source == f"none: 1 of 1 requests: {REASON_CHUNKS_ONLY}"
    # a group is all or nothing: one request without the figure leaves the group's None
    mixed = summarize([_vllm_like(question_id="a"), _record(question_id="b")], TOKEN_CHUNKS)
    assert mixed.overall.acceptance_length_drafted_steps is None
    assert mixed.overall.drafted_steps_source.startswith("none: 1 of 2 requests")


def test_llamacpp_like_steps_inferred_drafted_steps_from_the_counters():
    """llama.cpp: steps = completion_tokens - 1 - accepted (every decode step); which drafted is unknown per
    request; the counters' num_drafts are the steps that drafted."""
    sd = SDStats(9, 5, 6, inferred=["steps"])
    r = _stream([1] * 12, sd=sd, completion_tokens=12)
    window = {
        "segment": 0,
        "before": {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "per_position": {}},
        "after": {"num_drafts": 3, "num_draft_tokens": 9, "num_accepted_tokens": 5, "per_position": {}},
    }
    s = summarize([r], TOKEN_CHUNKS, counter_windows=[window])
    o, cat = s.overall, s.per_category["c"]
    assert o.tokens_per_decode_step == pytest.approx(11 / 6) and o.decode_steps_source == "per_request_inferred"
    assert o.acceptance_length_drafted_steps_token_weighted == pytest.approx(1 + 5 / 3)
    assert o.drafted_steps == 3 and o.drafted_steps_source == "counter_delta"
    assert o.acceptance_length_drafted_steps is None  # a mean over requests needs each request's drafted steps
    assert cat.acceptance_length_drafted_steps_token_weighted is None
    assert cat.drafted_steps_source == f"none: 1 of 1 requests: {REASON_INFERRED}"


def test_step_counts_agree_across_checks():
    """The tokens check and the chunk check count undrafted steps with one function: main said 1 (tokens beyond
    1 + steps + accepted, net of the draft cut at the stop point) in one and 2 in the other."""
    recs = [_vllm_like(accepted=7)]
    s = summarize(recs, CHUNK_STEPS)
    by = {i.name: i for i in s.invariants}
    tokens = by["tokens_vs_accepted_plus_steps"]
    assert tokens.ok is True
    assert "1 request had 2 decode steps without a draft; 1 request had 1 accepted drafts past the stop point" in (
        tokens.detail
    )
    assert "(2 decode steps without a draft)" in by["chunks_vs_per_request[segment 0]"].detail
    acc = inv.step_account([(r, r.sd) for r in recs], CHUNK_STEPS)
    assert (acc.undrafted, acc.cut, acc.bounded) == (2, 1, 0)


def _window(steps: int, accepted: int, drafted: int) -> dict:
    zero = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "per_position": {}}
    after = {"num_drafts": steps, "num_draft_tokens": drafted, "num_accepted_tokens": accepted, "per_position": {}}
    return {"segment": 0, "before": zero, "after": after}


def test_reference_reply_ending_on_an_accepted_eos_draft_is_no_other_traffic():
    """The reference engine's last step accepted 2 drafts, the second EOS: the reply ends there without a bonus
    token, so it has one token fewer than 1 + steps + accepted, and its counters (every step) are one above
    the tokens: main failed counters_within_our_traffic."""
    sd = SDStats(12, 8, 6, per_position=[4, 3, 1], histogram=[2, 1, 2, 1], undrafted_steps=2)
    r = _stream([1, 3, 1, 1, 4, 2, 2], sd=sd, completion_tokens=14, finish_reason="stop")
    assert r.tokens == 1 + sd.steps + sd.accepted - 1
    s = summarize([r], CHUNK_STEPS, counter_windows=[_window(6, 8, 12)])
    by = {i.name: i for i in s.invariants}
    assert all(i.ok for i in s.invariants), s.invariants
    within = by["counters_within_our_traffic[segment 0]"].detail
    assert within.startswith("steps+accepted 14 <= 13 tokens our 1 successful request produced after their first + 3")
    assert "up to k=3 per request accepted past the stop point" in within
    tokens = by["tokens_vs_accepted_plus_steps"].detail
    assert "1 request had 2 decode steps without a draft; 1 request had 1 accepted drafts past the stop point" in (
        tokens
    )
    assert "(2 decode steps without a draft)" in by["chunks_vs_per_request[segment 0]"].detail
    assert s.overall.tokens_per_decode_step == pytest.approx(13 / 6)
    assert s.overall.acceptance_length_drafted_steps == pytest.approx(1 + 8 / 4)


def _with_failures() -> list[RequestRecord]:
    """Two vLLM-like successes (steps 4, accepted 6, drafted 12 each), a stream reset after 4 chunks (6 tokens
    after its first in 3 chunks, 3 accepted), an HTTP 500 and the turn after it (never sent)."""
    reset = _stream([1, 3, 2, 1], question_id="r", error={"cause": "reset", "detail": "connection reset"})
    http = RequestRecord("h", "c", 0, start_ns=0, end_ns=1, error={"cause": "http_500", "detail": ""})
    later = RequestRecord("h", "c", 1, start_ns=1, end_ns=1, error={"cause": "prior_turn_failed", "detail": ""})
    return [_vllm_like(question_id="a"), _vllm_like(question_id="b"), reset, http, later]


def test_failed_partial_streams_explain_the_counters_excess():
    recs = _with_failures()
    fw = inv.failed_work(recs, CHUNK_STEPS, (20, "max_tokens"))
    assert (fw.failed, fw.sent, fw.tokens, fw.steps_min, fw.streamed_bound, fw.limit_total) == (3, 1, 6, 3, 9, 22)
    # the counters hold the successes (8 steps, 12 accepted, 24 drafted) + what the reset streamed (3, 3, 9)
    s = summarize(recs, CHUNK_STEPS, counter_windows=[_window(11, 15, 33)])
    by = {i.name: i for i in s.invariants}
    assert not [i for i in s.invariants if i.ok is False], s.invariants
    pr = by["per_request_vs_counter_delta[segment 0]"].detail
    assert "counters exceed our successful requests by 9 drafted, 3 accepted, 3 steps" in pr
    assert "1 failed request streamed 6 tokens (>= 3 steps) before failing: up to 9 steps + accepted" in pr
    assert pr.endswith("allowed]")
    assert by["counters_within_our_traffic[segment 0]"].detail.startswith(
        "steps+accepted 26 <= 24 tokens our 2 successful requests produced after their first + 6 allowed"
    )
    # more than it streamed, within what it could decode up to the output limit (13: the replies that stopped at
    # the length limit): the server went on after the client saw its last chunk
    s = summarize(recs, CHUNK_STEPS, counter_windows=[_window(14, 18, 42)])
    pr = {i.name: i for i in s.invariants}["per_request_vs_counter_delta[segment 0]"]
    assert pr.ok is True and "up to the output limit of 13 tokens (replies that stopped at the length limit)" in (
        pr.detail
    )


def test_excess_the_failures_cannot_explain_is_other_traffic():
    recs = _with_failures()
    # 40 steps and 40 accepted beyond the successes: the reset request decoded to max_tokens 20 explains 22 at most
    s = summarize(recs, CHUNK_STEPS, counter_windows=[_window(48, 52, 144)], max_tokens=20)
    by = {i.name: i for i in s.invariants}
    for name in ("per_request_vs_counter_delta[segment 0]", "counters_within_our_traffic[segment 0]"):
        assert by[name].ok is False, by[name]
        assert "1 failed request streamed 6 tokens (>= 3 steps) before failing" in by[name].detail
        assert "they explain at most 22: other traffic on the server?" in by[name].detail
    assert by["chunks_vs_counter_delta[segment 0]"].ok is False
    # HTTP errors and turns never sent explain nothing: with the reset request gone, 3 steps + 3 accepted more
    # than the successes fail
    no_stream = [r for r in recs if r.question_id != "r"]
    s = summarize(no_stream, CHUNK_STEPS, counter_windows=[_window(11, 15, 33)])
    pr = {i.name: i for i in s.invariants}["per_request_vs_counter_delta[segment 0]"]
    assert pr.ok is False and "no failed request reached decoding to explain it: other traffic" in pr.detail


def test_a_retried_attempts_partial_work_is_allowed_in_the_segment_that_sent_it():
    """--resume retried the reset request in segment 1: its final attempt is a success there, and the failed
    attempt (superseded, kept as history) is what explains segment 0's counter excess."""
    recs = _with_failures()
    reset = next(r for r in recs if r.question_id == "r")
    retried = _vllm_like(question_id="r", segment=1, attempt=1)
    final, superseded = final_attempts([*recs, retried])
    assert reset in superseded and retried in final and reset not in final
    windows = [_window(11, 15, 33), {**_window(4, 6, 12), "segment": 1}]
    s = summarize(final, CHUNK_STEPS, counter_windows=windows, superseded=superseded)
    assert not [i for i in s.invariants if i.ok is False], s.invariants
    assert s.overall.errors == 2 and s.overall.requests == 3  # final attempts only: the reset is not counted
    pr = {i.name: i for i in s.invariants}["per_request_vs_counter_delta[segment 0]"]
    assert "1 failed request streamed 6 tokens" in pr.detail
    # without the history the same counters look like other traffic
    alone = summarize(final, CHUNK_STEPS, counter_windows=windows)
    assert {i.name for i in alone.invariants if i.ok is False} >= {"per_request_vs_counter_delta[segment 0]"}
