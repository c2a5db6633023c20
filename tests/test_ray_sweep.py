"""`speedbench sweep --ray ADDRESS` on a real Ray cluster on this machine (usecases/sweep/ray.py, docs/scale.md):
a head node with no CPU for tasks and a worker node started with `ray start`, each its own raylet.  The sweep's
launch groups run on the worker; the worker's raylet is killed with SIGKILL mid-sweep, a replacement node joins,
and the finished sweep must equal an undisturbed local one cell for cell in every non-timing figure (records,
token counts, acceptance, outputs; on the mock's virtual clock the modelled timings too).

Needs the `ray` extra (scripts/test installs it); skipped without it unless SPEEDBENCH_REQUIRE_ENGINES=1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import speedbench_cmd
from ray_cluster import _node_ids, _ray, _raylet_pid, _wait
from speedbench.cli import app
from speedbench.results.loader import load_run

MOCK = ["--engine", "mock", "-E", "cost=batch", "-E", "clock=virtual", "-E", "base_ms=10", "-E", "per_token_ms=0.5"]
GRID = ["--sd", "ngram", "-k", "1,2", "-c", "1,2", "-n", "88", "--output-len", "96", "--ignore-eos", "--warmup", "0"]
pytestmark = pytest.mark.slow


def _statuses(sweep: Path) -> dict[str, str]:
    try:
        return {c["id"]: c["status"] for c in json.loads((sweep / "sweep.json").read_text())["cells"]}
    except (OSError, ValueError, KeyError):
        return {}


def _figures(cell: Path) -> list[tuple[object, ...]]:
    """Every non-timing figure of a cell's records (and the virtual clock's modelled durations)."""
    out = []
    for r in load_run(cell).records:
        sd = r.sd.to_dict() if r.sd else None
        out.append((r.question_id, r.turn, r.ok, r.tokens, r.output_text, json.dumps(sd, sort_keys=True),
                    r.chunk_tokens, r.end_ns - r.start_ns))  # fmt: skip
    return sorted(out)


def test_a_node_lost_mid_sweep_is_retried_and_the_sweep_equals_an_undisturbed_one(cluster, tmp_path: Path):
    reference = tmp_path / "local"
    res = CliRunner().invoke(app, ["sweep", *MOCK, *GRID, "--out", str(reference), "--no-progress", "--no-html"])
    assert res.exit_code == 0, res.output

    sweep = tmp_path / "ray"
    args = ["sweep", *MOCK, *GRID, "--out", str(sweep), "--no-progress", "--no-html", "--ray", str(cluster["address"])]
    driver = subprocess.Popen(speedbench_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # two of the three groups run at once on the worker's 2 CPUs: once one group is back, the others are in
        # flight (or queued) on the worker, and the kill takes them down mid-group
        _wait(lambda: "complete" in _statuses(sweep).values(), 300, "the first group to come back")
        in_flight = [c for c, s in _statuses(sweep).items() if s != "complete"]
        assert in_flight, "the sweep ended before the kill: nothing was tested"
        os.kill(_raylet_pid(int(cluster["worker_port"])), signal.SIGKILL)  # the node, not only a worker process
        _wait(lambda: not _node_ids(str(cluster["address"])).get(str(cluster["worker"]), True), 120, "the node dead")
        # a replacement node joins; the lost groups' retries run there
        _ray("start", f"--address={cluster['address']}", "--num-cpus=2", *cluster["common"], tmp=tmp_path)  # type: ignore[misc]
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert all(c["status"] == "complete" for c in manifest["cells"])
    assert all(g["node"] and "Ray node" in g["node"] for g in manifest["groups"])
    # every task's first attempt ran on the killed node (the head holds no CPU), so a group that came back from
    # another node was run again after the kill: the retry happened (which groups depends on where each task was
    # when the node died: one already fetched by the driver needs no retry)
    again = [g["id"] for g in manifest["groups"] if str(cluster["worker"]) not in g["node"]]
    assert again, [g["node"] for g in manifest["groups"]]
    cells = sorted(p.name for p in (reference / "cells").iterdir())
    assert cells == sorted(p.name for p in (sweep / "cells").iterdir() if p.is_dir())
    for name in cells:
        assert _figures(sweep / "cells" / name) == _figures(reference / "cells" / name), name
        m = json.loads((sweep / "cells" / name / "manifest.json").read_text())
        assert m["config"]["out"] == str(sweep / "cells" / name) and m["status"] == "complete"
    # nothing half-written was left beside the cells
    assert not [p for p in (sweep / "cells").iterdir() if p.name.endswith((".incoming", ".replaced"))]


def test_without_ray_the_flag_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import speedbench.extras as extras

    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda m: False if m == "ray" else real(m))
    res = CliRunner().invoke(app, ["sweep", *MOCK, "-k", "1", "-c", "1", "-n", "1", "--out", str(tmp_path / "s"),
                                   "--no-progress", "--ray", "local"])  # fmt: skip
    assert res.exit_code == 2 and "pip install 'speedbench[ray]'" in res.output, res.output


def test_cells_written_to_a_shared_folder_come_back_whole_and_the_folder_is_left_clean(tmp_path: Path):
    """--ray-shared-dir: the tasks write the cells under a folder every node sees and return only where; the driver
    reads them from there into the sweep, as if they had come back through Ray, and removes what it read."""
    pytest.importorskip("ray")
    grid = ["--sd", "ngram", "-k", "1,2", "-c", "2", "-n", "12", "--output-len", "32", "--ignore-eos", "--warmup", "0"]
    reference = tmp_path / "local"
    res = CliRunner().invoke(app, ["sweep", *MOCK, *grid, "--out", str(reference), "--no-progress", "--no-html"])
    assert res.exit_code == 0, res.output
    shared = tmp_path / "shared"
    shared.mkdir()
    sweep = tmp_path / "ray"
    args = ["sweep", *MOCK, *grid, "--out", str(sweep), "--no-progress", "--no-html", "--ray", "local"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    res2 = subprocess.run(speedbench_cmd(*args, "--ray-shared-dir", str(shared)), capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert res2.returncode == 0, res2.stdout + res2.stderr
    cells = sorted(p.name for p in (reference / "cells").iterdir())
    assert cells and cells == sorted(p.name for p in (sweep / "cells").iterdir() if p.is_dir())
    for name in cells:
        assert _figures(sweep / "cells" / name) == _figures(reference / "cells" / name), name
    assert all(c["status"] == "complete" for c in json.loads((sweep / "sweep.json").read_text())["cells"])
    assert list(shared.iterdir()) == []  # every staging folder read and removed
    # a shared folder that does not exist is refused in one line before anything runs
    res3 = CliRunner().invoke(app, ["sweep", *MOCK, *grid, "--out", str(tmp_path / "x"), "--no-progress", "--ray",
                                    "local", "--ray-shared-dir", str(tmp_path / "nowhere")])  # fmt: skip
    assert res3.exit_code == 2 and "--ray-shared-dir" in res3.output and "nowhere" in res3.output, res3.output
