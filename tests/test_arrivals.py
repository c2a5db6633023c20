"""Traffic shapes (load/arrivals.py, docs/load.md): the open-loop schedule, its cap, ramp-up and duration.

Timing is never asserted as a figure: what is checked is what must hold whatever the machine's speed (an arrival
is never dispatched before it is due, the order follows the schedule, the cap is never exceeded, a schedule
depends only on its seed) plus the statistics of the schedule itself, which is pure arithmetic."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.load.arrivals import ArrivalStats, arrival_offsets, percentile, ramp_offsets
from speedbench.results.loader import load_run

runner = CliRunner()
MOCK = ["--engine", "mock", "-E", "step_ms=2", "-E", "ttft_ms=2", "--no-progress", "--warmup", "0"]


def test_schedule_is_seeded_starts_at_zero_and_has_the_requested_mean_and_spread():
    a = arrival_offsets(50, 10.0, 1.0, seed=3)
    assert a == arrival_offsets(50, 10.0, 1.0, seed=3) and a != arrival_offsets(50, 10.0, 1.0, seed=4)
    assert a[0] == 0.0 and all(y > x for x, y in zip(a, a[1:], strict=False))
    n = 20000
    # (shape b, its coefficient of variation 1/sqrt(b), a tolerance for the sample CV: ~4 standard errors)
    for burstiness, cv, cv_tol in ((1.0, 1.0, 0.04), (0.25, 2.0, 0.1), (4.0, 0.5, 0.03)):
        t = arrival_offsets(n + 1, 50.0, burstiness, seed=0)
        gaps = [y - x for x, y in zip(t, t[1:], strict=False)]
        mean = statistics.fmean(gaps)
        # gamma(shape b, scale 1/(R b)): mean 1/R, within 4 standard errors (cv / sqrt(n))
        assert mean == pytest.approx(1 / 50, rel=4 * cv / n**0.5)
        assert statistics.pstdev(gaps) / mean == pytest.approx(cv, rel=cv_tol)
    with pytest.raises(ValueError):
        arrival_offsets(3, 0.0)


def test_ramp_and_stats_by_hand():
    assert ramp_offsets(4, 2.0) == [0.0, 0.5, 1.0, 1.5] and ramp_offsets(3, 0.0) == [0.0, 0.0, 0.0]
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
    s = ArrivalStats("open", requested_rate=10.0, burstiness=1.0, conversations=4, starts_s=[0.0, 0.5, 1.0, 2.0])
    s.finish(lags=[0.0, 0.002, 0.004, 0.050], waits=[0.0, 0.3, 0.0, 0.0])
    assert s.started == 4 and s.achieved_rate == pytest.approx(1.5)  # 3 gaps over 2 s
    assert s.lag_p50_s == pytest.approx(0.003) and s.lag_max_s == 0.05 and s.slot_waits == 1
    # p99 of the lags: 0.004 + 0.97 * 0.046 = 0.04862 s > max(10 ms, 10% of the 100 ms mean gap)
    assert s.lag_p99_s == pytest.approx(0.04862)
    assert s.behind() is not None and "fell behind" in (s.behind() or "")
    s2 = ArrivalStats("open", requested_rate=10.0, burstiness=1.0, starts_s=[0.0, 0.1]).finish([0.001, 0.002], [])
    assert s2.behind() is None
    closed = ArrivalStats("closed", cap=4, conversations=2, starts_s=[0.0, 0.0]).finish([], [])
    assert closed.behind() is None and closed.achieved_rate is None and "closed loop: 2 of 2" in closed.line()


def _run(tmp: Path, *flags: str) -> tuple[int, str, Path]:
    out = tmp / "run"
    res = runner.invoke(app, ["run", *MOCK, *flags, "--out", str(out)])
    return res.exit_code, res.output, out


def _arrivals(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["arrivals"][-1]


def _in_flight_max(out: Path) -> int:
    """The most conversations in flight at once, from the records: each conversation from its first turn's start
    to its last turn's end."""
    spans: dict[str, list[int]] = {}
    for r in load_run(out).records:
        lo, hi = spans.get(r.question_id, [r.start_ns, r.end_ns])
        spans[r.question_id] = [min(lo, r.start_ns), max(hi, r.end_ns)]
    events = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def test_open_loop_dispatches_on_schedule_in_order_never_early(tmp_path: Path):
    code, output, out = _run(tmp_path, "--request-rate", "40", "-n", "24", "--output-len", "8", "--seed", "5")
    assert code == 0, output
    a = _arrivals(out)
    assert (a["mode"], a["requested_rate"], a["burstiness"], a["cap"]) == ("open", 40.0, 1.0, None)
    assert a["started"] == a["conversations"] == 24 and a["ended_by"] == "every conversation started"
    due = arrival_offsets(24, 40.0, 1.0, seed=5)
    assert all(s >= d for s, d in zip(a["starts_s"], due, strict=True))  # never before its time
    assert a["achieved_rate"] == pytest.approx(23 / (a["starts_s"][-1] - a["starts_s"][0]), rel=1e-4)
    # first turns started in the schedule's order, which is the run's selection order
    run = load_run(out)
    firsts = sorted((r for r in run.records if r.turn == 0), key=lambda r: r.start_ns)
    assert [r.question_id for r in firsts] == run.manifest.dataset.question_ids
    assert "open loop: 24 of 24 conversations arrived at" in output and "requested 40/s" in output


def test_open_loop_cap_holds_and_no_cap_lets_them_pile_up(tmp_path: Path):
    fast = ["--request-rate", "500", "-n", "16", "--output-len", "24", "-E", "step_ms=5"]
    code, output, capped = _run(tmp_path / "a", *fast, "-c", "2")
    assert code == 0, output
    a = _arrivals(capped)
    assert a["cap"] == 2 and a["slot_waits"] > 0
    assert _in_flight_max(capped) <= 2
    code, output, free = _run(tmp_path / "b", *fast)
    assert code == 0, output
    assert _arrivals(free)["cap"] is None and _in_flight_max(free) > 2


def test_duration_stops_arrivals_due_after_it(tmp_path: Path):
    code, output, out = _run(tmp_path, "--request-rate", "20", "-n", "40", "--duration", "0.4", "--seed", "1")
    assert code == 0, output
    a = _arrivals(out)
    due = arrival_offsets(40, 20.0, 1.0, seed=1)
    assert a["started"] == sum(1 for d in due if d < 0.4) < 40
    assert a["ended_by"] == "duration 0.4 s reached"
    started = {r.question_id for r in load_run(out).records}
    assert len(started) == a["started"]  # every arrival's conversation has records; nothing else ran


def test_closed_loop_ramp_up_spreads_the_first_wave(tmp_path: Path):
    # one conversation per worker: the four starts are the four workers' first, due at 0, 0.1, 0.2 and 0.3 s
    code, output, out = _run(tmp_path, "-c", "4", "--ramp-up", "0.4", "-n", "4", "--output-len", "8")
    assert code == 0, output
    a = _arrivals(out)
    assert (a["mode"], a["ramp_up_s"], a["started"], a["cap"]) == ("closed", 0.4, 4, 4)
    assert all(s >= d for s, d in zip(a["starts_s"], [0.0, 0.1, 0.2, 0.3], strict=True))
    assert "first wave ramped over 0.4 s" in output


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--burstiness", "0.5"], "--burstiness shapes open-loop arrivals"),
        (["--request-rate", "5", "--ramp-up", "2"], "--ramp-up spreads the closed loop's first wave"),
        (["--request-rate", "5", "-E", "clock=virtual", "-E", "cost=batch"], "paces arrivals on the wall clock"),
        (["--request-rate", "0"], "request_rate"),
    ],
)
def test_bad_traffic_flags_are_refused_in_one_line(tmp_path: Path, flags: list[str], said: str):
    code, output, _ = _run(tmp_path, "-n", "2", *flags)
    assert code == 2 and said in output.replace("\n", " "), output
