"""``speedbench sweep --ray ADDRESS``: a sweep's launch groups run as Ray tasks on a cluster (docs/scale.md).

- **Unit of work**: one launch group (one engine start) is one Ray task; it asks for the resources the group needs
  (``--ray-gpus`` for an engine it launches, ``--ray-resource NAME=AMOUNT`` for a custom resource, e.g. the one
  naming the node that hosts an attached endpoint; one CPU by default) and runs the group's pending cells one
  after the other in a temporary folder of the node it landed on.
- **Results come back to the driver**: the task returns each cell's run directory (every file, as bytes), or with
  ``--ray-shared-dir PATH`` (a folder every node and the driver see: NFS, a mounted bucket) writes it under PATH and
  returns only where; the driver writes it into ``<sweep>/cells/<id>/`` (a whole directory swapped in at once, the
  cell's ``config.out`` pointed at it), recomputes its figures from the records (``run.finish``) and updates sweep.json,
  which stays the one source of truth.  Nothing of a cell reaches the sweep directory before its task returned.
- **Faults**: a worker or a node lost mid-group fails the task's attempt; Ray retries it (``max_retries``) on a node
  that is alive, from scratch, so a partial cell is discarded and never counted twice.  A group whose every attempt
  failed has its cells failed with the cause (``--resume --retry-failed`` runs them again).  The driver itself can
  die: sweep.json says which cells are complete, and ``sweep --resume DIR --ray ADDRESS`` sends the rest again.
- **Ctrl-C** on the driver cancels the tasks in flight; their cells stay pending (nothing of theirs was written).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from speedbench.cluster import connect
from speedbench.errors import InvalidInput
from speedbench.results.manifest import utc_now
from speedbench.results.rundir import RunDir
from speedbench.results.sweep_manifest import SweepDir, SweepManifest
from speedbench.usecases import run as run_uc
from speedbench.usecases.sweep.plan import Group, SweepPlan
from speedbench.usecases.sweep.runner import SIGNAL_CAUSE, Stop, SweepEvent, SweepRunner, Usage, error_line

MAX_RETRIES = 3  # attempts of a group's task after the first (a lost node or worker)
POLL_S = 0.5


def _read_dir(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()} if path.is_dir() else {}


def _staging_prefix(sweep_id: str) -> str:
    return f"speedbench-ray-{sweep_id}-"


def _sweep_id(sdir: SweepDir) -> str:
    """The sweep's name in a shared folder: its directory's name and a digest of its absolute path."""
    import hashlib

    path = str(sdir.path.resolve())
    return f"{sdir.path.name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def run_group_task(payload: dict[str, Any]) -> dict[str, Any]:
    """On a Ray worker: start the group's engine, run its cells into a temporary folder, return their files (or,
    with a shared folder, run them into a folder of their own there and return its path)."""
    import asyncio

    from speedbench.config import EngineSpec, RunConfig

    shared = payload.get("shared")
    if shared is not None and not Path(shared).is_dir():
        raise RuntimeError(
            f"--ray-shared-dir {shared} is not a folder on {socket.gethostname()}; mount it on every node"
        )
    tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(payload.get("sweep", "")), dir=shared))
    spec = EngineSpec.model_validate(payload["spec"]).model_copy(update={"log_dir": str(tmp / "group")})
    (tmp / "group").mkdir()
    cells: list[dict[str, Any]] = []
    started: dict[str, Any] = {}

    async def main() -> None:
        t = time.monotonic()
        async with run_uc.open_engine(spec) as engine:
            started["startup_s"] = round(time.monotonic() - t, 3)
            started["command"] = (engine.describe().get("server") or {}).get("command") if spec.launch else None
            for cell in payload["cells"]:
                out = tmp / cell["id"]
                cfg = RunConfig.model_validate(cell["cfg"]).model_copy(update={"out": str(out)})
                t0, usage = time.monotonic(), Usage.now()
                entry: dict[str, Any] = {"id": cell["id"]}
                try:
                    cfg, run_dir, samples, done, manifest = run_uc.prepare(cfg, None, {})
                    entry["outcome"] = await run_uc.execute(cfg, run_dir, samples, done, manifest, engine=engine)
                except Exception as e:  # the cell's run raised: recorded, the group goes on
                    entry["error"] = error_line(e)
                now = Usage.now()
                entry |= {
                    "files": _read_dir(out) if shared is None else {},
                    "path": str(out) if shared is not None and out.is_dir() else None,
                    "duration_s": round(time.monotonic() - t0, 3),
                    "client_cpu_s": round(now.cpu_s - usage.cpu_s, 3),
                    "client_max_rss_mb": round(now.max_rss_mb, 1),
                }
                cells.append(entry)

    try:
        asyncio.run(main())
        start_error = None
    except Exception as e:
        start_error = f"engine start failed: {error_line(e)}" if "startup_s" not in started else error_line(e)
    finally:
        log = _read_dir(tmp / "group")
        if shared is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(tmp / "group", ignore_errors=True)  # the cells stay for the driver; it removes the rest
    import ray

    node = ray.get_runtime_context().get_node_id()
    return {"cells": cells, "start_error": start_error, "host": socket.gethostname(), "pid": os.getpid(),
            "node_id": node, "group_files": log, "staging": str(tmp) if shared is not None else None,
            **started}  # fmt: skip


def _payload(plan: SweepPlan, group: Group, cells: Sequence[str], shared: str | None, sweep_id: str) -> dict[str, Any]:
    return {
        "group": group.id,
        "shared": shared,
        "sweep": sweep_id,
        "spec": group.spec.model_dump(mode="json"),
        "cells": [{"id": cid, "cfg": plan.cell(cid).cfg.model_dump(mode="json")} for cid in cells],
    }


def _swap_in(cell_dir: Path, files: dict[str, bytes]) -> None:
    """The cell's directory replaced by the returned files at once (a sibling written, then renamed over), its
    manifest's ``config.out`` pointing at where it now is."""
    new = cell_dir.with_name(cell_dir.name + ".incoming")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    for name, data in files.items():
        if name == "manifest.json":
            m = json.loads(data)
            m.setdefault("config", {})["out"] = str(cell_dir)
            data = (json.dumps(m, indent=2) + "\n").encode()
        (new / name).write_bytes(data)
    old = cell_dir.with_name(cell_dir.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if cell_dir.exists():
        cell_dir.rename(old)
    new.rename(cell_dir)
    shutil.rmtree(old, ignore_errors=True)


class RayRunner(SweepRunner):
    """The sweep's bookkeeping (sweep.json, events, a cell's end) as ``SweepRunner``; the running is Ray's."""

    def apply(self, group: Group, cells: Sequence[str], out: dict[str, Any]) -> None:
        g = self.manifest.group(group.id)
        node = f"{out.get('host')}, Ray node {out.get('node_id')}, pid {out.get('pid')}"
        self._save(
            self.manifest.with_group(
                group.id,
                starts=g.starts + 1,
                startup_s=out.get("startup_s"),
                start_error=out.get("start_error") if "startup_s" not in out else None,
                server_command=out.get("command") or g.server_command,
                node=node,
            )
        )
        if out.get("group_files"):
            gdir = self.sdir.group_dir(group.id)
            gdir.mkdir(parents=True, exist_ok=True)
            for name, data in out["group_files"].items():
                (gdir / name).write_bytes(data)
        returned = {c["id"]: c for c in out["cells"]}
        for cid in cells:
            c = returned.get(cid)
            self.finished.add(cid)
            if c is None:  # the engine did not start, or the group stopped before this cell
                cause = out.get("start_error") or "its group's task ended before this cell ran"
                self._save(self.manifest.with_cell(cid, status="failed", cause=cause, finished_utc=utc_now()))
                self.emit("cell_done", cell=cid)
                continue
            cell_dir = self.sdir.cell_dir(cid)
            if c.get("path"):  # written to the shared folder: read from there
                c["files"] = _read_dir(Path(c["path"]))
            if c["files"]:
                _swap_in(cell_dir, c["files"])
            cost = {"client_cpu_s": c["client_cpu_s"], "client_max_rss_mb": c["client_max_rss_mb"]}
            before = self.manifest.cell(cid)
            base = self.manifest.with_cell(cid, segments=before.segments + 1, started_utc=before.started_utc)
            self.manifest = base
            if "error" in c or not c["files"]:
                cause = c.get("error") or "no run directory came back"
                self._save(
                    self.manifest.with_cell(
                        cid, status="failed", cause=cause, finished_utc=utc_now(), duration_s=c["duration_s"], **cost
                    )
                )
            else:
                result = run_uc.finish(RunDir(cell_dir))
                cfg = result.manifest.config
                self._save(self._finished(cid, cfg, result, c["outcome"], c["duration_s"]).with_cell(cid, **cost))
            self.emit("cell_done", cell=cid)
        if out.get("staging"):
            shutil.rmtree(out["staging"], ignore_errors=True)

    def fail_group(self, cells: Sequence[str], cause: str) -> None:
        for cid in cells:
            self.finished.add(cid)
            self._save(self.manifest.with_cell(cid, status="failed", cause=cause, finished_utc=utc_now()))
            self.emit("cell_done", cell=cid)


def run_sweep_ray(
    plan: SweepPlan,
    sdir: SweepDir,
    manifest: SweepManifest,
    address: str,
    resources: dict[str, float] | None = None,
    gpus: float = 0.0,
    on_event: Callable[[SweepEvent], None] | None = None,
    stop: Stop | None = None,
    retry_failed: bool = False,
    signals: Sequence[int] = (),
    resume: bool = False,
    max_retries: int = MAX_RETRIES,
    shared: str | None = None,
) -> SweepManifest:
    """The sweep on Ray (module docstring), holding the sweep directory's lock like ``run_sweep``."""
    if shared is not None:
        if not Path(shared).is_dir():
            raise InvalidInput(f"--ray-shared-dir {shared}: no such folder here (it must be seen by every node)")
        shared = str(Path(shared).resolve())
    ray = connect(address, "sweep --ray")
    stop = stop or Stop()
    with sdir.lock():
        if resume:
            manifest = sdir.write(manifest.resumed())
        runner = RayRunner(plan, sdir, manifest, on_event, stop, retry_failed)
        old = {sig: signal.signal(sig, lambda *_: stop.request()) for sig in signals}
        sweep_id = _sweep_id(sdir)
        try:
            return _drive(ray, plan, runner, resources or {}, gpus, max_retries, stop, shared, sweep_id)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if shared is not None:  # what lost or cancelled attempts left in the shared folder: never read, removed
                for left in Path(shared).glob(_staging_prefix(sweep_id) + "*"):
                    shutil.rmtree(left, ignore_errors=True)


def _drive(
    ray: Any,
    plan: SweepPlan,
    runner: RayRunner,
    resources: dict[str, float],
    gpus: float,
    retries: int,
    stop: Stop,
    shared: str | None,
    sweep_id: str,
) -> SweepManifest:
    runner._save(runner.manifest.with_status("running"))
    task = ray.remote(run_group_task).options(
        num_cpus=1, num_gpus=gpus, resources=resources, max_retries=retries, retry_exceptions=False
    )
    futures: dict[Any, tuple[Group, list[str]]] = {}
    for group in plan.groups:
        cells = [c for c in group.cells if c in runner.todo]
        if not cells:
            continue
        for cid in cells:
            runner._save(runner.manifest.with_cell(cid, status="running", cause=None, started_utc=utc_now()))
        futures[task.remote(_payload(plan, group, cells, shared, sweep_id))] = (group, cells)
        runner.emit("group_start", group=group.id)
    while futures:
        if stop.requested:
            for f, (_, cells) in futures.items():
                ray.cancel(f, force=True)
                for cid in cells:  # nothing of theirs was written: they are still to run
                    runner._save(runner.manifest.with_cell(cid, status="pending", cause=None))
            runner._save(runner.manifest.with_status("interrupted", SIGNAL_CAUSE))
            return runner.manifest
        ready, _ = ray.wait(list(futures), num_returns=1, timeout=POLL_S)
        for f in ready:
            group, cells = futures.pop(f)
            try:
                out = ray.get(f)
            except Exception as e:  # every attempt failed (nodes lost, the task crashed)
                runner.fail_group(cells, f"ray task failed after {retries + 1} attempts: {error_line(e)}")
                continue
            runner.apply(group, cells, out)
    done = all(c.status == "complete" for c in runner.manifest.cells)
    runner._save(runner.manifest.with_status("complete" if done else "failed"))
    return runner.manifest
