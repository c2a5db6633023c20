"""A real Ray cluster on this machine for the tests (test_ray_sweep.py, test_client_ray.py): a head node with no CPU
for tasks and a worker node with 2 CPUs, each started with `ray start` and so each its own raylet (a node that a
test can kill).  Needs the `ray` extra; skipped without it unless SPEEDBENCH_REQUIRE_ENGINES=1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")
STORE = str(80 * 1024 * 1024)  # object store per node: small, the payloads are run directories


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("SPEEDBENCH_REQUIRE_ENGINES") == "1":
            pytest.fail("ray is not installed (pip install 'speedbench[ray]')")
        pytest.skip("ray is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray(*args: str, tmp: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    res = subprocess.run([str(RAY), *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr


def _raylet_pid(node_manager_port: int) -> int:
    out = subprocess.run(["pgrep", "-f", f"node_manager_port={node_manager_port}"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    raylets = [p for p in pids if "raylet" in Path(f"/proc/{p}/cmdline").read_text(errors="replace").split("\0")[0]]
    assert len(raylets) == 1, (node_manager_port, pids)
    return raylets[0]


def _node_ids(address: str) -> dict[str, bool]:
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); "
        "print('NODES ' + json.dumps({n['NodeID']: n['Alive'] for n in ray.nodes()}), flush=True)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # Ray may print its own lines (e.g. a warning about a raylet's lagging heartbeats) around ours
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("NODES ")]
    return json.loads(line.removeprefix("NODES "))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    _need_ray()
    # a throwaway cluster on this machine: Ray's token authentication off for it, its nodes and clients alike
    # (inherited by every process the test starts)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port, worker_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--disable-usage-stats", f"--object-store-memory={STORE}"]
    try:
        # the head holds no CPU for tasks: every group runs on a worker node
        _ray("start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *common, tmp=tmp_path)
        before = set(_node_ids(address))
        _ray(
            "start", f"--address={address}", "--num-cpus=2", f"--node-manager-port={worker_port}", *common, tmp=tmp_path
        )
        worker = (set(_node_ids(address)) - before).pop()
        yield {"address": address, "worker_port": worker_port, "worker": worker, "common": common, "tmp": tmp_path}
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
