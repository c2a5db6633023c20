"""`run --client-procs N --ray ADDRESS` (load/drivers/ray.py, docs/scale.md): the client workers as Ray actors on
another node of a real cluster (a head with no CPU and a worker node, each its own raylet, on this machine), one
writer; the worker node killed mid-run keeps every finished record, and `--resume` on a replacement node finishes
every turn exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_resumed_whole, ok_turns, serve_mock, speedbench_cmd
from ray_cluster import _node_ids, _ray, _raylet_pid, _wait
from speedbench.cli import app
from speedbench.load.drivers.ray import shifted
from speedbench.records import RequestRecord

pytestmark = pytest.mark.slow


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_workers_on_another_node_then_that_node_lost_then_resumed(cluster, tmp_path: Path):
    address = str(cluster["address"])
    with serve_mock("--ttft-ms", "5", "--step-ms", "15") as url:
        out = tmp_path / "run"
        args = ["run", "--engine", "openai", "--base-url", url, "--client-procs", "2", "--ray", address]
        args += ["-n", "24", "-c", "4", "--output-len", "96", "--no-progress", "--out", str(out)]
        proc = subprocess.Popen(speedbench_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait(lambda: _lines(out / "records.jsonl") >= 4, 240, "the first records from the Ray workers")
            assert proc.poll() is None, "the run ended before the kill: nothing was tested"
            os.kill(_raylet_pid(int(cluster["worker_port"])), signal.SIGKILL)  # the node, not only a worker process
            output, _ = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 75, output  # ended as the breaker ends a run: resumable, the cause said
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted" and "client worker" in manifest["stop_cause"], manifest
        assert "lost on" in manifest["stop_cause"] and "speedbench run --resume" in output
        lines = (out / "records.jsonl").read_text().splitlines()
        assert all(json.loads(line)["question_id"] for line in lines)  # one writer: every line whole
        first = ok_turns(out)
        assert first and set(first.values()) == {1}
        assert sum(first.values()) < 24, "every turn finished before the node died: nothing was lost to resume"

        # a replacement node joins; the rest runs there, on the same server
        _wait(lambda: not _node_ids(address).get(str(cluster["worker"]), True), 120, "the node dead")
        _ray("start", f"--address={address}", "--num-cpus=2", *cluster["common"], tmp=tmp_path)  # type: ignore[misc]
        res = subprocess.run(speedbench_cmd("run", "--resume", str(out), "--no-progress"), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
    run = assert_resumed_whole(out, first)  # every turn once, the first segment's kept, complete
    # where the workers ran and how their clocks relate: this host's, so no offset
    last = run.manifest.arrivals[-1]
    assert last["client_procs"] == 2 and len(last["client_hosts"]) == 2
    assert last["clock_offsets_ms"] == [0.0, 0.0] and last["clock_bound_ms"] == 0.0
    assert run.manifest.config.client_ray == address


def test_ray_needs_a_worker_count_and_an_http_engine(tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--engine", "mock", "--client-procs", "auto", "--ray", "local", "-n", "2",
                              "--out", str(tmp_path / "a")])  # fmt: skip
    assert res.exit_code == 2 and "--client-procs N" in res.output.replace("\n", " "), res.output
    res = runner.invoke(app, ["run", "--engine", "mock", "--client-procs", "2", "--ray", "local", "-n", "2",
                              "--out", str(tmp_path / "b")])  # fmt: skip
    assert res.exit_code == 2 and "cannot be shared by client processes" in res.output.replace("\n", " ")


def test_a_remote_workers_timestamps_move_onto_the_parents_clock_and_its_durations_do_not_change():
    rec = RequestRecord("q", "c", 0, start_ns=1_000, end_ns=9_000, chunk_ns=[3_000, 5_000, 8_000], chunk_tokens=[1] * 3)
    moved = shifted(rec, 2_500)  # the worker's clock reads 2,500 ns ahead of the parent's
    assert (moved.start_ns, moved.end_ns, moved.chunk_ns) == (-1_500, 6_500, [500, 2_500, 5_500])
    assert moved.chunk_ns[0] - moved.start_ns == 2_000 and moved.end_ns - moved.start_ns == 8_000
