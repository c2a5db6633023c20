"""A run that failed looks failed: every request failing, or more than --max-failed of them, exits 1 and prints the
first error messages; in-process engines get no wall-clock request timeout by default (issue 11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from speedbench.config import RunConfig
from speedbench.records import RequestRecord
from speedbench.usecases.run import failure_verdict, request_timeout


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "speedbench.cli", "run", "--engine", "mock", "--output-len", "8", "--no-progress"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]


def test_a_run_in_which_every_request_failed_exits_1_with_the_first_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _run("-n", "4", "-E", "fail_500=1", "--out", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "run FAILED: every request failed; first errors:" in p.stdout
    assert "http_500: mock injected an internal server error" in p.stdout
    assert all(r["error"] for r in _records(out))


def test_more_failures_than_max_failed_exit_1_and_fewer_exit_0(tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _run("-n", "22", "-E", "fail_500=0.3", "--out", str(out))
    recs = _records(out)
    failed = sum(1 for r in recs if r["error"])
    assert 0.1 < failed / len(recs) < 1, (failed, len(recs))  # the seeded mock fails about 30%
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"run FAILED: {failed} of {len(recs)} requests failed" in p.stdout and "> --max-failed 0.1" in p.stdout
    p = _run("-n", "22", "-E", "fail_500=0.3", "--max-failed", "0.9", "--out", str(tmp_path / "lenient"))
    assert p.returncode == 0 and "run FAILED" not in p.stdout, p.stdout + p.stderr
    p = _run("-n", "11", "--out", str(tmp_path / "clean"))
    assert p.returncode == 0 and "run FAILED" not in p.stdout


def _rec(qid: str, turn: int, end: int, cause: str | None) -> RequestRecord:
    err = None if cause is None else {"cause": cause, "detail": f"d-{qid}"}
    return RequestRecord(question_id=qid, category="c", turn=turn, start_ns=0, end_ns=end, error=err)


def test_failure_verdict_by_hand() -> None:
    cfg = RunConfig(max_failed=0.25)
    ok = [_rec(f"q{i}", 0, i, None) for i in range(6)]
    assert failure_verdict(cfg, []) is None
    assert failure_verdict(cfg, ok) is None
    two = ok + [_rec("a", 1, 9, "prior_turn_failed"), _rec("b", 0, 10, "timeout")]  # 2 of 8 = 25%: allowed
    assert failure_verdict(cfg, two) is None
    three = [*two, _rec("c", 0, 11, "http_500")]  # 3 of 9 = 33%
    v = failure_verdict(cfg, three, shown=2)
    assert v == (
        "run FAILED: 3 of 9 requests failed (33% > --max-failed 0.25); first errors: "
        "b turn 0: timeout: d-b; c turn 0: http_500: d-c"
    )  # own causes before prior_turn_failed


@pytest.mark.parametrize(
    ("given", "in_process", "expected"),
    [(None, True, None), (None, False, 300.0), (12.5, True, 12.5), (12.5, False, 12.5)],
)
def test_request_timeout_defaults(given: float | None, in_process: bool, expected: float | None) -> None:
    assert RunConfig().timeout_s is None
    assert request_timeout(RunConfig(timeout_s=given), in_process) == expected
