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
from speedbench.metrics.sources import chunk_stats, request_stats
from speedbench.records import RequestRecord, SDStats, per_position_from_histogram

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
    assert request_stats(_record(sd=sd), 3, True) is sd
    assert request_stats(_record(), 3, False) is None


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
    good = SDStats(drafted=9, accepted=3, steps=3, histogram=[1, 1, 1, 0])
    assert inv.al_bounded([(r, good)], k=3).ok is True
    too_high = SDStats(drafted=9, accepted=12, steps=3)
    assert inv.al_bounded([(r, too_high)], k=3).ok is False
    assert inv.histogram_sums([(r, good)]).ok is True
    assert inv.histogram_sums([(r, SDStats(9, 3, 3, histogram=[1, 1, 0, 0]))]).ok is False
    assert inv.tokens_match_steps([(r, good)], k=3).ok is True  # 7 = 1 + 3 steps + 3 accepted
    # more tokens than 1 + steps + accepted: decode steps without a draft (vLLM/llama.cpp count only
    # steps that verified a draft) -- allowed, and counted in the detail
    undrafted = inv.tokens_match_steps([(r, SDStats(9, 2, 3))], k=3)
    assert undrafted.ok is True and "1 requests had 1 decode steps without a draft" in undrafted.detail
    # fewer: the last step's drafts accepted past the stop point, at most k: 7 = 1 + 3 + 5 - 2
    cut = inv.tokens_match_steps([(r, SDStats(12, 5, 3))], k=3)
    assert cut.ok is True and "1 requests had 2 accepted drafts past the stop point" in cut.detail
    # more than k short is impossible: 7 < 1 + 4 + 6 - 3
    assert inv.tokens_match_steps([(r, SDStats(12, 6, 4))], k=3).ok is False
    # steps a source inferred from the token count are not checked against it
    assert inv.tokens_match_steps([(r, SDStats(12, 6, 4, inferred=["steps"]))], k=3).ok is None
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
    assert ch.ok is True and "10 without a draft" in ch.detail and "gap 2" in ch.detail
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
    s = summarize(recs, k=3)
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
    s = summarize(recs, k=3)
    assert s.sources.acceptance == "chunks"
    assert s.overall.acceptance_length_token_weighted == pytest.approx(2.0)
    window = {
        "segment": 0,
        "before": {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "per_position": {}},
        "after": {"num_drafts": 6, "num_draft_tokens": 18, "num_accepted_tokens": 6, "per_position": {}},
    }
    s2 = summarize(recs, k=3, counter_windows=[window])
    assert s2.sources.acceptance == "counter_delta"
    assert s2.sources.acceptance_per_category == "chunks"
    check = [i for i in s2.invariants if i.name.startswith("chunks_vs_counter_delta")]
    assert check and check[0].ok is True
