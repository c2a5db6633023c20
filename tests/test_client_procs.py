"""`run --client-procs N` (load/drivers/procs.py, docs/scale.md): the load split over worker processes, one
writer, Ctrl-C and a killed worker keep every finished record, `--resume` finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_resumed_whole, make_samples, ok_turns, serve_mock, speedbench_cmd
from speedbench.cli import app
from speedbench.load.drivers.procs import split
from speedbench.load.generator import LoadSettings
from speedbench.results.loader import load_run

runner = CliRunner()


def test_split_by_hand():
    samples = make_samples(7)
    parts = split(samples, LoadSettings(concurrency=8, seed=2, warmup=2), 3)
    assert [[s.question_id for s in mine] for mine, _ in parts] == [
        [samples[i].question_id for i in idx] for idx in ([0, 3, 6], [1, 4], [2, 5])
    ]
    assert [p.concurrency for _, p in parts] == [3, 3, 2] and all(p.warmup == 0 for _, p in parts)
    assert [p.seed for _, p in parts] == [2, 2001, 2002]  # each worker's arrival schedule its own
    open_loop = split(samples, LoadSettings(request_rate=9.0, cap=5), 3)
    assert [p.request_rate for _, p in open_loop] == [3.0, 3.0, 3.0] and [p.cap for _, p in open_loop] == [2, 2, 1]
    assert len(split(samples[:2], LoadSettings(), 4)) == 2  # a worker with nothing to do is not started


def test_three_processes_one_writer_every_turn_once(tmp_path: Path):
    with serve_mock("--ttft-ms", "2", "--step-ms", "2") as url:
        out = tmp_path / "run"
        args = ["run", "--engine", "openai", "--base-url", url, "--client-procs", "3", "-n", "30", "-c", "9"]
        res = runner.invoke(app, [*args, "--output-len", "16", "--no-progress", "--out", str(out)])
        assert res.exit_code == 0, res.output
    run = load_run(out)
    keys = ok_turns(out)
    assert set(keys.values()) == {1}  # every turn once
    turns = sum(1 for _ in (out / "records.jsonl").read_text().splitlines())
    assert turns == len(run.records) == len(keys)  # one writer: every line a whole record, nothing torn
    assert {q for q, _ in keys} == set(run.manifest.dataset.question_ids)
    assert run.summary.overall.errors == 0
    # the engine's counters, read by the parent around the whole window, agree with the workers' records
    assert all(i.ok is not False for i in run.summary.invariants)
    assert any(i.name.startswith("per_request_vs_counter_delta") and i.ok for i in run.summary.invariants)
    assert run.manifest.config.client_procs == 3 and run.manifest.arrivals[-1]["conversations"] == 30


def _wait_lines(path: Path, n: int, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path}: fewer than {n} records after {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "worker killed"])
def test_interrupted_run_keeps_every_record_and_resumes(tmp_path: Path, how: str):
    with serve_mock("--ttft-ms", "5", "--step-ms", "15") as url:
        out = tmp_path / "run"
        args = ["run", "--engine", "openai", "--base-url", url, "--client-procs", "2", "-n", "16", "-c", "4"]
        args += ["--output-len", "24", "--no-progress", "--out", str(out)]
        proc = subprocess.Popen(speedbench_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_lines(out / "records.jsonl", 4)
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)  # the parent alone: it must stop its workers itself
            expected_exit = 130
        else:
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            workers = [int(k) for k in kids if "spawn" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")]
            assert workers, kids
            os.kill(workers[0], signal.SIGKILL)  # a worker dies hard: its requests in flight are lost, nothing else
            expected_exit = 75
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == expected_exit, output
        lines = (out / "records.jsonl").read_text().splitlines()
        assert all(json.loads(line)["question_id"] for line in lines)  # every line whole
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
        if how == "worker killed":
            assert "client worker" in manifest["stop_cause"] and "speedbench run --resume" in output
        first = ok_turns(out)
        res = subprocess.run(speedbench_cmd("run", "--resume", str(out), "--no-progress"), capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
    assert_resumed_whole(out, first)  # every turn once, the first segment's kept, complete


def test_an_in_process_engine_is_refused(tmp_path: Path):
    res = runner.invoke(
        app, ["run", "--engine", "mock", "--client-procs", "2", "-n", "2", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 2 and "cannot be shared by client processes" in res.output.replace("\n", " ")


def test_auto_picks_processes_from_the_warm_up_chunk_rate(monkeypatch: pytest.MonkeyPatch):
    import asyncio
    from types import SimpleNamespace

    import speedbench.load.drivers.procs as client_procs
    from speedbench.load.drivers.procs import CHUNKS_PER_PROC, choose_procs
    from speedbench.records import RequestRecord

    def rec(chunks: int, span_s: float) -> RequestRecord:
        ns = [int(i * span_s / (chunks - 1) * 1e9) for i in range(chunks)]
        return RequestRecord("q", "c", 0, start_ns=0, end_ns=ns[-1], chunk_ns=ns, chunk_tokens=[1] * chunks)

    # warm-up: 101 chunks over 1 s (100 chunks/s), 201 over 1 s, 401 over 1 s: the median is 200 chunks/s
    warm = [rec(101, 1.0), rec(201, 1.0), rec(401, 1.0)]
    asked: list[int] = []

    async def fake_warm_up(engine, pending, settings, n=None):  # type: ignore[no-untyped-def]
        asked.append(n)
        return warm

    monkeypatch.setattr(client_procs, "warm_up", fake_warm_up)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    engine = SimpleNamespace(capabilities=SimpleNamespace(in_process=False))
    samples = make_samples(4)
    # closed loop, 1,000 in flight x 200 chunks/s = 200,000 chunks/s: ceil(200,000 / 20,000) = 10 processes
    procs, why, sent = asyncio.run(choose_procs(engine, samples, {}, LoadSettings(concurrency=1000)))  # type: ignore[arg-type]
    assert CHUNKS_PER_PROC == 20_000 and (procs, sent) == (10, warm) and "200,000 chunks/s" in why
    # the warm-up's records come back (the run keeps them apart); it sent the default wave, one per slot
    assert asked == [1000]
    # 100 in flight: 20,000 chunks/s, one process; 10,000 in flight: 2,000,000 chunks/s, capped at 15 (CPUs - 1)
    assert asyncio.run(choose_procs(engine, samples, {}, LoadSettings(concurrency=100)))[0] == 1  # type: ignore[arg-type]
    many = asyncio.run(choose_procs(engine, samples, {}, LoadSettings(concurrency=10_000)))  # type: ignore[arg-type]
    assert many[0] == 15 and "capped at 15" in many[1]
    # an in-process engine: always one
    local = SimpleNamespace(capabilities=SimpleNamespace(in_process=True))
    assert asyncio.run(choose_procs(local, samples, {}, LoadSettings(concurrency=10_000)))[0] == 1  # type: ignore[arg-type]


def test_pending_conversations_include_retryable_failures():
    """What the parent deals to its workers on --resume: the same conversations a one-process run sends again."""
    from speedbench.load.generator import pending_samples
    from speedbench.records import RequestRecord

    a, b, c, d = make_samples(4, turns=2)

    def rec(s, turn: int, cause: str | None = None) -> RequestRecord:  # type: ignore[no-untyped-def]
        error = None if cause is None else {"cause": cause, "detail": ""}
        return RequestRecord(s.question_id, s.category, turn, start_ns=0, end_ns=1, error=error)

    done = {(r.question_id, r.turn): r for r in (rec(a, 0), rec(a, 1), rec(b, 0), rec(b, 1, "http_500"))}
    done |= {(r.question_id, r.turn): r for r in (rec(c, 0, "http_400"), rec(c, 1, "prior_turn_failed"))}
    done |= {(d.question_id, 0): rec(d, 0)}
    # a: both turns ok; b: a 500 to retry; c: a 400 (would fail again) then prior_turn_failed, which --resume retries;
    # d: its second turn never ran
    assert [s.question_id for s in pending_samples([a, b, c, d], done)] == [b.question_id, c.question_id, d.question_id]
