"""Ctrl-C keeps every finished record; --resume completes the run without duplicates."""

import json
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import speedbench_cmd
from speedbench.data.readers import load_dataset


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _start_and_wait_for_records(out, n):
    """The whole starter set on a slowish mock in a subprocess, returned once ``n`` records are on disk."""
    args = ["run", "--engine", "mock", "-E", "step_ms=20", "-E", "ttft_ms=5", "--output-len", "64"]
    args += ["--num-requests", "88", "--concurrency", "8", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(speedbench_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rec_path = out / "records.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if rec_path.exists() and len(rec_path.read_text().splitlines()) >= n:
            break
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_keeps_records_and_resume_completes(tmp_path, sig):
    out = tmp_path / "run"
    proc = _start_and_wait_for_records(out, 15)
    rec_path = out / "records.jsonl"
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "--resume" in output
    first = _records(rec_path)
    assert 15 <= len(first) < 121, len(first)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert json.loads((out / "summary.json").read_text())["overall"]["requests"] == len(first)

    p2 = subprocess.run(
        speedbench_cmd("run", "--resume", str(out), "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert p2.returncode == 0, p2.stdout + p2.stderr
    final = _records(rec_path)
    keys = Counter((r["question_id"], r["turn"]) for r in final)
    assert max(keys.values()) == 1  # no duplicate question_id/turn
    starter = {s.question_id: len(s.turns) for s in load_dataset("starter")}
    assert len(keys) == sum(starter.values()) == 121  # every turn of every conversation
    assert final[: len(first)] == first  # finished records were kept as written
    assert {r["segment"] for r in final} == {0, 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["counter_windows"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["requests"] == 121 and summary["overall"]["errors"] == 0
    assert not [i for i in summary["invariants"] if i["ok"] is False]


def test_resume_tolerates_a_half_written_last_line(tmp_path):
    from typer.testing import CliRunner

    from speedbench.cli import app

    out = tmp_path / "r"
    args = [
        "run",
        "-e",
        "mock",
        "-n",
        "6",
        "--out",
        str(out),
        "-E",
        "step_ms=0",
        "-E",
        "ttft_ms=0",
        "--output-len",
        "8",
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    # simulate a kill mid-write: drop the last two records, leave half of one
    (out / "records.jsonl").write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    res = CliRunner().invoke(app, ["run", "--resume", str(out)])
    assert res.exit_code == 0, res.output
    final = _records(out / "records.jsonl")
    assert len(final) == len(lines) and len({(r["question_id"], r["turn"]) for r in final}) == len(lines)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_a_client_killed_hard_leaves_a_run_that_resumes_into_a_new_segment(tmp_path, sig):
    """kill -9 leaves no chance to close the measured window (status stays "running"); SIGHUP (a closed terminal)
    interrupts like Ctrl-C.  Either way --resume writes a new segment, so the counter cross-checks compare each
    segment with its own window (on c6e6c23, after kill -9 the resumed records reused segment 0)."""
    out = tmp_path / "run"
    proc = _start_and_wait_for_records(out, 15)
    rec_path = out / "records.jsonl"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    status = json.loads((out / "manifest.json").read_text())["status"]
    assert status == ("running" if sig == signal.SIGKILL else "interrupted")
    first = _records(rec_path)

    p2 = subprocess.run(
        speedbench_cmd("run", "--resume", str(out), "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert p2.returncode == 0, p2.stdout + p2.stderr
    final = _records(rec_path)
    assert {r["segment"] for r in final[: len(first)]} == {0} and {r["segment"] for r in final[len(first) :]} == {1}
    keys = Counter((r["question_id"], r["turn"]) for r in final)
    assert max(keys.values()) == 1 and len(keys) == 121
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["requests"] == 121 and summary["overall"]["errors"] == 0
    assert not [i for i in summary["invariants"] if i["ok"] is False], summary["invariants"]
    assert any(i["name"] == "per_request_vs_counter_delta[segment 1]" and i["ok"] for i in summary["invariants"])
