"""The sweep manifest (``<sweep dir>/sweep.json``) as a typed model, and the sweep directory that holds it.

A sweep directory holds one ordinary run directory per cell (``cells/<cell id>/``: every tool that reads runs
reads them), the logs of the servers it launched (``groups/<group id>/server.log``) and ``sweep.json``: the grid,
the base run config (secrets redacted), each launch group and each cell with its settings, status and figures,
and the engine versions the cells' manifests recorded.  Like the run manifest it moves through its states by
methods that return a new manifest, and it is rewritten atomically at every change, so a sweep killed at any
moment leaves a readable sweep.json (``speedbench sweep --resume DIR``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from speedbench import __version__
from speedbench.atomic import atomic_write
from speedbench.config import RunConfig, Secrets, redact
from speedbench.config.sweep import SweepGrid
from speedbench.results.manifest import utc_now
from speedbench.results.rundir import RunDirError, parse_versioned

# 1: the first typed form.
SWEEP_SCHEMA_VERSION = 1
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"

# pending: not run yet; running: being run now (or the sweep died while it ran); complete: its run finished and is
# usable; interrupted: its run was stopped part-way (a signal, or the circuit breaker: ``cause`` says which) and
# ``--resume`` finishes it; failed: its engine did not start, its run raised, or its run finished but failed
# (``failure_verdict``: every request, or more than --max-failed of them); ``cause`` says why.
CellStatus = Literal["pending", "running", "complete", "interrupted", "failed"]
# complete: every cell complete; failed: every cell run, some failed or stopped; interrupted: stopped by a signal
SweepStatus = Literal["created", "running", "complete", "failed", "interrupted"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CellSettings(_Frozen):
    """What a cell varies: the grid's values for it."""

    sd: str  # "none" for the SD-off baseline
    k: int  # 0 for the baseline
    concurrency: int
    dataset: str
    engine_options: dict[str, str] = Field(default_factory=dict)  # the grid's engine-option values
    base_url: str | None = None  # attached with one server per SD setting (--url): this setting's (redacted)
    repeat: int = 1  # 1..grid.repeats


class SweepCell(_Frozen):
    """One cell: an ordinary run directory ``dir`` (relative to the sweep directory) and where it stands."""

    id: str
    settings: CellSettings
    group: str  # the launch group whose engine it runs on
    baseline: str | None = None  # the id of its SD-off pair (same prompts, output length, concurrency); None: it is one
    dir: str
    status: CellStatus = "pending"
    cause: str | None = None  # why failed / interrupted
    outcome: str | None = None  # how its run's last segment ended: complete, interrupted, stopped (usecases.run)
    verdict: str | None = None  # failure_verdict of a finished run (None: usable)
    started_utc: str | None = None
    finished_utc: str | None = None
    duration_s: float | None = None  # wall time spent on it, summed over the sweep's attempts
    records: int | None = None  # finished (question_id, turn) records: successes + errors
    requests: int | None = None  # successful
    errors: int | None = None
    acceptance_length: float | None = None
    output_tps: float | None = None
    output_tokens: int | None = None
    segments: int = 0  # how many times the sweep ran it (1, then +1 per resume)
    # what the cell cost the speedbench process (sweep/runner.py ``Usage``): CPU seconds (user + system) while it
    # ran, summed over attempts, and the process's peak resident memory so far (MiB).  An in-process engine
    # (reference, mock) runs in this process, so its work is in these figures too.
    client_cpu_s: float | None = None
    client_max_rss_mb: float | None = None


class LaunchGroup(_Frozen):
    """Cells that share one engine (one launched server): everything launch-time is the same; concurrency (and,
    where the batch cap changes what is measured, not even that) and dataset vary within it."""

    id: str
    engine: dict[str, Any]  # the EngineSpec it is built from (redacted), max_concurrency = its largest concurrency
    max_concurrency: int
    per_concurrency: bool = False  # the engine's batch cap changes what it measures: one start per concurrency
    cells: list[str]
    starts: int = 0  # how many times the sweep started it (once, then once per resume that needed it)
    startup_s: float | None = None  # the last start's duration
    start_error: str | None = None  # why the last start failed
    server_command: str | None = None  # a launched server's command line (also in each cell's manifest)
    # a launched server's CPU seconds (its processes and their children, user + system, from the start to the
    # stop), summed over starts; None for an engine that is not a child process of the sweep
    server_cpu_s: float | None = None
    node: str | None = None  # sweep --ray: where the group's last task ran (host, Ray node id, worker pid)


class SweepManifest(_Frozen):
    """sweep.json."""

    schema_version: int = SWEEP_SCHEMA_VERSION
    speedbench_version: str = __version__
    created_utc: str = Field(default_factory=utc_now)
    updated_utc: str | None = None
    status: SweepStatus = "created"
    stop_cause: str | None = None
    resumed_utc: list[str] = Field(default_factory=list)
    grid: SweepGrid
    base: RunConfig  # every cell's settings but the grid's (secrets redacted, as run manifests)
    ignore_eos: bool | None = None  # None: true for throughput and synthetic datasets, false otherwise
    urls: dict[str, str] = Field(default_factory=dict)  # one attached server per SD setting (redacted)
    groups: list[LaunchGroup]
    cells: list[SweepCell]
    engine_versions: dict[str, str] = Field(default_factory=dict)  # from the cells' manifests
    order: Literal["grid", "abba"] = "grid"  # the order the cells run in (--order; before it: grid)

    @classmethod
    def new(
        cls,
        grid: SweepGrid,
        base: RunConfig,
        ignore_eos: bool | None,
        urls: dict[str, str],
        groups: list[LaunchGroup],
        cells: list[SweepCell],
        order: Literal["grid", "abba"] = "grid",
    ) -> SweepManifest:
        return cls(
            grid=grid,
            base=RunConfig.model_validate(redact(base.model_dump())),
            ignore_eos=ignore_eos,
            urls=redact(urls),
            groups=groups,
            cells=cells,
            order=order,
        )

    # ---- moving on ---------------------------------------------------------------------------
    def cell(self, cell_id: str) -> SweepCell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(cell_id)

    def group(self, group_id: str) -> LaunchGroup:
        for g in self.groups:
            if g.id == group_id:
                return g
        raise KeyError(group_id)

    def with_cell(self, cell_id: str, **update: Any) -> SweepManifest:
        self.cell(cell_id)  # KeyError for an unknown cell
        cells = [c.model_copy(update=update) if c.id == cell_id else c for c in self.cells]
        return self.model_copy(update={"cells": cells})

    def with_group(self, group_id: str, **update: Any) -> SweepManifest:
        self.group(group_id)
        groups = [g.model_copy(update=update) if g.id == group_id else g for g in self.groups]
        return self.model_copy(update={"groups": groups})

    def with_versions(self, versions: dict[str, str]) -> SweepManifest:
        """Merge engine versions read from a cell's manifest (a value that differs between cells is kept as
        ``a | b``: a server upgraded between two resumes shows)."""
        merged = dict(self.engine_versions)
        for key, value in versions.items():
            seen = merged[key].split(" | ") if key in merged else []
            if value not in seen:
                seen.append(value)
            merged[key] = " | ".join(seen)
        return self.model_copy(update={"engine_versions": merged})

    def with_status(self, status: SweepStatus, stop_cause: str | None = None) -> SweepManifest:
        return self.model_copy(update={"status": status, "stop_cause": stop_cause})

    def resumed(self) -> SweepManifest:
        return self.model_copy(
            update={"resumed_utc": [*self.resumed_utc, utc_now()], "status": "running", "stop_cause": None}
        )

    # ---- reading -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Cells per status."""
        out: dict[str, int] = {}
        for c in self.cells:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def cost(self) -> dict[str, float | None]:
        """What the sweep cost so far: the cells' wall time, the speedbench process's CPU seconds over them and its
        peak memory (``SweepCell.client_*``), and the launched servers' CPU seconds (``LaunchGroup.server_cpu_s``;
        None when no server was launched)."""
        cells = [c for c in self.cells if c.client_cpu_s is not None]
        servers = [g.server_cpu_s for g in self.groups if g.server_cpu_s is not None]
        return {
            "wall_s": sum(c.duration_s or 0.0 for c in cells),
            "client_cpu_s": sum(c.client_cpu_s or 0.0 for c in cells),
            "client_max_rss_mb": max((c.client_max_rss_mb or 0.0 for c in cells), default=None),
            "server_cpu_s": sum(servers) if servers else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class SweepDir:
    """Where a sweep lives: ``sweep.json``, ``cells/<id>/`` (run directories), ``groups/<id>/`` (server logs).
    ``write`` scrubs ``secrets`` (the sweep's secret values, URLs' userinfo) from everything it writes."""

    def __init__(self, path: str | Path, secrets: Secrets | None = None) -> None:
        self.path = Path(path)
        self.secrets = secrets or Secrets()
        self.sweep_path = self.path / SWEEP_FILE

    def cell_dir(self, cell_id: str) -> Path:
        return self.path / "cells" / cell_id

    def group_dir(self, group_id: str) -> Path:
        return self.path / "groups" / group_id

    def exists(self) -> bool:
        return self.sweep_path.exists()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while a sweep runs: a second ``speedbench sweep`` (or ``--resume``) on the same directory is refused
        in one line instead of running the same cells twice (an advisory ``flock`` on ``.lock``; released when
        the process ends, however it ends)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RunDirError(
                    f"{self.path} is being run by another speedbench sweep (it holds {self.path / LOCK_FILE}): "
                    "wait for it to end, or stop it (Ctrl-C) and --resume"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def write(self, manifest: SweepManifest) -> SweepManifest:
        """Write sweep.json atomically (a reader sees the old one or the new one); returns the manifest written."""
        manifest = manifest.model_copy(update={"updated_utc": utc_now()})
        data = self.secrets.scrub_obj(manifest.to_dict())
        atomic_write(self.sweep_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return manifest

    def read(self) -> SweepManifest:
        return read_sweep(self.path)


def read_sweep(path: str | Path) -> SweepManifest:
    """A sweep directory's sweep.json, typed; one-line ``RunDirError`` when it is missing, not JSON, not a sweep
    manifest, or from a newer schema."""
    file = Path(path) / SWEEP_FILE
    if not file.exists():
        raise RunDirError(f"{file}: not found; is {path} a speedbench sweep directory?")
    text = file.read_text(encoding="utf-8")
    return parse_versioned(
        file, text, SweepManifest, SWEEP_SCHEMA_VERSION, "sweep manifest", "sweep", "sweep directory"
    )
