"""One benchmark run: dataset -> engine -> load generator -> run directory -> summary.

``run`` is the entry point (``speedbench run``, ``check-lossless``, tests): ``prepare`` (dataset, run directory,
``--resume``), ``execute`` (the engine and the load), ``finish`` (the summary from the directory alone), with a
``Started`` handed to the caller before the load and an ``Ended`` returned.  The sweep runner drives the three
steps itself (its stop guard sits between them).  ``report`` recomputes summaries from the run directory alone
through ``results.loader.load_run``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from speedbench.config import REDACTED, RunConfig, engine_secrets, redact_urls
from speedbench.config.flags import resume_changeable
from speedbench.data.readers import content_hash, load_dataset, pick_stratified
from speedbench.data.sample import Sample
from speedbench.engines import registry
from speedbench.engines.base import Engine
from speedbench.engines.build import open_engine
from speedbench.errors import InvalidInput
from speedbench.load.drivers import Clients
from speedbench.load.drivers.windows import Decided, measure
from speedbench.load.generator import WINDOW_RERUN, LoadResult, LoadSettings, clock_of, retryable, warmup_requests
from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.sources import DecodeBasis, request_stats
from speedbench.records import RequestRecord, final_attempts
from speedbench.results.loader import RunResult, load_run, read_manifest
from speedbench.results.manifest import CounterWindow, DatasetInfo, FreshServer, Manifest, Measurement, WarmupInfo
from speedbench.results.rundir import RunDir, RunDirError


def limit_turns(samples: list[Sample], max_turns: int | None) -> list[Sample]:
    """Keep the first ``max_turns`` turns of each conversation (all when None)."""
    if max_turns is None:
        return samples
    return [
        dataclasses.replace(s, turns=s.turns[:max_turns], multiturn=min(len(s.turns), max_turns) > 1) for s in samples
    ]


def default_out(engine: str) -> str:
    return f"runs/{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{engine}"


def resolve_output_len(cfg: RunConfig) -> RunConfig:
    """Fill output_len from the engine's declared default when the user gave none."""
    if cfg.output_len is not None:
        return cfg
    return cfg.model_copy(update={"output_len": registry.capabilities(cfg.engine.kind).default_output_len})


@dataclass
class Progress:
    """Live figures for the progress bar, updated as each record lands."""

    total: int
    basis: DecodeBasis
    done: int = 0
    errors: int = 0
    tokens: int = 0
    accepted: int = 0
    steps: int = 0
    first_start_ns: int | None = None
    last_end_ns: int = 0

    def add(self, rec: RequestRecord) -> None:
        self.done += 1
        if not rec.ok:
            self.errors += 1
            return
        self.tokens += rec.tokens
        self.first_start_ns = rec.start_ns if self.first_start_ns is None else min(self.first_start_ns, rec.start_ns)
        self.last_end_ns = max(self.last_end_ns, rec.end_ns)
        s = request_stats(rec, self.basis)
        if s is not None:
            self.accepted += s.accepted
            self.steps += s.steps

    def line(self) -> str:
        al = acceptance_length(self.accepted, self.steps)
        span = (self.last_end_ns - (self.first_start_ns or 0)) / 1e9
        tps = self.tokens / span if span > 0 and self.first_start_ns is not None else 0.0
        al_text = "-" if al is None else f"{al:.3f}"
        return f"AL {al_text} | {tps:,.0f} tok/s | errors {self.errors}"


# how a run (segment) ended: every turn dispatched; interrupted by a signal (Ctrl-C, SIGTERM, SIGHUP); stopped
# by the circuit breaker (the server unreachable).  Records are kept in every case; the last two are resumable.
Outcome = Literal["complete", "interrupted", "stopped"]


async def execute(
    cfg: RunConfig,
    run_dir: RunDir,
    samples: list[Sample],
    done: dict[tuple[str, int], RequestRecord],
    manifest: Manifest,
    on_progress: Any = None,
    engine: Engine | None = None,
    on_measure: Callable[[str, str], None] | None = None,
    own_engine: bool = False,
) -> Outcome:
    """Run the load, appending records; says how it ended (records are kept whatever the outcome).  ``done``:
    the final attempt of each turn already on disk (``--resume``); the retryable failures among them are sent
    again.  ``engine``: an already started engine (``open_engine``), which this run neither starts nor closes;
    None: one is built from ``cfg.engine_spec()``, started and closed here.  ``on_measure(mode, why)``: told how
    the window is measured (mixed, or per-category counter windows) once that is decided; ``own_engine``: the
    engine was built and started for this run (the manifest's ``fresh_server``)."""
    if engine is None:
        async with open_engine(cfg.engine_spec()) as own:
            return await execute(cfg, run_dir, samples, done, manifest, on_progress, own, on_measure, own_engine=True)
    segment = manifest.segment_after(done.values())
    assert cfg.output_len is not None
    settings = LoadSettings.of(
        cfg,
        timeout_s=request_timeout(cfg, engine.capabilities.in_process),
        warmup=cfg.warmup,  # a resumed run warms up too: the server may be cold again (None: one full wave)
        segment=segment,
        cap=cfg.concurrency if cfg.rate_cap else None,
    )
    if (cfg.client_procs > 1 or cfg.client_ray) and engine.capabilities.in_process:
        raise InvalidInput(
            f"--client-procs {cfg.client_procs}{' --ray' if cfg.client_ray else ''}: engine {cfg.engine.kind!r} "
            "runs inside this process and cannot be "
            "shared by client processes; use an HTTP engine (a launched or attached server, or serve-mock)"
        )
    if cfg.request_rate is not None and clock_of(engine) is not time.perf_counter_ns:
        raise InvalidInput(
            "--request-rate paces arrivals on the wall clock, but this engine keeps its own clock (the mock's "
            "-E clock=virtual): use the wall clock (the default) for open-loop runs"
        )
    chunks_are_steps = engine.capabilities.chunks_are_steps
    total = sum(len(s.turns) for s in samples)
    prog = Progress(total=total, basis=DecodeBasis(cfg.draft_length, chunks_are_steps))
    for rec in done.values():
        if not retryable(rec):  # a retried turn is counted when its new attempt lands
            prog.add(rec)

    def on_record(rec: RequestRecord) -> None:
        run_dir.append(rec)
        prog.add(rec)
        if on_progress:
            on_progress(prog)

    described = engine.describe()
    manifest = manifest.started(
        {**described, "chunks_are_steps": chunks_are_steps, "capabilities": dataclasses.asdict(engine.capabilities)}
    )
    if segment == 0:  # the first segment says whether the engine was freshly started (a --resume keeps that)
        launched = described.get("launched") is True
        manifest = manifest.with_fresh_server(FreshServer.of(own_engine, engine.capabilities.in_process, launched))
    run_dir.write_manifest(manifest)
    run_dir.open_for_append()
    if on_progress:
        on_progress(prog)
    completed = False
    result: LoadResult | None = None
    windows: list[CounterWindow] = []  # per-category windows, as they open and close

    def on_mode(mode: Decided, why: str) -> None:
        nonlocal manifest
        manifest = manifest.measured(Measurement(mode=mode, why=why))
        run_dir.write_manifest(manifest)
        if on_measure is not None:
            on_measure(mode, why)

    def on_window(category: str, before: Any, after: Any, finished: bool) -> None:
        window = CounterWindow(segment=segment, category=category, complete=finished, before=before, after=after)
        if windows and windows[-1].category == category and not windows[-1].complete:
            windows[-1] = window  # the window that opened closes
        else:
            windows.append(window)
        # on disk as it goes: a run killed between windows keeps the ones it finished
        run_dir.write_manifest(manifest.model_copy(update={"counter_windows": [*manifest.counter_windows, *windows]}))

    try:
        clients = Clients(cfg.engine_spec(), cfg.client_procs, cfg.client_ray)
        # a resumed run keeps the mode it started with (one written before per-category windows: mixed)
        mode = (
            manifest.measurement.mode
            if manifest.measurement is not None
            else ("mixed" if done else cfg.per_category_windows)
        )
        result = await measure(engine, samples, settings, on_record, done, clients, mode, on_mode, on_window)
        completed = result.stopped is None
        return "complete" if completed else "stopped"
    except asyncio.CancelledError:
        return "interrupted"
    finally:
        run_dir.close()
        window = CounterWindow(
            segment=segment,
            before=result.counters_before if result else None,
            after=result.counters_after if result else None,
        )
        arrivals: list[dict[str, Any]] = []
        if result is not None:
            arrivals = [a.to_dict() for a in result.window_arrivals] or (
                [result.arrivals.to_dict()] if result.arrivals else []
            )
        manifest = manifest.finished(
            completed,
            windows if manifest.per_category_windows else window,
            result.warmup_errors if result else (),
            engine.counter_error,
            stop_cause=result.stopped if result else "interrupted by a signal (Ctrl-C, SIGTERM or SIGHUP)",
            arrivals=arrivals,
            warmup=WarmupInfo.of(result.warmup_records, segment) if result and result.warmup_records else None,
        )
        run_dir.write_manifest(manifest)


def prepare(
    cfg: RunConfig, resume: str | None, given: Mapping[str, str] | None = None
) -> tuple[RunConfig, RunDir, list[Sample], dict[tuple[str, int], RequestRecord], Manifest]:
    """Resolve dataset, run dir and (for --resume) what is already done; the manifest is built here.

    ``given``: the flags the user typed, {RunConfig field: "--flag"} (``cli.options.Flags.given``); on
    ``--resume`` each is compared with the saved run: the same value is fine, a client-side setting
    (``RESUME_CHANGEABLE``) changes for the new segment and is recorded, anything else is refused."""
    if resume:
        manifest = read_manifest(RunDir(resume))
        # the saved config wins (same protocol) but for the client-side settings the flags change; secrets were
        # never saved: the key comes from the environment, URL credentials from the flags
        saved, changes = resume_changes(manifest.config, cfg, given or {}, resume)
        cfg = with_url_credentials(saved, cfg, resume)
        run_dir = RunDir(resume, engine_secrets(cfg.engine, os.environ))
        all_samples = load_dataset(cfg.dataset.name)
        by_id = {s.question_id: s for s in all_samples}
        if content_hash(all_samples) != manifest.dataset.content_hash:
            raise RunDirError(
                f"{run_dir.manifest_path}: dataset {cfg.dataset.name!r} changed since the run started "
                "(content hash differs); cannot resume"
            )
        samples = limit_turns([by_id[q] for q in manifest.dataset.question_ids], cfg.dataset.max_turns)
        final, _ = final_attempts(run_dir.load_records())
        done = {(r.question_id, r.turn): r for r in final}
        if manifest.per_category_windows:
            done = rerun_unfinished_windows(done, manifest.finished_categories())
        return cfg, run_dir, samples, done, manifest.resumed(cfg, changes)
    all_samples = load_dataset(cfg.dataset.name)
    samples = limit_turns(pick_stratified(all_samples, cfg.dataset.num_requests, cfg.seed), cfg.dataset.max_turns)
    cfg = resolve_output_len(cfg)
    out = cfg.out or default_out(cfg.engine.kind)
    cfg = cfg.model_copy(update={"out": out})
    run_dir = RunDir(out, engine_secrets(cfg.engine, os.environ))
    if run_dir.records_path.exists() and run_dir.records_path.stat().st_size > 0:
        raise RunDirError(
            f"{run_dir.path} already holds records; use --resume {run_dir.path} to finish it or pick another --out"
        )
    run_dir.check_writable()  # before any engine is built, started or launched
    dataset = DatasetInfo(
        name=cfg.dataset.name,
        content_hash=content_hash(all_samples),
        rows=len(all_samples),
        selected=len(samples),
        question_ids=[s.question_id for s in samples],
    )
    return cfg, run_dir, samples, {}, Manifest.new(cfg, dataset)


def rerun_unfinished_windows(
    done: dict[tuple[str, int], RequestRecord], finished: set[str]
) -> dict[tuple[str, int], RequestRecord]:
    """``done`` with every turn of a category whose per-category window did not finish marked to be sent again
    (``WINDOW_RERUN``): an unfinished window runs again whole, so that its counter delta covers all its turns."""
    out = {}
    for key, r in done.items():
        if r.category in finished:
            out[key] = r
        else:
            detail = f"the {r.category} window did not finish: run again with its window"
            out[key] = dataclasses.replace(r, error={"cause": WINDOW_RERUN, "detail": detail})
    return out


# what --resume may change: where the server is and how the client drives it (recorded per segment; the fields
# whose Flag says resume=True); any other setting would make the segments unlike (another model, k, dataset, output
# length...), so it is refused
RESUME_CHANGEABLE = resume_changeable(RunConfig)


def _field(cfg: RunConfig, path: str) -> Any:
    obj: Any = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _with_field(cfg: RunConfig, path: str, value: Any) -> RunConfig:
    head, _, rest = path.partition(".")
    if not rest:
        return cfg.model_copy(update={head: value})
    inner = getattr(cfg, head)
    return cfg.model_copy(update={head: inner.model_copy(update={rest: value})})


def resume_changes(
    saved: RunConfig, flags: RunConfig, given: Mapping[str, str], run: str
) -> tuple[RunConfig, dict[str, list[Any]]]:
    """The saved config with the client-side settings the user gave again changed, and {field: [before,
    after]} of those changes; a flag that would change anything else is refused in one line (never ignored)."""
    cfg, changes = saved, {}
    allowed = ", ".join(RESUME_CHANGEABLE.values())
    for path, flag in given.items():
        before, after = _field(saved, path), _field(flags, path)
        if path == "out":
            if after is not None and os.path.abspath(after) != os.path.abspath(run):
                raise RunDirError(f"--out {after} with --resume {run}: a resumed run writes to its own directory")
            continue
        if isinstance(after, str) and isinstance(before, str) and redact_urls(after) == before:
            continue  # the same URL, its credentials given again (with_url_credentials puts them back)
        if after == before:
            continue
        if path not in RESUME_CHANGEABLE:
            raise RunDirError(
                f"{flag} {after!r} differs from the run's {before!r} in {run}: --resume keeps the run's settings "
                f"except {allowed}; start a new run (another --out) to change it"
            )
        cfg = _with_field(cfg, path, after)
        changes[path] = [before, redact_urls(after) if isinstance(after, str) else after]
    return cfg, changes


def with_url_credentials(saved: RunConfig, given: RunConfig, run: str) -> RunConfig:
    """The saved config with the credentials its URLs had (``user:pass@``, saved as ``***@``) taken back from
    the flags of ``--resume``: the same URL once redacted; refused in one line when they are not given."""
    update: dict[str, str] = {}
    for field in ("base_url", "metrics_url"):
        url, again = getattr(saved.engine, field), getattr(given.engine, field)
        if not url or f"://{REDACTED}@" not in url:
            continue
        flag = "--" + field.replace("_", "-")
        if again is None or redact_urls(again) != url:
            raise RunDirError(
                f"{run} ran against {flag} {url}, whose credentials are not saved: "
                f"pass {flag} with them again to resume"
            )
        update[field] = again
    return saved.model_copy(update={"engine": saved.engine.model_copy(update=update)}) if update else saved


SERVER_TIMEOUT_S = 300.0


def warmup_count(cfg: RunConfig) -> int:
    """How many warm-up requests a run of ``cfg`` sends each time it starts or resumes (``--warmup``; default one
    full wave: ``load.generator.warmup_requests``).  ``--client-procs auto`` sends at least 2 to measure from."""
    return warmup_requests(LoadSettings.of(cfg, cap=cfg.concurrency if cfg.rate_cap else None))


def request_timeout(cfg: RunConfig, in_process: bool) -> float | None:
    """The per-request wall-clock limit: --timeout when given; else 300 s for a server and none for an in-process
    engine (its requests are slow only when the machine is, and a timed-out request would keep decoding)."""
    if cfg.timeout_s is not None:
        return cfg.timeout_s
    return None if in_process else SERVER_TIMEOUT_S


def failure_verdict(cfg: RunConfig, records: Sequence[RequestRecord], shown: int = 3) -> str | None:
    """None when the run is usable; else why it failed: every request failed, or more than ``cfg.max_failed``
    of them did, with the first error messages (cause: detail) so the reason is on screen, not only counts."""
    if not records:
        return None
    failed = [r for r in records if not r.ok]
    if not failed or (len(failed) < len(records) and len(failed) / len(records) <= cfg.max_failed):
        return None
    why = (
        "every request failed"
        if len(failed) == len(records)
        else (
            f"{len(failed)} of {len(records)} requests failed ({len(failed) / len(records):.0%} > --max-failed "
            f"{cfg.max_failed:g})"
        )
    )
    # the first failures by time, own causes before the later turns they took down (prior_turn_failed)
    first = sorted(failed, key=lambda r: ((r.error or {}).get("cause") == "prior_turn_failed", r.end_ns))[:shown]
    msgs = "; ".join(
        f"{r.question_id} turn {r.turn}: {(r.error or {}).get('cause')}: {(r.error or {}).get('detail')}" for r in first
    )
    return f"run FAILED: {why}; first errors: {msgs}"


def finish(run_dir: RunDir) -> RunResult:
    """Read the run directory once (manifest, records, the summary recomputed from them), write
    summary.json/csv, and return what was read so callers need not read the records again."""
    result = load_run(run_dir.path)
    run_dir.write_summary(result.summary)
    return result


@dataclass(frozen=True)
class Ended:
    """How a run ended and what it left: the run directory read back (``finish``), the failure verdict (None: a
    usable run), and how many failed turns ``--resume`` would send again."""

    outcome: Outcome
    started: Started
    result: RunResult
    verdict: str | None
    retryable_failures: int

    @property
    def run_dir(self) -> RunDir:
        return self.started.run_dir


@dataclass(frozen=True)
class Started:
    """A run about to send its load: its resolved config, directory, conversations, the turns already done
    (``--resume``) and its manifest."""

    cfg: RunConfig
    run_dir: RunDir
    samples: list[Sample]
    done: dict[tuple[str, int], RequestRecord]
    manifest: Manifest

    @property
    def turns(self) -> int:
        return sum(len(s.turns) for s in self.samples)

    @property
    def to_retry(self) -> int:
        """Failed turns on disk that this segment sends again."""
        return retryable_failures(self.done.values())

    @property
    def to_rerun(self) -> int:
        """Turns of unfinished per-category windows that this segment runs again with their window."""
        return sum(1 for r in self.done.values() if (r.error or {}).get("cause") == WINDOW_RERUN)

    def end(self, outcome: Outcome) -> Ended:
        """Finish the run directory (summary.json/csv from the records) and say how the run ended."""
        result = finish(self.run_dir)
        verdict = failure_verdict(self.cfg, result.records)
        return Ended(outcome, self, result, verdict, retryable_failures(result.records))


def retryable_failures(records: Iterable[RequestRecord]) -> int:
    """How many of these records are failures ``--resume`` sends again (``retryable``; a turn of an unfinished
    per-category window is not a failure)."""
    return sum(1 for r in records if r.error is not None and retryable(r) and r.error.get("cause") != WINDOW_RERUN)


async def run(
    cfg: RunConfig,
    resume: str | None = None,
    given: Mapping[str, str] | None = None,
    *,
    engine: Engine | None = None,
    on_start: Callable[[Started], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_measure: Callable[[str, str], None] | None = None,
) -> Ended:
    """One run end to end: prepare (or reopen with ``resume``; ``given``: the flags typed, compared with the
    saved run), tell ``on_start``, run the load (``engine``: an already started one, else built here; ``on_measure``:
    told whether it runs mixed or in per-category counter windows, and why), finish.
    A bad input raises before ``on_start``; the records are kept whatever the outcome."""
    started = Started(*prepare(cfg, resume, given))
    if on_start is not None:
        on_start(started)
    outcome = await execute(
        started.cfg, started.run_dir, started.samples, started.done, started.manifest, on_progress, engine, on_measure
    )
    return started.end(outcome)
