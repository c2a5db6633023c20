"""One benchmark run: dataset -> engine -> load generator -> run directory -> summary.

Used by ``speedbench run`` and by tests; ``report`` recomputes summaries with
``summarize_dir`` from the run directory alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import platform
import socket
import sys
from dataclasses import dataclass
from typing import Any

from speedbench import __version__
from speedbench.config import RunConfig, redact
from speedbench.data.readers import content_hash, load_dataset, pick_stratified
from speedbench.data.sample import Sample
from speedbench.engines import registry
from speedbench.load.generator import LoadSettings, run_load
from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.sources import request_stats
from speedbench.records import RequestRecord
from speedbench.results.rundir import RunDir, RunDirError


def limit_turns(samples: list[Sample], max_turns: int | None) -> list[Sample]:
    """Keep the first ``max_turns`` turns of each conversation (all when None)."""
    if max_turns is None:
        return samples
    return [dataclasses.replace(s, turns=s.turns[:max_turns], multiturn=min(len(s.turns), max_turns) > 1)
            for s in samples]


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_out(engine: str) -> str:
    return f"runs/{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{engine}"


def build_engine(cfg: RunConfig) -> Any:
    cls = registry.resolve(cfg.engine.kind)
    e = cfg.engine
    if e.launch and not getattr(cls, "can_launch", False):
        launchable = ", ".join(n for n in sorted(registry.BUILTIN) if n in registry.LAUNCHABLE)
        raise ValueError(f"engine {e.kind!r} cannot --launch a server (engines that can: {launchable})")
    return cls(base_url=e.base_url, model=e.model, metrics_url=e.metrics_url, endpoint=e.endpoint,
               api_key_env=e.api_key_env, options=dict(e.options), draft_length=cfg.draft_length,
               sd=e.sd, draft_model=e.draft_model, concurrency=cfg.concurrency, launch=e.launch,
               server_bin=e.server_bin, server_args=list(e.server_args), log_dir=cfg.out)


DEFAULT_OUTPUT_LEN = 256


def resolve_output_len(cfg: RunConfig) -> RunConfig:
    """Fill output_len from the engine's default when the user gave none."""
    if cfg.output_len is not None:
        return cfg
    cls = registry.resolve(cfg.engine.kind)
    return cfg.model_copy(update={"output_len": int(getattr(cls, "default_output_len", DEFAULT_OUTPUT_LEN))})


def summarize_dir(run_dir: RunDir) -> dict[str, Any]:
    manifest = run_dir.read_manifest()
    records = run_dir.load_records()
    # the engine's effective draft length (0 for --sd none) when it reports one, else the configured one
    k = manifest.get("engine", {}).get("k", manifest["config"]["draft_length"])
    return summarize(records, k=int(k),
                     chunks_are_steps=bool(manifest.get("engine", {}).get("chunks_are_steps", True)),
                     counter_windows=manifest.get("counter_windows", []))


@dataclass
class Progress:
    """Live figures for the progress bar, updated as each record lands."""

    total: int
    done: int = 0
    errors: int = 0
    tokens: int = 0
    accepted: int = 0
    steps: int = 0
    first_start_ns: int | None = None
    last_end_ns: int = 0

    def add(self, rec: RequestRecord, k: int, chunks_are_steps: bool) -> None:
        self.done += 1
        if not rec.ok:
            self.errors += 1
            return
        self.tokens += rec.tokens
        self.first_start_ns = rec.start_ns if self.first_start_ns is None else min(self.first_start_ns, rec.start_ns)
        self.last_end_ns = max(self.last_end_ns, rec.end_ns)
        s = request_stats(rec, k, chunks_are_steps)
        if s is not None:
            self.accepted += s.accepted
            self.steps += s.steps

    def line(self) -> str:
        al = acceptance_length(self.accepted, self.steps)
        span = (self.last_end_ns - (self.first_start_ns or 0)) / 1e9
        tps = self.tokens / span if span > 0 and self.first_start_ns is not None else 0.0
        al_text = "-" if al is None else f"{al:.3f}"
        return f"AL {al_text} | {tps:,.0f} tok/s | errors {self.errors}"


async def execute(
    cfg: RunConfig,
    run_dir: RunDir,
    samples: list[Sample],
    done: dict[tuple[str, int], RequestRecord],
    manifest: dict[str, Any],
    on_progress: Any = None,
) -> bool:
    """Run the load, appending records; returns False when interrupted (records kept)."""
    engine = build_engine(cfg)
    segment = len(manifest.get("counter_windows", []))
    assert cfg.output_len is not None
    settings = LoadSettings(concurrency=cfg.concurrency, output_len=cfg.output_len, temperature=cfg.temperature,
                            ignore_eos=cfg.ignore_eos, draft_length=cfg.draft_length, timeout_s=cfg.timeout_s,
                            warmup=cfg.warmup if not done else 0, seed=None, segment=segment)
    chunks_are_steps = engine.capabilities.chunks_are_steps
    total = sum(len(s.turns) for s in samples)
    prog = Progress(total=total)
    for rec in done.values():
        prog.add(rec, cfg.draft_length, chunks_are_steps)

    def on_record(rec: RequestRecord) -> None:
        run_dir.append(rec)
        prog.add(rec, cfg.draft_length, chunks_are_steps)
        if on_progress:
            on_progress(prog)

    await engine.start()
    try:
        manifest["engine"] = {**redact(engine.describe()), "chunks_are_steps": chunks_are_steps,
                              "capabilities": dataclasses.asdict(engine.capabilities)}
        manifest["status"] = "running"
        run_dir.write_manifest(manifest)
        run_dir.open_for_append()
        if on_progress:
            on_progress(prog)
        window: dict[str, Any] = {"segment": segment, "before": None, "after": None}
        try:
            result = await run_load(engine, samples, settings, on_record, done)
            window.update(before=result.counters_before, after=result.counters_after)
            manifest["warmup_errors"] = result.warmup_errors
            manifest["status"] = "complete"
            return True
        except asyncio.CancelledError:
            manifest["status"] = "interrupted"
            return False
        finally:
            run_dir.close()
            manifest.setdefault("counter_windows", []).append(window)
            if getattr(engine, "counter_error", None):
                manifest["counter_error"] = engine.counter_error
            manifest["finished_utc"] = utc_now()
            run_dir.write_manifest(manifest)
    finally:
        await engine.close()


def prepare(cfg: RunConfig, resume: str | None) -> tuple[RunConfig, RunDir, list[Sample], dict, dict]:
    """Resolve dataset, run dir and (for --resume) what is already done."""
    if resume:
        run_dir = RunDir(resume)
        manifest = run_dir.read_manifest()
        # the saved config wins (same protocol); secrets were never saved: they come from the environment
        cfg = RunConfig.model_validate(manifest["config"])
        all_samples = load_dataset(cfg.dataset.name)
        by_id = {s.question_id: s for s in all_samples}
        if content_hash(all_samples) != manifest["dataset"]["content_hash"]:
            raise RunDirError(f"{run_dir.manifest_path}: dataset {cfg.dataset.name!r} changed since the run started "
                              "(content hash differs); cannot resume")
        samples = limit_turns([by_id[q] for q in manifest["dataset"]["question_ids"]], cfg.dataset.max_turns)
        done = {(r.question_id, r.turn): r for r in run_dir.load_records()}
        manifest["resumed_utc"] = manifest.get("resumed_utc", []) + [utc_now()]
        return cfg, run_dir, samples, done, manifest
    all_samples = load_dataset(cfg.dataset.name)
    samples = limit_turns(pick_stratified(all_samples, cfg.dataset.num_requests, cfg.dataset.seed),
                          cfg.dataset.max_turns)
    cfg = resolve_output_len(cfg)
    out = cfg.out or default_out(cfg.engine.kind)
    cfg = cfg.model_copy(update={"out": out})
    run_dir = RunDir(out)
    if run_dir.records_path.exists() and run_dir.records_path.stat().st_size > 0:
        raise RunDirError(f"{run_dir.path} already holds records; use --resume {run_dir.path} to finish it "
                          "or pick another --out")
    manifest = {
        "speedbench_version": __version__,
        "created_utc": utc_now(),
        "config": redact(cfg.model_dump()),
        "dataset": {"name": cfg.dataset.name, "content_hash": content_hash(all_samples),
                    "rows": len(all_samples), "selected": len(samples),
                    "question_ids": [s.question_id for s in samples]},
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "python": sys.version.split()[0], "cpus": _cpus()},
        "packages": _versions(["aiohttp", "numpy", "pydantic", "typer", "rich", "prometheus_client"]),
        "definitions": {"AL": "1 + accepted/steps (bonus token counted)", "AR": "accepted/drafted",
                        "step": "one target verification; the first token comes from prefill",
                        "timestamps": "time.perf_counter_ns() in the load generator as chunks arrive"},
        "counter_windows": [],
    }
    return cfg, run_dir, samples, {}, manifest


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _versions(names: list[str]) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def finish(run_dir: RunDir) -> dict[str, Any]:
    summary = summarize_dir(run_dir)
    run_dir.write_summary(summary)
    return summary

