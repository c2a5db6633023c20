"""``speedbench sweep``: running a planned grid of ordinary runs (docs/sweep.md); the plan is
usecases/sweep/plan.py.

Each cell is an ordinary run directory ``<sweep>/cells/<cell id>/`` written through usecases/run.py
(``prepare`` / ``execute`` / ``finish``), so every tool that reads runs reads it; ``<sweep>/sweep.json``
(results/sweep_manifest.py) holds the grid, the base config, the launch groups and each cell's status.
The runner goes group by group: one engine start per launch group, its cells one after the other.

Resume: complete cells are never run again; an interrupted cell is finished through the run-resume path
(``prepare(cfg, resume=cell_dir)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from speedbench.config import RunConfig
from speedbench.engines.base import Engine
from speedbench.errors import SpeedbenchError
from speedbench.results.loader import RunResult, read_manifest
from speedbench.results.manifest import Manifest, utc_now
from speedbench.results.rundir import RunDir, RunDirError
from speedbench.results.sweep_manifest import SweepDir, SweepManifest
from speedbench.usecases import run as run_uc
from speedbench.usecases.sweep.plan import Group, SweepPlan

# exit statuses of `speedbench sweep` (docs/sweep.md)
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# ---------------------------------------------------------------------------------------------- running


class Interrupted(SpeedbenchError):
    """A signal asked the sweep to stop."""


T = TypeVar("T")
SIGNAL_CAUSE = "interrupted by a signal (Ctrl-C, SIGTERM or SIGHUP)"


class Stop:
    """What a signal does to a running sweep: ``request()`` (from the signal handler) cancels the step in progress
    (a cell's run: it keeps its records and ends interrupted; an engine start) and no new step starts.  The sweep's
    own task is never cancelled, so engines are always closed (a launched server stopped) on the way out."""

    def __init__(self) -> None:
        self.requested = False
        self._task: asyncio.Future[Any] | None = None

    def request(self) -> None:
        self.requested = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def guard(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one step, cancellable by ``request``; Interrupted when a signal came before or during it."""
        if self.requested:
            coro.close()
            raise Interrupted
        task = asyncio.ensure_future(coro)
        self._task = task
        try:
            return await task
        except asyncio.CancelledError:
            if self.requested:
                raise Interrupted from None
            raise
        finally:
            self._task = None


EventKind = Literal["group_start", "group_started", "group_failed", "cell_start", "cell_progress", "cell_done"]


@dataclass(frozen=True)
class SweepEvent:
    """What the runner tells its listener (the CLI's progress lines)."""

    kind: EventKind
    manifest: SweepManifest
    done: int  # cells finished (complete or failed), of
    total: int  # every cell of the sweep
    elapsed_s: float  # since this invocation started
    eta_s: float | None  # time left, from the finished cells' durations per request; None: nothing to go on yet
    cell: str | None = None
    group: str | None = None
    progress: run_uc.Progress | None = None  # the running cell's live figures (cell_progress)


CellState = Literal["fresh", "resume", "finished"]


def cell_state(cell_dir: Path) -> CellState:
    """What a cell's run directory holds: nothing to keep (``fresh``), records of an unfinished run (``resume``),
    or a finished run (``finished``: its manifest says complete)."""
    run_dir = RunDir(cell_dir)
    has_records = run_dir.records_path.exists() and run_dir.records_path.stat().st_size > 0
    if not run_dir.manifest_path.exists():
        return "resume" if has_records else "fresh"
    try:
        status = read_manifest(run_dir).status
    except RunDirError:
        return "resume" if has_records else "fresh"  # resuming says what is wrong with it
    if status == "complete":
        return "finished"
    return "resume" if has_records else "fresh"


VERSION_KEYS = ("server_version", "version", "torch", "transformers")


def engine_versions(manifest: Manifest) -> dict[str, str]:
    """The versions a cell's manifest recorded: speedbench's, and the engine's own where it reports one."""
    out = {"speedbench": manifest.speedbench_version}
    if manifest.engine is not None:
        out["engine"] = manifest.engine.engine
        extra = manifest.engine.model_extra or {}
        for key in VERSION_KEYS:
            if extra.get(key):
                out[key] = _version_text(extra[key])
    return out


def _version_text(value: Any) -> str:
    """A version as text: vLLM's /version answers ``{"version": "0.32.0"}``, kept as ``0.32.0``."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict) and isinstance(value.get("version"), str):
        return str(value["version"])
    return str(value)


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and peak resident memory (MiB) of this process (``self``) or of its reaped
    children (a launched server and its workers, once stopped): ``resource.getrusage``."""

    cpu_s: float
    max_rss_mb: float

    @classmethod
    def now(cls, children: bool = False) -> Usage:
        try:
            import resource
        except ImportError:  # pragma: no cover - not POSIX
            return cls(0.0, 0.0)
        u = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
        per_mib = 1024 * 1024 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return cls(u.ru_utime + u.ru_stime, u.ru_maxrss / per_mib)


def error_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@dataclass
class _Held:
    """A started launch group's engine, its exit stack, and the children's CPU seconds when it started (with what
    groups closed before had been given of them)."""

    stack: contextlib.AsyncExitStack
    engine: Engine
    children_cpu_s: float
    reaped_cpu_s: float


class SweepRunner:
    """Runs the cells not yet done, group by group (``--order abba``: in the plan's interleaved order), writing
    sweep.json at every change."""

    def __init__(
        self,
        plan: SweepPlan,
        sdir: SweepDir,
        manifest: SweepManifest,
        on_event: Callable[[SweepEvent], None] | None = None,
        stop: Stop | None = None,
        retry_failed: bool = False,
    ) -> None:
        self.plan = plan
        self.sdir = sdir
        self.manifest = manifest
        self.on_event = on_event
        self.stop = stop or Stop()
        self.retry_failed = retry_failed
        self.t0 = time.monotonic()
        self.todo = [c.id for c in plan.cells if self._needs_run(manifest.cell(c.id).status)]
        self.finished: set[str] = set()  # cells of ``todo`` this invocation has run to an end (any status)
        self._live: tuple[str, int] | None = None  # the running cell and its records done
        self._reaped_cpu = 0.0  # launched servers' CPU seconds given to the groups closed so far

    def _needs_run(self, status: str) -> bool:
        return status != "complete" and (status != "failed" or self.retry_failed)

    # ---- sweep.json and events -----------------------------------------------------------------
    def _save(self, manifest: SweepManifest) -> None:
        self.manifest = self.sdir.write(manifest)

    def eta(self) -> float | None:
        """Seconds left: the finished cells' time per record times the records still to run."""
        spent = records = 0.0
        for c in self.manifest.cells:
            if c.status in ("complete", "failed") and c.duration_s and c.records:
                spent += c.duration_s
                records += c.records
        if records == 0:
            return None
        left = sum(self.plan.work[cid].requests for cid in self.todo if cid not in self.finished)
        if self._live is not None:
            left -= min(self._live[1], self.plan.work[self._live[0]].requests)
        return spent / records * max(left, 0)

    def emit(
        self,
        kind: EventKind,
        cell: str | None = None,
        group: str | None = None,
        progress: run_uc.Progress | None = None,
    ) -> None:
        if self.on_event is None:
            return
        counts = self.manifest.counts()
        self.on_event(
            SweepEvent(
                kind,
                self.manifest,
                counts.get("complete", 0) + counts.get("failed", 0),
                len(self.manifest.cells),
                time.monotonic() - self.t0,
                self.eta(),
                cell,
                group,
                progress,
            )
        )

    # ---- the sweep -----------------------------------------------------------------------------
    async def run(self) -> SweepManifest:
        self._save(self.manifest.with_status("running"))
        try:
            if self.plan.config.order == "abba":
                await self.run_interleaved()
            else:
                for group in self.plan.groups:
                    cells = [c for c in group.cells if c in self.todo]
                    if cells:
                        await self.run_group(group, cells)
        except Interrupted:
            self._save(self.manifest.with_status("interrupted", SIGNAL_CAUSE))
            return self.manifest
        done = all(c.status == "complete" for c in self.manifest.cells)
        self._save(self.manifest.with_status("complete" if done else "failed"))
        return self.manifest

    async def run_group(self, group: Group, cells: list[str]) -> None:
        started = await self._start_group(group, cells)
        if started is None:
            return
        try:
            for cid in cells:
                if self.stop.requested:
                    raise Interrupted
                await self.run_cell(cid, started.engine)
        finally:
            await self._close_group(group, started)

    async def run_interleaved(self) -> None:
        """``--order abba``: the cells in the plan's order (``plan.abba_order``), each on its group's engine, started
        when the group's first cell comes and closed after its last: the engines of the interleaved groups are held
        at once.  A group whose engine does not start fails its cells, and the others go on."""
        todo = [c.id for c in self.plan.cells if c.id in self.todo]
        groups = {g.id: g for g in self.plan.groups}
        last = {self.plan.cell(cid).group: i for i, cid in enumerate(todo)}
        held: dict[str, _Held] = {}
        failed: set[str] = set()
        try:
            for i, cid in enumerate(todo):
                gid = self.plan.cell(cid).group
                if gid in failed:
                    continue
                if gid not in held:
                    started = await self._start_group(
                        groups[gid], [c for c in todo[i:] if self.plan.cell(c).group == gid]
                    )
                    if started is None:
                        failed.add(gid)
                        continue
                    held[gid] = started
                if self.stop.requested:
                    raise Interrupted
                await self.run_cell(cid, held[gid].engine)
                if last[gid] == i:
                    await self._close_group(groups[gid], held.pop(gid))
        finally:
            for gid in list(held):  # interrupted or failed: every engine still held is closed
                await self._close_group(groups[gid], held.pop(gid))

    async def _start_group(self, group: Group, cells: list[str]) -> _Held | None:
        """Start a launch group's engine (its ``cells``: the ones this invocation runs on it); None: it did not
        start, and each of those cells is failed with the cause."""
        if self.stop.requested:
            raise Interrupted
        self.emit("group_start", group=group.id)
        stack = contextlib.AsyncExitStack()
        t = time.monotonic()
        held_cpu = (Usage.now(children=True).cpu_s, self._reaped_cpu)
        starts = self.manifest.group(group.id).starts + 1
        try:
            # looked up on the module each time: tests count the starts by replacing it
            engine: Engine = await self.stop.guard(stack.enter_async_context(run_uc.open_engine(group.spec)))
        except Interrupted:
            raise
        except Exception as e:  # the engine did not start: every cell of the group fails with the cause
            cause = f"engine start failed: {error_line(e)}"
            self._save(self.manifest.with_group(group.id, starts=starts, start_error=cause))
            for cid in cells:
                self.finished.add(cid)
                self._save(self.manifest.with_cell(cid, status="failed", cause=cause, finished_utc=utc_now()))
            self.emit("group_failed", group=group.id)
            return None
        held = _Held(stack, engine, *held_cpu)
        try:
            command = (engine.describe().get("server") or {}).get("command") if group.spec.launch else None
            self._save(
                self.manifest.with_group(
                    group.id,
                    starts=starts,
                    startup_s=round(time.monotonic() - t, 3),
                    start_error=None,
                    server_command=command or self.manifest.group(group.id).server_command,
                )
            )
            self.emit("group_started", group=group.id)
        except BaseException:
            await self._close_group(group, held)
            raise
        return held

    async def _close_group(self, group: Group, held: _Held) -> None:
        await held.stack.aclose()  # the engine is closed (a launched server stopped) however the group ended
        if group.spec.launch:  # its processes are reaped now: their CPU time is in RUSAGE_CHILDREN
            # less what other groups closed since this one started took of it (--order abba holds several)
            spent = Usage.now(children=True).cpu_s - held.children_cpu_s - (self._reaped_cpu - held.reaped_cpu_s)
            self._reaped_cpu += spent
            before = self.manifest.group(group.id).server_cpu_s or 0.0
            self._save(self.manifest.with_group(group.id, server_cpu_s=round(before + spent, 3)))

    async def run_cell(self, cid: str, engine: Engine) -> None:
        cell = self.plan.cell(cid)
        before = self.manifest.cell(cid)
        cell_dir = self.sdir.cell_dir(cid)
        state = cell_state(cell_dir)
        if state == "finished" and before.status == "failed" and self.retry_failed:
            state = "resume"  # run --resume sends its retryable failures again
        self._save(
            self.manifest.with_cell(
                cid, status="running", cause=None, started_utc=utc_now(), segments=before.segments + 1
            )
        )
        self._live = (cid, 0)
        self.emit("cell_start", cell=cid)
        t = time.monotonic()
        usage = Usage.now()

        def spent() -> float:
            return round((before.duration_s or 0.0) + time.monotonic() - t, 3)

        def cost() -> dict[str, float]:
            now = Usage.now()
            cpu = (before.client_cpu_s or 0.0) + now.cpu_s - usage.cpu_s
            return {"client_cpu_s": round(cpu, 3), "client_max_rss_mb": round(now.max_rss_mb, 1)}

        def on_progress(p: run_uc.Progress) -> None:
            self._live = (cid, p.done)
            self.emit("cell_progress", cell=cid, progress=p)

        outcome: run_uc.Outcome = "complete"
        try:
            if state == "finished":
                result = run_uc.finish(RunDir(cell_dir))
                cfg = result.manifest.config
            else:
                cfg, run_dir, samples, done, manifest = run_uc.prepare(
                    cell.cfg, str(cell_dir) if state == "resume" else None, {}
                )
                outcome = await self.stop.guard(
                    run_uc.execute(cfg, run_dir, samples, done, manifest, on_progress, engine=engine)
                )
                result = run_uc.finish(run_dir)
        except Interrupted:  # before its run started: it stays as it was
            self._live = None
            self._save(
                self.manifest.with_cell(cid, status=before.status, cause=before.cause, duration_s=spent(), **cost())
            )
            raise
        except Exception as e:  # its run raised: recorded, and the sweep goes on
            self._live = None
            self.finished.add(cid)
            self._save(
                self.manifest.with_cell(
                    cid, status="failed", cause=error_line(e), finished_utc=utc_now(), duration_s=spent(), **cost()
                )
            )
            self.emit("cell_done", cell=cid)
            return
        self._live = None
        self.finished.add(cid)
        self._save(self._finished(cid, cfg, result, outcome, spent()).with_cell(cid, **cost()))
        self.emit("cell_done", cell=cid)
        if outcome == "interrupted":
            raise Interrupted

    def _finished(
        self, cid: str, cfg: RunConfig, result: RunResult, outcome: run_uc.Outcome, duration_s: float
    ) -> SweepManifest:
        verdict = run_uc.failure_verdict(cfg, result.records) if outcome == "complete" else None
        if outcome == "complete":
            status, cause = ("failed", verdict) if verdict else ("complete", None)
        else:  # a signal, or the circuit breaker (the server unreachable): --resume finishes it
            status, cause = "interrupted", result.manifest.stop_cause or outcome
        o = result.summary.overall
        m = self.manifest.with_cell(
            cid,
            status=status,
            cause=cause,
            outcome=outcome,
            verdict=verdict,
            finished_utc=utc_now(),
            duration_s=duration_s,
            records=o.requests + o.errors,
            requests=o.requests,
            errors=o.errors,
            acceptance_length=o.acceptance_length,
            output_tps=o.output_tps,
            output_tokens=o.output_tokens,
        )
        return m.with_versions(engine_versions(result.manifest))


def exit_status(manifest: SweepManifest) -> int:
    """0: every cell complete; 1: some cell failed (or was stopped by the circuit breaker); 130: interrupted."""
    if manifest.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if all(c.status == "complete" for c in manifest.cells) else EXIT_FAILED


def run_sweep(
    plan: SweepPlan,
    sdir: SweepDir,
    manifest: SweepManifest,
    on_event: Callable[[SweepEvent], None] | None = None,
    stop: Stop | None = None,
    retry_failed: bool = False,
    signals: Sequence[int] = (),
    resume: bool = False,
) -> SweepManifest:
    """Run a sweep to its end in its own event loop, holding the directory's lock (a second process on it is
    refused: RunDirError); returns the final manifest.  ``resume``: ``manifest`` is the saved one (``resume_plan``),
    marked resumed once the lock is held.  ``signals`` (the CLI: SIGINT, SIGTERM, SIGHUP) stop it cleanly: the
    running cell keeps its records and ends interrupted, nothing new starts."""
    with sdir.lock():
        if resume:
            manifest = sdir.write(manifest.resumed())
        return _run_locked(plan, sdir, manifest, on_event, stop or Stop(), retry_failed, signals)


def _run_locked(
    plan: SweepPlan,
    sdir: SweepDir,
    manifest: SweepManifest,
    on_event: Callable[[SweepEvent], None] | None,
    stop: Stop,
    retry_failed: bool,
    signals: Sequence[int],
) -> SweepManifest:
    runner = SweepRunner(plan, sdir, manifest, on_event, stop, retry_failed)

    async def main() -> SweepManifest:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, stop.request)
        try:
            return await runner.run()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
