"""Paired statistics (analysis/stats.py, docs/statistics.md): a bootstrap over conversations that keeps the
pairing, checked by hand on constructed records, for coverage and the A/A false-positive rate on simulated
experiments with a known truth, against a bootstrap over turns, with repeats, and end to end through
`speedbench report A B` on mock runs."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speedbench.analysis.stats import (
    NO_PAIRS,
    ONE_CONVERSATION,
    PairedSample,
    bootstrap,
    combine_repeats,
    resample_statistics,
    stats_by_category,
)
from speedbench.cli import app
from speedbench.metrics.latency import e2e_s, output_tps, user_tps
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord, SDStats
from speedbench.results.estimates import prompts_needed

MS = 1_000_000  # ns


def rec(
    qid: str,
    turn: int,
    tpot_ms: float,
    *,
    tokens: int = 11,
    ttft_ms: float = 10.0,
    start_ms: float = 0.0,
    category: str = "qa",
    sd: SDStats | None = None,
    ok: bool = True,
) -> RequestRecord:
    """A request whose first token arrives ttft_ms after its start and the other tokens - 1 in one chunk
    (tokens - 1) × tpot_ms later: user tok/s = 1000 / tpot_ms, TPOT = tpot_ms, E2E = ttft + (tokens-1) tpot."""
    first = start_ms + ttft_ms
    last = first + (tokens - 1) * tpot_ms
    return RequestRecord(
        qid,
        category,
        turn,
        start_ns=round(start_ms * MS),
        end_ns=round(last * MS),
        chunk_ns=[round(first * MS), round(last * MS)],
        chunk_tokens=[1, tokens - 1],
        sd=sd,
        error=None if ok else {"cause": "http_500", "detail": ""},
    )


def sequential(records: list[RequestRecord]) -> list[RequestRecord]:
    """The same requests one after another (concurrency 1): each starts when the previous one ends."""
    out, t = [], 0
    for r in records:
        shift = t - r.start_ns
        out.append(
            RequestRecord(
                r.question_id,
                r.category,
                r.turn,
                r.start_ns + shift,
                r.end_ns + shift,
                [c + shift for c in r.chunk_ns],
                list(r.chunk_tokens),
                sd=r.sd,
                error=r.error,
            )
        )
        t = r.end_ns + shift
    return out


def sample_of(a: list[RequestRecord], b: list[RequestRecord], k_a: int = 0, k_b: int = 3) -> PairedSample:
    return combine_repeats([a], [b], DecodeBasis(k_a), DecodeBasis(k_b))


# ---- hand-checked ---------------------------------------------------------------------------------------

SD_OFF = SDStats(drafted=0, accepted=0, steps=10)  # 11 tokens, 10 decode steps, nothing drafted: AL 1
SD_ON = SDStats(drafted=15, accepted=5, steps=5)  # 11 tokens = 1 + 5 steps + 5 accepted: AL 2


def test_known_speedup_is_exact_and_its_interval_degenerate() -> None:
    """B's TPOT is exactly half of A's for every request (the TPOT varying across conversations), TTFT the same:
    every resample's speedup is 2 exactly, TTFT ratio 1 exactly, AL 1 vs 2.  Run one request at a time on both
    sides: occupancy 1, so system tok/s = tokens / Σ E2E, its ratio = 1 / the E2E ratio, and overall it is the
    ratio of the runs' output tok/s (metrics.latency.output_tps)."""
    a, b = [], []
    for i in range(12):
        for turn in range(1 + i % 3):
            tpot = 4.0 * (i + 1) + 2 * turn
            a.append(rec(f"q{i:02d}", turn, tpot, sd=SD_OFF))
            b.append(rec(f"q{i:02d}", turn, tpot / 2, sd=SD_ON))
    a, b = sequential(a), sequential(b)
    st = bootstrap(sample_of(a, b), resamples=2000, seed=0)
    assert st.conversations == 12 and st.turns == len(a) == 24 and st.repeats == (1, 1) and st.note == ""

    sp = st["speedup"]
    assert sp.point == 2.0 and sp.lo == 2.0 and sp.hi == 2.0 and sp.significant is True and sp.half_width == 0
    tt = st["ttft_ratio"]
    assert tt.point == tt.lo == tt.hi == pytest.approx(1.0, abs=1e-12) and tt.significant is False
    assert (st["al_a"].point, st["al_a"].lo, st["al_a"].hi) == (1.0, 1.0, 1.0)
    assert st["al_a"].significant is None  # a level has no value of "no effect"
    assert (st["al_b"].point, st["al_diff"].point, st["al_diff"].lo, st["al_diff"].hi) == (2.0, 1.0, 1.0, 1.0)
    assert st["al_diff"].significant is True

    e2e = st["e2e_ratio"]
    by_hand = sum(e2e_s(r) for r in b) / sum(e2e_s(r) for r in a)
    assert e2e.point == pytest.approx(by_hand, rel=1e-12) and e2e.lo < by_hand < e2e.hi and e2e.hi < 1
    sys = st["system_tps_ratio"]
    assert sys.point == pytest.approx(1 / by_hand, rel=1e-9)
    assert sys.point == pytest.approx(output_tps(b) / output_tps(a), rel=1e-9)
    assert sys.lo == pytest.approx(1 / e2e.hi, rel=1e-9) and sys.hi == pytest.approx(1 / e2e.lo, rel=1e-9)


def three_conversations() -> tuple[list[RequestRecord], list[RequestRecord]]:
    """c1: 1 turn, A 100 tok/s, B 200; c2: 2 turns, A 100 and 50, B 100 and 100; c3: 1 turn, A 250, B 200."""
    a = [rec("c1", 0, 10), rec("c2", 0, 10), rec("c2", 1, 20), rec("c3", 0, 4)]
    b = [rec("c1", 0, 5), rec("c2", 0, 10), rec("c2", 1, 10), rec("c3", 0, 5)]
    return a, b


def test_three_conversations_by_hand() -> None:
    """Point: mean user tok/s A = (100 + 100 + 50 + 250) / 4 = 125, B = (200 + 100 + 100 + 200) / 4 = 150,
    speedup 1.2 (a mean over turns: c2 counts twice).  The 27 equally likely resamples (3 draws of 3) range from
    all-c3 (200/250 = 0.8) to all-c1 (200/100 = 2.0), each with probability 1/27 = 3.7% > 2.5%: the exact 95%
    percentile interval is [0.8, 2.0], which 2,000 resamples find.  It contains 1: not significant."""
    a, b = three_conversations()
    assert [user_tps(r) for r in a] == pytest.approx([100, 100, 50, 250])
    s = sample_of(a, b)
    assert s.conversations == ("c1", "c2", "c3") and s.turns == 4

    # one resample by hand: c1 twice, c2 once: A (2·100 + 100 + 50) / 4 = 87.5, B (2·200 + 100 + 100) / 4 = 150
    one = resample_statistics(s, np.array([[2.0, 1.0, 0.0]]), np.ones((1, 1)), np.ones((1, 1)))
    assert one["speedup"][0] == pytest.approx(150 / 87.5)

    # every resample of the exact bootstrap distribution
    weights = np.array([np.bincount(d, minlength=3) for d in itertools.product(range(3), repeat=3)], dtype=float)
    exact = np.sort(resample_statistics(s, weights, np.ones((27, 1)), np.ones((27, 1)))["speedup"])
    assert exact[0] == pytest.approx(0.8) and exact[-1] == pytest.approx(2.0)
    assert np.sum(np.isclose(exact, 0.8)) == np.sum(np.isclose(exact, 2.0)) == 1  # each one draw in 27

    st = bootstrap(s, resamples=2000, seed=0)
    sp = st["speedup"]
    assert sp.point == pytest.approx(1.2) and sp.lo == pytest.approx(0.8) and sp.hi == pytest.approx(2.0)
    assert sp.significant is False and sp.half_width == pytest.approx(0.6)
    assert st["al_a"].point is None and st["al_diff"].lo is None  # no SD stats: no AL, no interval
    # seeded: the same seed gives the same intervals, another seed may not
    assert bootstrap(s, 2000, 0).estimates == st.estimates


def test_a_category_of_one_conversation_has_no_interval() -> None:
    a, b = three_conversations()
    a = [rec(r.question_id, r.turn, 10, category="solo" if r.question_id == "c3" else "qa") for r in a]
    by_cat = stats_by_category(sample_of(a, b), ["qa", "solo", "empty"])
    assert list(by_cat) == ["qa", "solo", "empty", "overall"]
    assert by_cat["solo"].conversations == 1 and by_cat["solo"].note == ONE_CONVERSATION
    assert by_cat["solo"]["speedup"].point == pytest.approx(2.0) and by_cat["solo"]["speedup"].lo is None
    assert by_cat["solo"]["speedup"].significant is None
    assert by_cat["empty"].conversations == 0 and by_cat["empty"].note == NO_PAIRS
    assert by_cat["empty"]["speedup"].point is None
    assert by_cat["qa"].conversations == 2 and by_cat["qa"].turns == 3 and by_cat["qa"]["speedup"].lo is not None
    assert by_cat["overall"].conversations == 3


def test_prompts_needed() -> None:
    """The half-width shrinks as 1/sqrt(n): 8 conversations at ±0.20 need 8 × (0.20/0.05)² = 128 for ±0.05."""
    assert prompts_needed(0.20, 8, 0.05) == 128
    assert prompts_needed(0.10, 40, 0.10) == 40
    assert prompts_needed(0.01, 40, 0.10) == 2  # never fewer than the bootstrap needs
    assert prompts_needed(0.07, 10, 0.05) == math.ceil(10 * 1.96)
    with pytest.raises(ValueError):
        prompts_needed(0.1, 10, 0)


# ---- simulated experiments with a known truth ------------------------------------------------------------


def simulate(
    rng: np.random.Generator, conversations: int, turns: int, speedup: float, speedup_sd: float = 0.2
) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """A paired experiment whose true speedup (ratio of mean user tok/s) is ``speedup``: conversation c's
    user tok/s on A is u_c × e (u_c lognormal, the conversation's difficulty shared by its turns; e per-request
    noise of mean 1), on B u_c × s_c × e' with s_c of mean ``speedup`` (the conversation's own speedup).
    E[u s e'] / E[u e] = E[s] = ``speedup``."""
    a, b = [], []
    u = rng.lognormal(0.0, 0.5, conversations)
    s = speedup * rng.lognormal(-(speedup_sd**2) / 2, speedup_sd, conversations)
    noise = rng.lognormal(-(0.1**2) / 2, 0.1, (2, conversations, turns))
    for c in range(conversations):
        for t in range(turns):
            tps_a = 100 * u[c] * noise[0, c, t]
            tps_b = 100 * u[c] * s[c] * noise[1, c, t]
            a.append(rec(f"c{c:03d}", t, 1000 / tps_a))
            b.append(rec(f"c{c:03d}", t, 1000 / tps_b))
    return a, b


SIMULATIONS = 200


def test_coverage_of_the_true_speedup() -> None:
    """200 simulated experiments of 40 conversations × 2 turns, true speedup 1.5: the 95% interval covers it in
    90-99% of them (measured: 94%; median half-width ±0.11)."""
    rng = np.random.default_rng(12)
    covered = 0
    for i in range(SIMULATIONS):
        a, b = simulate(rng, 40, 2, 1.5)
        e = bootstrap(sample_of(a, b), resamples=1000, seed=i)["speedup"]
        assert e.lo is not None and e.hi is not None
        covered += e.lo <= 1.5 <= e.hi
    assert 0.90 <= covered / SIMULATIONS <= 0.99, covered


def test_a_a_is_not_significant_at_about_the_nominal_rate() -> None:
    """The same distribution on both sides (true speedup 1): not significant in 88-99% of 200 experiments
    (measured: 92%: a percentile bootstrap of 40 units is a little narrow)."""
    rng = np.random.default_rng(34)
    quiet = 0
    for i in range(SIMULATIONS):
        a, b = simulate(rng, 40, 2, 1.0)
        quiet += bootstrap(sample_of(a, b), resamples=1000, seed=i)["speedup"].significant is False
    assert 0.88 <= quiet / SIMULATIONS <= 0.99, quiet


def test_conversations_not_turns() -> None:
    """Turns of one conversation share its speedup (here almost exactly: 5 turns, per-turn noise 1%): there are
    20 independent units, not 100.  A bootstrap over turns (each turn relabelled its own conversation) gives an
    interval about sqrt(5) narrower (measured: median ratio of half-widths 2.04), and over 60 simulated experiments
    covers the true speedup in 62% of them, against 92% for the bootstrap over conversations."""
    rng = np.random.default_rng(5)
    conv_cover = turn_cover = 0
    ratios = []
    for i in range(60):
        a, b = simulate(rng, 20, 5, 1.5, speedup_sd=0.3)
        conv = bootstrap(sample_of(a, b), resamples=1000, seed=i)["speedup"]
        as_turns = [rec(f"{r.question_id}/{r.turn}", 0, 1000 / (user_tps(r) or 1)) for r in a]
        bs_turns = [rec(f"{r.question_id}/{r.turn}", 0, 1000 / (user_tps(r) or 1)) for r in b]
        turn = bootstrap(sample_of(as_turns, bs_turns), resamples=1000, seed=i)["speedup"]
        assert conv.point == pytest.approx(turn.point)  # the same point estimate
        assert conv.half_width and turn.half_width
        ratios.append(conv.half_width / turn.half_width)
        conv_cover += conv.lo <= 1.5 <= conv.hi
        turn_cover += turn.lo <= 1.5 <= turn.hi
    assert 1.8 < float(np.median(ratios)) < 2.6, np.median(ratios)  # sqrt(5) = 2.24
    assert turn_cover < 0.75 * 60 < conv_cover, (turn_cover, conv_cover)


# ---- repeats --------------------------------------------------------------------------------------------


def _slower(records: list[RequestRecord], factor: float) -> list[RequestRecord]:
    """The same requests with every TPOT × factor (a run on a busier machine)."""
    return [rec(r.question_id, r.turn, 1000 / (user_tps(r) or 1) * factor, category=r.category) for r in records]


def test_repeats_that_agree_change_nothing_and_repeats_that_disagree_widen_the_interval() -> None:
    rng = np.random.default_rng(7)
    a, b = simulate(rng, 30, 2, 1.5)
    single = bootstrap(sample_of(a, b), 2000, 0)["speedup"]
    # identical repeats: the statistic of any draw of repeats is the single run's; the same conversation draws
    same = bootstrap(combine_repeats([a, a, a], [b, b], DecodeBasis(0), DecodeBasis(0)), 2000, 0)["speedup"]
    assert same.point == pytest.approx(single.point) and same.lo == pytest.approx(single.lo)
    assert same.hi == pytest.approx(single.hi)

    # B's second repeat ran 30% slower: pooled point = mean tok/s over both repeats; a wider interval
    b2 = _slower(b, 1.3)
    mixed = combine_repeats([a, a], [b, b2], DecodeBasis(0), DecodeBasis(0))
    assert mixed.a.repeats == mixed.b.repeats == 2 and mixed.turns == 60
    st = bootstrap(mixed, 2000, 0)
    mean_a = np.mean([user_tps(r) for r in a])
    mean_b = np.mean([user_tps(r) for r in (*b, *b2)])
    assert st["speedup"].point == pytest.approx(mean_b / mean_a)
    assert st["speedup"].half_width > 2 * single.half_width
    assert st["speedup"].lo < single.lo
    assert st.repeats == (2, 2)


def test_repeats_pair_the_keys_successful_in_every_repeat() -> None:
    a, b = three_conversations()
    a_failed = [rec(r.question_id, r.turn, 10, ok=(r.question_id, r.turn) != ("c2", 1)) for r in a]
    s = combine_repeats(
        [a, a_failed], [b, b[:3]], DecodeBasis(0), DecodeBasis(0)
    )  # c2 turn 1 failed in one A repeat, c3 missing in B
    assert s.conversations == ("c1", "c2") and s.turns == 2
    with pytest.raises(ValueError):
        combine_repeats([], [b], DecodeBasis(0), DecodeBasis(0))


def test_run_to_run_drift_needs_repeats() -> None:
    """A/A where each run has its own speed (run-level drift, lognormal sd 10%, larger than what 40 prompts
    resolve): one run a side is significant far more often than 5%; 3 repeats a side, combined, bring it back
    near the nominal rate (measured: 69% vs 7% significant over 100 experiments)."""
    rng = np.random.default_rng(9)
    single = combined = 0
    n = 100
    for i in range(n):
        a0, b0 = simulate(rng, 40, 2, 1.0)
        drift = rng.lognormal(-0.005, 0.1, 6)
        a_reps = [_slower(a0, drift[j]) for j in range(3)]
        b_reps = [_slower(b0, drift[3 + j]) for j in range(3)]
        single += bool(bootstrap(sample_of(a_reps[0], b_reps[0]), 1000, i)["speedup"].significant)
        combined += bool(
            bootstrap(combine_repeats(a_reps, b_reps, DecodeBasis(0), DecodeBasis(0)), 1000, i)["speedup"].significant
        )
    assert single > 0.3 * n and combined < 0.15 * n, (single, combined)


def test_fast_enough() -> None:
    """2,000 resamples of 100 conversations (300 turns) in well under a second."""
    a, b = simulate(np.random.default_rng(0), 100, 3, 1.3)
    s = sample_of(a, b)
    t0 = time.perf_counter()
    bootstrap(s, 2000, 0)
    assert time.perf_counter() - t0 < 0.5


# ---- end to end: speedbench report A B ----------------------------------------------------------------------

runner = CliRunner()
MOCK = ["--engine", "mock", "-E", "step_ms=2", "-E", "ttft_ms=1", "--no-progress", "--warmup", "0"]
MOCK += ["--output-len", "8", "-n", "22"]  # 2 conversations in each of the starter set's 11 categories


@pytest.fixture(scope="module")
def mock_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SD off (k 0) and on (k 3, acceptance 0.8/0.6/0.4) on the same 22 conversations."""
    root = tmp_path_factory.mktemp("stats")
    for name, sd in (("off", ["--sd", "none"]), ("on", [])):
        res = runner.invoke(app, ["run", *MOCK, *sd, "--out", str(root / name)])
        assert res.exit_code == 0, res.output
    return root / "off", root / "on"


def _row(out: str, category: str, title: str = "B vs A (paired requests only)") -> list[str]:
    line = next(ln for ln in out.split(title)[1].splitlines() if ln.startswith(f"│ {category} "))
    return [c.strip() for c in line.strip("│").split("│")]


def test_report_prints_intervals(mock_runs: tuple[Path, Path]) -> None:
    off, on = mock_runs
    res = runner.invoke(app, ["report", str(off), str(on)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    overall = _row(out, "overall")
    assert overall[6].endswith("x") and overall[7].startswith("[") and "n.s." not in overall[7]
    lo, hi = (float(x) for x in overall[7].split("n.s.")[0].strip("[] ").split(","))
    assert 1.0 < lo <= float(overall[6].rstrip("x")) <= hi  # SD off vs on: clearly faster
    assert overall[2] == "1.000 [1.000, 1.000]"  # SD off: AL 1, every resample
    assert overall[3].count("[") == 1 and overall[8].startswith("±") and overall[9] == "22"
    qa = _row(out, "qa")
    assert qa[9] == "2" and qa[7].startswith("[")
    ratios = _row(out, "overall", "latency and system throughput")
    assert ratios[1] == "22" and all("[" in c for c in ratios[2:6]) and int(ratios[6]) >= 2
    assert "95% intervals: percentile bootstrap over conversations, 2000 resamples, seed 0" in out

    # the Python API gives the same figures (one code path for report and the sweep)
    from speedbench.analysis.pairing import compare_paired
    from speedbench.results.loader import load_run

    comparison = compare_paired(load_run(off), load_run(on))
    assert comparison.overall.stats["speedup"].point == pytest.approx(comparison.overall.speedup)
    assert f"{comparison.overall.speedup:.2f}x" == overall[6]
    again = runner.invoke(app, ["report", str(off), str(on), "--seed", "0", "--resamples", "2000"])
    assert again.stdout == out  # seeded
    refused = runner.invoke(app, ["report", str(off), str(on), "--resamples", "100"])
    assert refused.exit_code == 2


def _jittered(src: Path, dst: Path, sd: float, seed: int, scale: float = 1.0) -> Path:
    """A copy of a run whose every request took scale × f as long, f = exp(N(sd²/2, sd)) drawn independently per
    request (its TTFT and every gap after it stretched alike): its speed 1/f has mean 1."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    out = []
    for line in (src / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        f = scale * float(rng.lognormal(sd**2 / 2, sd))
        s = r["start_ns"]
        r["chunk_ns"] = [s + round((c - s) * f) for c in r["chunk_ns"]]
        r["end_ns"] = s + round((r["end_ns"] - s) * f)
        out.append(json.dumps(r))
    (dst / "records.jsonl").write_text("\n".join(out) + "\n")
    return dst


def test_report_a_a_is_not_significant(mock_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """A/A.  The same run twice: every resample's speedup is 1, interval [1.00, 1.00], not significant.  The
    mock's timing is a fixed schedule, so a second run of the same configuration differs only by the machine's
    timing noise, which on a busy machine can be a systematic drift between runs (what repeats are for, not
    the bootstrap): here the second run is the first with independent per-request noise (sd 15%) added, the
    run-to-run noise the bootstrap does cover, and the speedup interval contains 1."""
    off, _ = mock_runs
    res = runner.invoke(app, ["report", str(off), str(off)])
    assert res.exit_code == 0, res.output
    assert _row(res.stdout, "overall")[6:8] == ["1.00x", "[1.00, 1.00] n.s."]

    noisy = _jittered(off, tmp_path / "again", 0.15, seed=1)
    res = runner.invoke(app, ["report", str(off), str(noisy)])
    assert res.exit_code == 0, res.output
    overall = _row(res.stdout, "overall")
    assert overall[7].endswith("n.s."), overall
    slower = _jittered(off, tmp_path / "slower", 0.15, seed=1, scale=1.25)  # a real 25% slowdown is found
    overall = _row(runner.invoke(app, ["report", str(off), str(slower)]).stdout, "overall")
    assert not overall[7].endswith("n.s.") and float(overall[6].rstrip("x")) < 1, overall
