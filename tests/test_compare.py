"""`report A B` compares like for like (refused, or with --force warned, when the runs differ in what makes them
comparable; only the requests successful in both are paired), and `report` says when a run is not complete,
when its records.jsonl has a torn last line and when no request succeeded (no acceptance figures from
counters alone)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import serve_mock
from speedbench.cli import app
from speedbench.metrics.latency import user_tps
from speedbench.records import RequestRecord

runner = CliRunner()
OLD_RUN = Path(__file__).parent / "fixtures" / "rundir-c6e6c23"
MOCK = ["--engine", "mock", "-E", "step_ms=0", "-E", "ttft_ms=0", "--no-progress", "--warmup", "0"]

RunMaker = Callable[..., Path]


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> RunMaker:
    """`speedbench run --engine mock` with the given extra flags (default -n 4 --output-len 8), once per
    distinct set of flags in this module."""
    made: dict[tuple[str, ...], Path] = {}
    root = tmp_path_factory.mktemp("runs")

    def make(*flags: str) -> Path:
        args = ("-n", "4", "--output-len", "8", *flags)
        if args not in made:
            out = root / f"run{len(made)}"
            res = runner.invoke(app, ["run", *MOCK, *args, "--out", str(out)])
            # runs with injected faults (30% or all failing) are complete but exit 1: too many failures
            assert res.exit_code == (1 if any(f.startswith("fail_") for f in flags) else 0), res.output
            made[args] = out
        return made[args]

    return make


def _report(*args: str | Path) -> tuple[int, str, str]:
    res = runner.invoke(app, ["report", *(str(a) for a in args)])
    return res.exit_code, res.stdout, res.stderr


def _first_line(text: str) -> str:
    return next(ln for ln in text.splitlines() if ln.strip())


def _records(d: Path) -> list[RequestRecord]:
    return [RequestRecord.from_dict(json.loads(ln)) for ln in (d / "records.jsonl").read_text().splitlines()]


def _summary(d: Path) -> dict[str, Any]:
    """summary.json as `report` rewrote it."""
    return json.loads((d / "summary.json").read_text())


# ---- like for like -------------------------------------------------------------------------------------


def _dataset(path: Path, second_prompt: str) -> Path:
    rows = [
        {"question_id": "d1", "category": "qa", "turns": ["What is the capital of France?"]},
        {"question_id": "d2", "category": "math", "turns": [second_prompt]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


UNLIKE = [
    pytest.param(("--output-len", "16"), "output length 8 (A) vs 16 (B)", id="output-len"),
    pytest.param(("--temperature", "0.7"), "temperature 0.0 (A) vs 0.7 (B)", id="temperature"),
    pytest.param(("--ignore-eos",), "ignore_eos False (A) vs True (B)", id="ignore-eos"),
    pytest.param(("-n", "6"), "selected question ids 4 ids (A) vs 6 ids (2 not in the other", id="selection"),
]


@pytest.mark.parametrize(("flags", "difference"), UNLIKE)
def test_unlike_runs_are_refused_in_one_line_and_warned_with_force(
    make_run: RunMaker, flags: tuple[str, ...], difference: str
) -> None:
    """Main (c6e6c23) printed both summaries and a speedup table for each of these pairs and exited 0."""
    a, b = make_run(), make_run(*flags)
    code, out, err = _report(a, b)
    assert code == 2, out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not like for like" in lines[0], err
    assert difference in lines[0] and "--force" in lines[0]
    assert "speedup" not in out

    code, out, err = _report(a, b, "--force")
    assert code == 0, err
    warning = _first_line(out)
    assert warning.startswith("WARNING (--force)") and difference in warning and "NOT like for like" in warning
    assert "speedup" in out and out.rstrip().splitlines()[-1].startswith("WARNING (--force)")


def test_runs_of_different_dataset_content_are_refused(tmp_path: Path) -> None:
    """Same question ids, one prompt edited: the content hash differs (main compared them silently)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for out, prompt in ((a, "What is 2 + 2?"), (b, "What is 2 + 3?")):
        data = _dataset(tmp_path / f"{out.name}.jsonl", prompt)
        res = runner.invoke(app, ["run", *MOCK, "--dataset", str(data), "--output-len", "8", "--out", str(out)])
        assert res.exit_code == 0, res.output
    code, _, err = _report(a, b)
    assert code == 2 and "dataset content hash sha256:" in err, err
    assert "selected question ids" not in err
    assert _report(a, b, "--force")[0] == 0


def test_like_runs_compare_without_warning(make_run: RunMaker) -> None:
    a = make_run()
    code, out, err = _report(a, a)
    assert code == 0, err
    assert "WARNING" not in out and "1.00x" in out
    assert "paired 7 (question_id, turn)" in out and "dropped from A: 0; dropped from B: 0" in out


def test_comparison_has_intervals_and_says_what_they_cover(make_run: RunMaker) -> None:
    """A run against itself: every resample's speedup is 1, so the interval is [1.00, 1.00], not significant;
    each category of the 4 conversations has one conversation, so no interval, and the line says why."""
    a = make_run()
    code, out, err = _report(a, a)
    assert code == 0, err
    overall = next(
        ln for ln in out.split("B vs A (paired requests only)")[1].splitlines() if ln.startswith("│ overall")
    )
    cells = [c.strip() for c in overall.strip("│").split("│")]
    assert cells[6:10] == ["1.00x", "[1.00, 1.00] n.s.", "±0.00", "4"]
    assert "percentile bootstrap over conversations, 2000 resamples, seed 0" in out
    assert "they cover prompt sampling, not run-to-run noise" in out
    assert ": 1 conversation: no interval (the bootstrap resamples conversations" in out
    assert "TTFT ratio" in out and "system tok/s ratio" in out


# ---- pairing -------------------------------------------------------------------------------------------


def _rec(qid: str, turn: int = 0, ok: bool = True, category: str = "qa") -> RequestRecord:
    error = None if ok else {"cause": "http_500", "detail": ""}
    ms = 1_000_000
    return RequestRecord(
        qid, category, turn, start_ns=0, end_ns=40 * ms, chunk_ns=[10 * ms, 20 * ms], chunk_tokens=[1, 3], error=error
    )


def test_pairing_counts_by_hand() -> None:
    """A: k1 ok, k2 failed, k3 ok, k4 ok (A only), k6 failed (A only); B: k1 ok, k2 ok, k3 failed, k5 failed
    (B only), k7 failed.  k7 is also in A, failed there: dropped from both sides as 'failed in A' for A's
    record and 'failed in B' for B's.  Paired: k1 only."""
    from speedbench.analysis.pairing import pair_records

    a = [_rec("k1"), _rec("k2", ok=False), _rec("k3"), _rec("k4"), _rec("k6", ok=False), _rec("k7", ok=False)]
    b = [_rec("k1"), _rec("k2"), _rec("k3", ok=False), _rec("k5", ok=False), _rec("k7", ok=False)]
    p = pair_records(a, b)
    assert p.keys == (("k1", 0),) and p.paired == 1
    assert [r.question_id for r in p.a] == [r.question_id for r in p.b] == ["k1"]
    # A's records: k4, k6 missing in B; k2, k7 failed in A; k3 failed in B
    assert (p.dropped_a.missing_in_other, p.dropped_a.failed_in_a, p.dropped_a.failed_in_b) == (2, 2, 1)
    # B's records: k5 missing in A; k2 failed in A; k3, k7 failed in B
    assert (p.dropped_b.missing_in_other, p.dropped_b.failed_in_a, p.dropped_b.failed_in_b) == (1, 1, 2)
    assert p.dropped_a.total + p.paired == len(a) and p.dropped_b.total + p.paired == len(b)
    assert p.describe() == (
        "paired 1 (question_id, turn) present and successful in both runs; dropped from A: 5 (2 missing in the "
        "other run, 2 failed in A, 1 failed in B); dropped from B: 4 (1 missing in the other run, 1 failed in A, "
        "2 failed in B)"
    )
    # turns pair separately; the last record of a key (a retried request's final attempt) is the one used
    p2 = pair_records([_rec("q", 0), _rec("q", 1), _rec("q", 1, ok=False)], [_rec("q", 0), _rec("q", 1)])
    assert p2.keys == (("q", 0),) and p2.dropped_a.failed_in_a == 1 and p2.dropped_b.failed_in_a == 1


def test_report_pairs_only_requests_successful_in_both(make_run: RunMaker) -> None:
    """A run with failures (mock fail_500=0.3) against a clean one: the counts printed are those of the
    records, and the table's figures are over the paired records only (main compared each run's whole
    per-category means, failures dropped from one side only, and printed no counts)."""
    a, b = make_run(), make_run("-E", "fail_500=0.3")
    ra, rb = _records(a), _records(b)
    failed_b = {(r.question_id, r.turn) for r in rb if not r.ok}
    assert all(r.ok for r in ra) and len(ra) == len(rb) == 7 and 0 < len(failed_b) < 7
    paired = sorted((r.question_id, r.turn) for r in ra if (r.question_id, r.turn) not in failed_b)
    n = len(failed_b)

    code, out, err = _report(a, b)
    assert code == 0, err
    assert f"paired {len(paired)} (question_id, turn)" in out
    assert f"dropped from A: {n} ({n} failed in B); dropped from B: {n} ({n} failed in B)" in out
    overall = next(ln for ln in out.splitlines() if ln.startswith("│ overall") and "x │" in ln)
    cells = [c.strip() for c in overall.strip("│").split("│")]
    mean_a = sum(user_tps(r) for r in ra if (r.question_id, r.turn) in paired) / len(paired)
    mean_b = sum(user_tps(r) for r in rb if r.ok) / len(paired)
    assert cells[1] == str(len(paired))
    assert cells[4] == f"{mean_a:.1f}" and cells[5] == f"{mean_b:.1f}"
    assert cells[6] == f"{mean_b / mean_a:.2f}x"
    # per category: paired counts add up to the overall one
    rows = [ln for ln in out.split("B vs A (paired requests only)")[1].splitlines() if ln.startswith("│ ")]
    per_cat = [int(ln.strip("│").split("│")[1]) for ln in rows if not ln.startswith("│ overall")]
    assert sum(per_cat) == len(paired)

    code, out, _ = _report(b, a)  # the other way round the reasons swap sides
    assert f"dropped from A: {n} ({n} failed in A); dropped from B: {n} ({n} failed in A)" in out


# ---- runs that are not complete or not whole -----------------------------------------------------------


@pytest.mark.parametrize(("status", "word"), [("interrupted", "INTERRUPTED"), ("running", "RUNNING")])
def test_report_says_first_when_a_run_is_not_complete(tmp_path: Path, status: str, word: str) -> None:
    """Main printed the run's tables as if complete (first line: the directory name)."""
    d = tmp_path / "run"
    shutil.copytree(OLD_RUN, d)
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "status": status}))
    code, out, err = _report(d)
    assert code == 0, err
    first = _first_line(out)
    assert (
        first.startswith(f"run {d} is {word}")
        and "only the 13 finished records (turns of 11 selected conversations)" in first
    ), first
    assert f"speedbench run --resume {d}" in first
    assert out.index(first) < out.index("Acceptance per category")
    complete = tmp_path / "complete"  # a copy: report rewrites summary.json
    shutil.copytree(OLD_RUN, complete)
    assert word not in _first_line(_report(complete)[1])  # a complete run has no such line


def test_report_says_when_records_have_a_torn_last_line(make_run: RunMaker, tmp_path: Path) -> None:
    """Main dropped the half-written last line silently and reported the rest as the whole run."""
    d = tmp_path / "torn"
    shutil.copytree(make_run(), d)
    lines = (d / "records.jsonl").read_text().splitlines(keepends=True)
    (d / "records.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    code, out, err = _report(d)
    assert code == 0, err
    first = _first_line(out)
    assert first.startswith(f"{d / 'records.jsonl'}: line {len(lines)} is half-written"), first
    assert "left out of every figure" in first and f"--resume {d}" in first
    assert "half-written" not in _report(make_run())[1]
    from speedbench.results.loader import load_run

    result = load_run(d)
    assert result.torn_line == len(lines) and len(result.records) == len(lines) - 1


def _acceptance_cells(out: str) -> list[str]:
    """The overall row of the acceptance table: AL, AL (tok-w), AR, cAR1..3."""
    row = next(ln for ln in out.splitlines() if ln.startswith("│ overall"))
    return [c.strip() for c in row.strip("│").split("│")][3:9]


def test_no_successful_request_no_acceptance_figures_in_process(make_run: RunMaker) -> None:
    """Every request fails (mock fail_500=1).  Main: overall per-position source 'counter_delta' (an all-zero
    histogram and None rates taken from the counters) and no word that nothing succeeded."""
    d = make_run("-E", "fail_500=1")
    code, out, err = _report(d)
    assert code == 0, err
    assert _first_line(out).startswith(f"run {d}: no request succeeded (7 failed: http_500=4, prior_turn_failed=3)")
    assert set(_acceptance_cells(out)) == {"-"}
    s = _summary(d)
    assert s["overall"]["requests"] == 0 and s["overall"]["errors"] == 7
    assert s["sources"]["acceptance"] == s["sources"]["acceptance_per_position"] == "none"
    assert s["overall"]["histogram"] == {} and s["overall"]["conditional_acceptance_rate"] == []


def test_counters_alone_are_not_the_runs_acceptance(tmp_path: Path) -> None:
    """The fixture run (counters moved by 100 steps) with every record turned into a failure: main reported the
    counters' AL (tok-w 2.16), AR and rates as the run's (source counter_delta; the issue's '0 requests, AL
    2.447')."""
    d = tmp_path / "all-failed"
    shutil.copytree(OLD_RUN, d)
    recs = [json.loads(ln) for ln in (d / "records.jsonl").read_text().splitlines()]
    failed = [{**r, "error": {"cause": "reset", "detail": "test"}} for r in recs]
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in failed))
    code, out, err = _report(d)
    assert code == 0, err
    first = _first_line(out)
    assert first.startswith(f"run {d}: no request succeeded ({len(recs)} failed: reset={len(recs)})"), first
    assert "counters moved (100 steps, 116 accepted" in first and "not this run's figures" in first
    assert set(_acceptance_cells(out)) == {"-"}
    s = _summary(d)
    o = s["overall"]
    assert o["requests"] == 0 and s["sources"]["acceptance"] == s["sources"]["acceptance_per_position"] == "none"
    assert o["acceptance_length_token_weighted"] is None and o["acceptance_rate"] is None and o["steps"] == 0
    assert s["counter_delta"]["steps"] == 100  # kept, labelled as the counters', in counter_delta
    # one request left successful: the run-level figures come from the counters again (unchanged)
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [recs[0], *failed[1:]]))
    assert _report(d)[0] == 0 and _summary(d)["sources"]["acceptance"] in ("per_request", "counter_delta")


def test_no_successful_request_against_serve_mock(tmp_path: Path) -> None:
    """The issue's case end to end: serve-mock resets every stream mid-way; its counters count the steps it
    decoded.  Main printed 'AL (tok-w) 2.792, AR 0.597' and the conditional rates for a run of 0 requests."""
    out = tmp_path / "reset"
    with serve_mock("--ttft-ms", "0", "--step-ms", "0", "-E", "fail_reset=1") as url:
        res = runner.invoke(
            app,
            ["run", "--engine", "openai", "--base-url", url, "--model", "mock", "-n", "4"]
            + ["--output-len", "64", "--no-progress", "--warmup", "0", "--out", str(out)],
        )
    assert (out / "records.jsonl").exists(), res.output
    code, text, err = _report(out)
    assert code == 0, err
    first = _first_line(text)
    assert first.startswith(f"run {out}: no request succeeded"), first
    assert set(_acceptance_cells(text)) == {"-"}
    s = _summary(out)
    assert s["overall"]["requests"] == 0 and s["sources"]["acceptance"] == "none"
    if s["counter_delta"] and s["counter_delta"]["steps"] > 0:
        assert "not this run's figures" in first
