"""Server lost mid-run: the circuit breaker stops the run as interrupted (exit 75) with the resume command; --resume
retries transport failures, keeps the failed attempts as history and counts only the final attempt; a --resume
flag is used and recorded (client-side settings) or refused in one line, never ignored (issue 11)."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import serve_mock, speedbench_cmd
from speedbench.load.generator import Breaker, retryable
from speedbench.records import RequestRecord, final_attempts


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines() if x.strip()]


def _rec(qid: str, turn: int, cause: str | None, attempt: int = 0) -> RequestRecord:
    err = None if cause is None else {"cause": cause, "detail": "d"}
    return RequestRecord(question_id=qid, category="c", turn=turn, start_ns=0, end_ns=0, error=err, attempt=attempt)


def test_breaker_opens_on_consecutive_transport_failures_only() -> None:
    b = Breaker(3)
    for cause in ("reset", "connect_error", None, "timeout", "http_500", "reset", "reset"):
        b.see(_rec("q", 0, cause))
    assert not b.open  # a success and an HTTP status both reset the run of failures
    b.see(_rec("q", 0, "timeout"))
    assert b.open and "3 consecutive connection-level failures" in (b.reason or "")
    never = Breaker(0)
    for _ in range(50):
        never.see(_rec("q", 0, "reset"))
    assert not never.open


def test_retryable_causes() -> None:
    for cause in ("connect_error", "reset", "timeout", "http_500", "http_503", "prior_turn_failed"):
        assert retryable(_rec("q", 0, cause)), cause
    for cause in (None, "http_400", "http_404", "malformed_stream", "not_streaming", "client_exception"):
        assert not retryable(_rec("q", 0, cause)), cause


def test_final_attempts_keeps_the_last_try_of_each_turn_in_file_order() -> None:
    lines = [_rec("a", 0, "reset"), _rec("b", 0, None), _rec("a", 1, "prior_turn_failed"), _rec("a", 0, None, 1)]
    lines.append(_rec("a", 1, None, 1))
    final, old = final_attempts(lines)
    assert [(r.question_id, r.turn, r.attempt) for r in final] == [("b", 0, 0), ("a", 0, 1), ("a", 1, 1)]
    assert [(r.question_id, r.turn, r.attempt) for r in old] == [("a", 0, 0), ("a", 1, 0)]


def _start_run(url: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    args = ["run", "--engine", "openai", "--base-url", url, "--model", "mock", "--output-len", "48"]
    args += ["-n", "88", "-c", "4", "--warmup", "0", "--out", str(out), "--no-progress", *extra]
    return subprocess.Popen(speedbench_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_records(out: Path, n: int, timeout: float = 60) -> None:
    path = out / "records.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} records after {timeout} s")


def test_server_killed_mid_run_stops_the_run_and_resume_recovers_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    mock = ("--ttft-ms", "5", "--step-ms", "15")
    with serve_mock(*mock) as url:
        proc = _start_run(url, out)
        _wait_for_records(out, 12)
    # the server is gone (serve_mock terminated it): the breaker stops the run instead of failing every turn
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, output
    assert "run INTERRUPTED: circuit breaker: 10 consecutive connection-level failures" in output
    assert f"finish with: speedbench run --resume {out}" in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and "circuit breaker" in manifest["stop_cause"]
    first = _records(out)
    failed = [r for r in first if r["error"]]
    own = [r for r in failed if r["error"]["cause"] != "prior_turn_failed"]
    # it stopped dispatching: the breaker's 10 plus the few in flight, not every one of the 121 turns
    assert 10 <= len(own) <= 10 + 4, Counter(r["error"]["cause"] for r in own)
    assert len(first) < 100, len(first)
    report = subprocess.run(speedbench_cmd("report", str(out)), capture_output=True, text=True, timeout=120)
    assert "is INTERRUPTED (circuit breaker: 10 consecutive connection-level failures" in report.stdout.replace(
        "\n", " "
    ), report.stdout

    with serve_mock(*mock) as url2:  # the server is back, on another port: --base-url may change on resume
        p2 = subprocess.run(
            speedbench_cmd("run", "--resume", str(out), "--base-url", url2, "--no-progress"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert f"{len(failed)} failed turns to retry" in p2.stdout
    assert f"engine.base_url {url!r} -> {url2!r}" in p2.stdout
    lines = _records(out)
    assert lines[: len(first)] == first  # history kept: no line deleted or rewritten
    keys = Counter((r["question_id"], r["turn"]) for r in lines)
    assert len(keys) == 121
    retried = {(r["question_id"], r["turn"]) for r in failed}
    assert {k for k, n in keys.items() if n == 2} == retried
    assert all(
        r["attempt"] == 1 and r["segment"] == 1 for r in lines[len(first) :] if (r["question_id"], r["turn"]) in retried
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["requests"] == 121 and summary["overall"]["errors"] == 0  # final attempts only
    assert summary["errors_by_cause"] == {}
    assert not [i for i in summary["invariants"] if i["ok"] is False], summary["invariants"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "stop_cause" not in manifest
    assert manifest["config"]["engine"]["base_url"] == url2
    assert manifest["segment_changes"][0]["segment"] == 1
    assert manifest["segment_changes"][0]["changes"] == {"engine.base_url": [url, url2]}
    report = subprocess.run(speedbench_cmd("report", str(out)), capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "INTERRUPTED" not in report.stdout, report.stdout + report.stderr


def test_resume_retries_server_errors_and_changes_concurrency_on_record(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with serve_mock("--ttft-ms", "0", "--step-ms", "0", "-E", "fail_500=0.3") as url:
        p = subprocess.run(
            speedbench_cmd(
                "run",
                "--engine",
                "openai",
                "--base-url",
                url,
                "--model",
                "mock",
                "-n",
                "22",
                "--output-len",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p.returncode == 1, p.stdout + p.stderr  # ~30% failed > --max-failed
    assert f"--resume {out} sends them again" in p.stdout
    first = _records(out)
    failed = [r for r in first if r["error"]]
    assert failed and {r["error"]["cause"] for r in failed} <= {"http_500", "prior_turn_failed"}
    with serve_mock("--ttft-ms", "0", "--step-ms", "0") as url2:
        p2 = subprocess.run(
            speedbench_cmd("run", "--resume", str(out), "--base-url", url2, "-c", "2", "--no-progress"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert "concurrency 32 -> 2" in p2.stdout
    lines = _records(out)
    assert lines[: len(first)] == first and len(lines) == len(first) + len(failed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["errors"] == 0 and summary["overall"]["requests"] == len(first)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["concurrency"] == 2
    assert manifest["segment_changes"][0]["changes"]["concurrency"] == [32, 2]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--draft-length", "5", "--draft-length 5 differs from the run's 3"),
        ("--output-len", "9", "--output-len 9 differs from the run's 8"),
        ("--out", "elsewhere", "a resumed run writes to its own directory"),
    ],
)
def test_resume_refuses_a_flag_that_would_make_the_segments_unlike(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    out = tmp_path / "run"
    base = ["run", "--engine", "mock", "-n", "2", "--output-len", "8", "--no-progress"]
    assert subprocess.run(speedbench_cmd(*base, "--out", str(out)), capture_output=True, timeout=120).returncode == 0
    before = (out / "records.jsonl").read_text()
    arg = str(tmp_path / value) if flag == "--out" else value
    p = subprocess.run(
        speedbench_cmd("run", "--resume", str(out), flag, arg, "--no-progress"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert (out / "records.jsonl").read_text() == before
    # the same value again is no change, and a resume of a complete run sends nothing
    same = subprocess.run(
        speedbench_cmd("run", "--resume", str(out), "--draft-length", "3", "--no-progress"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same.returncode == 0, same.stdout + same.stderr
    assert (out / "records.jsonl").read_text() == before
