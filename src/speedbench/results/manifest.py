"""The run manifest (manifest.json) as a typed model, built in one place.

A manifest is created once (``Manifest.new``) and then moves through its states by methods that
return a new manifest (``started``, ``finished``, ``resumed``): nothing edits it in place.  The
engine's own description (``engine``) keeps the engine-specific facts it reports next to the typed
fields every engine has.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from speedbench import __version__
from speedbench.config import RunConfig, redact
from speedbench.metrics.counters import counter_delta
from speedbench.metrics.sd_label import server_k
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord

# 0: manifests written before the typed form (no schema_version key); 1: the typed form.
MANIFEST_SCHEMA_VERSION = 1

Status = Literal["created", "running", "complete", "interrupted"]

DEFINITIONS = {
    "AL": "1 + accepted/steps (bonus token counted)",
    "AR": "accepted/drafted",
    "step": "one target verification; the first token comes from prefill",
    "timestamps": "time.perf_counter_ns() in the load generator as chunks arrive",
}
PACKAGES = ("aiohttp", "numpy", "pydantic", "typer", "rich", "prometheus_client")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetInfo(_Model):
    name: str
    content_hash: str
    rows: int
    selected: int
    question_ids: list[str]


class HostInfo(_Model):
    hostname: str
    platform: str
    python: str
    cpus: int

    @classmethod
    def here(cls) -> HostInfo:
        return cls(
            hostname=socket.gethostname(),
            platform=platform.platform(),
            python=sys.version.split()[0],
            cpus=os.cpu_count() or 0,
        )


class CounterSnapshot(_Model):
    """An engine's SD counter totals at one moment (metrics/counters.py); ``inferred`` names the fields an
    adapter derived rather than read."""

    num_drafts: float
    num_draft_tokens: float
    num_accepted_tokens: float
    per_position: dict[str, float] = Field(default_factory=dict)
    inferred: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class CounterWindow(_Model):
    """Counter snapshots around one measured window: one per segment (a resumed run has several), or with
    per-category windows (``--per-category-windows``) one per category and segment, ``category`` naming it.  A
    window without ``after`` did not finish (interrupted): ``--resume`` runs its category again, whole."""

    segment: int = 0
    category: str | None = None
    complete: bool | None = None  # per-category windows: every conversation of the window was sent
    before: CounterSnapshot | None = None
    after: CounterSnapshot | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"segment": self.segment}
        if self.category is not None:
            d |= {"category": self.category, "complete": bool(self.complete)}
        return d | {
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
        }

    @property
    def finished(self) -> bool:
        """A per-category window all of whose conversations were sent (its counters may be absent: SD off)."""
        return bool(self.complete)


MeasurementMode = Literal["mixed", "per_category_windows"]


class Measurement(_Model):
    """How the run measured its window(s): ``mixed`` (every category at once, one counter window per segment)
    or ``per_category_windows`` (the categories one after another, each in its own counter window), and why
    (``--per-category-windows`` on/off, or what auto found)."""

    mode: MeasurementMode = "mixed"
    why: str = ""


class FreshServer(_Model):
    """Whether the run's engine was freshly started for it (``fresh`` True: it served no request before this run's
    warm-up, so it may have been cold), known not to be (False), or not known (None: a server the run attached to,
    or one shared by earlier runs); ``why`` says how that was decided.  Recorded by the run's first segment."""

    fresh: bool | None = None
    why: str = ""

    @classmethod
    def of(cls, own: bool, in_process: bool, launched: bool) -> FreshServer:
        """``own``: the run built and started the engine itself (``speedbench run``), not one a sweep's launch
        group shares between its cells; ``launched``: speedbench started the server (``--launch``)."""
        if not own:
            return cls(
                why="the engine was started before this run and may have served earlier runs (a sweep's "
                "launch group); whether it was warm is not known"
            )
        if launched:
            return cls(fresh=True, why="speedbench launched the server for this run")
        if in_process:
            return cls(fresh=True, why="the engine runs in speedbench's process, started for this run")
        return cls(why="attached to a running server (--base-url): what it served before this run is not known")


class WarmupInfo(_Model):
    """One warm-up pass (each start and each ``--resume`` sends one): how many requests, how many failed, their
    median TTFT and TPOT (ms) and how long the pass took (first start to last end, s, on the run's clock).  Its
    records are never in records.jsonl nor in any figure: this is how slow the server was before the window."""

    segment: int
    utc: str
    requests: int
    failed: int = 0
    ttft_ms_p50: float | None = None
    tpot_ms_p50: float | None = None
    duration_s: float | None = None

    @classmethod
    def of(cls, records: Sequence[RequestRecord], segment: int) -> WarmupInfo:
        from speedbench.metrics.latency import distribution, tpot_s, ttft_s

        ok = [r for r in records if r.ok]
        ttft, tpot = distribution(ttft_s(r) for r in ok).p50, distribution(tpot_s(r) for r in ok).p50
        span = (max(r.end_ns for r in records) - min(r.start_ns for r in records)) / 1e9 if records else None
        return cls(
            segment=segment,
            utc=utc_now(),
            requests=len(records),
            failed=len(records) - len(ok),
            ttft_ms_p50=None if ttft is None else round(ttft * 1000, 3),
            tpot_ms_p50=None if tpot is None else round(tpot * 1000, 3),
            duration_s=None if span is None else round(span, 3),
        )

    def line(self) -> str:
        """``warm-up: 8 requests, TTFT p50 2.6 s, TPOT p50 12.0 ms (not in the figures)``."""
        failed = f", {self.failed} failed" if self.failed else ""
        ttft = "" if self.ttft_ms_p50 is None else f", TTFT p50 {_ms_text(self.ttft_ms_p50)}"
        tpot = "" if self.tpot_ms_p50 is None else f", TPOT p50 {_ms_text(self.tpot_ms_p50)}"
        return f"warm-up: {self.requests} requests{failed}{ttft}{tpot} (not in the figures)"


def _ms_text(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


class SegmentChange(_Model):
    """Settings a ``--resume`` changed for the segment it wrote (client-side only: base URL, concurrency, timeout,
    failure share, breaker): ``changes[field] = [before, after]`` (URLs redacted)."""

    segment: int
    utc: str
    changes: dict[str, list[Any]]


class EngineInfo(BaseModel):
    """What the engine said about itself (``describe()``, secrets redacted) plus what the run read from it.
    Typed where every engine has the field; engine-specific facts (settings, server command, versions)
    are kept as the engine reported them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    engine: str
    sd: str | None = None
    k: int | None = None  # the effective draft length (0 with SD off) when the engine says
    chunks_are_steps: bool = True
    capabilities: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Model):
    """manifest.json: what was run, on what, and in which state the run is."""

    schema_version: int = 0
    speedbench_version: str
    created_utc: str
    config: RunConfig
    dataset: DatasetInfo
    host: HostInfo
    packages: dict[str, str]
    definitions: dict[str, str]
    counter_windows: list[CounterWindow] = Field(default_factory=list)
    engine: EngineInfo | None = None
    status: Status = "created"
    warmup_errors: list[str] = Field(default_factory=list)
    counter_error: str | None = None
    finished_utc: str | None = None
    resumed_utc: list[str] = Field(default_factory=list)
    # why the last segment ended before its work was done (the circuit breaker, a signal); None when it did not
    stop_cause: str | None = None
    segment_changes: list[SegmentChange] = Field(default_factory=list)
    # how each segment's conversations were started (load/arrivals.py ArrivalStats: closed or open loop, the rate
    # achieved, the client's dispatch lag); one entry per segment that ran its load
    arrivals: list[dict[str, Any]] = Field(default_factory=list)
    # how the window was measured (None: mixed, as every run before per-category windows)
    measurement: Measurement | None = None
    # whether the engine was freshly started for this run (its first segment; None: written before drift checks)
    fresh_server: FreshServer | None = None
    # one entry per warm-up pass (each start and resume that sent one): its figures, kept apart from the run's
    warmup: list[WarmupInfo] = Field(default_factory=list)

    # ---- building ----------------------------------------------------------------------------
    @classmethod
    def new(cls, cfg: RunConfig, dataset: DatasetInfo) -> Manifest:
        return cls(
            schema_version=MANIFEST_SCHEMA_VERSION,
            speedbench_version=__version__,
            created_utc=utc_now(),
            config=RunConfig.model_validate(redact(cfg.model_dump())),
            dataset=dataset,
            host=HostInfo.here(),
            packages=package_versions(PACKAGES),
            definitions=dict(DEFINITIONS),
        )

    def started(self, engine: dict[str, Any]) -> Manifest:
        """The engine is up: its description (redacted) and status running."""
        return self.model_copy(update={"engine": EngineInfo.model_validate(redact(engine)), "status": "running"})

    def finished(
        self,
        completed: bool,
        window: CounterWindow | Sequence[CounterWindow],
        warmup_errors: Sequence[str] = (),
        counter_error: str | None = None,
        stop_cause: str | None = None,
        arrivals: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        warmup: WarmupInfo | None = None,
    ) -> Manifest:
        """The measured window is over (completed, or interrupted with its records kept and, when known, why);
        ``window``: its counter window, or the segment's per-category windows; ``warmup``: the segment's warm-up
        pass (None: it sent none)."""
        windows = [window] if isinstance(window, CounterWindow) else list(window)
        added = [] if arrivals is None else [arrivals] if isinstance(arrivals, dict) else list(arrivals)
        return self.model_copy(
            update={
                "arrivals": [*self.arrivals, *added],
                "warmup": [*self.warmup, *([warmup] if warmup is not None else [])],
                "status": "complete" if completed else "interrupted",
                "stop_cause": None if completed else stop_cause,
                "counter_windows": [*self.counter_windows, *windows],
                "warmup_errors": list(warmup_errors) if completed else self.warmup_errors,
                "counter_error": counter_error or self.counter_error,
                "finished_utc": utc_now(),
            }
        )

    def resumed(self, config: RunConfig | None = None, changes: dict[str, list[Any]] | None = None) -> Manifest:
        """A ``--resume`` starts: its time, and the settings it changed (``config`` then holds the new values,
        ``segment_changes`` what they were, for the segment about to be written)."""
        update: dict[str, Any] = {"resumed_utc": [*self.resumed_utc, utc_now()]}
        if changes:
            segment = self.next_segment
            update["config"] = RunConfig.model_validate(redact((config or self.config).model_dump()))
            update["segment_changes"] = [
                *self.segment_changes,
                SegmentChange(segment=segment, utc=utc_now(), changes=redact(changes)),
            ]
        return self.model_copy(update=update)

    # ---- reading -----------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """The engine's effective draft length (0 for --sd none) when it reported one, else the configured one."""
        if self.engine is not None and self.engine.k is not None:
            return int(self.engine.k)
        return self.config.draft_length

    @property
    def label(self) -> tuple[str | None, int]:
        """The SD method and k the run is labelled with (``--sd``, or what the engine said it runs)."""
        sd = self.engine.sd if self.engine is not None and self.engine.sd is not None else self.config.engine.sd
        return sd, self.k

    @property
    def server_k(self) -> int | None:
        """The draft length the server's per-position counters show during the measured windows (None: they
        show none)."""
        deltas = [
            counter_delta(w.before.as_dict(), w.after.as_dict()) for w in self.counter_windows if w.before and w.after
        ]
        return max((k for d in deltas if (k := server_k(d)) is not None), default=None)

    @property
    def basis(self) -> DecodeBasis:
        """How this run's records map onto steps: ``k`` above (the server's, from its counters, when the run is
        labelled k 0 but the server drafted: metrics/sd_label.py) and whether the engine streamed one chunk per
        step."""
        k = self.k or self.server_k or 0
        return DecodeBasis(k, self.engine.chunks_are_steps if self.engine is not None else True)

    @property
    def next_segment(self) -> int:
        """The segment after every measured window (per-category windows: several share a segment)."""
        return 1 + max((w.segment for w in self.counter_windows), default=-1)

    @property
    def per_category_windows(self) -> bool:
        return self.measurement is not None and self.measurement.mode == "per_category_windows"

    def finished_categories(self) -> set[str]:
        """The categories whose per-category window finished (both counter snapshots taken)."""
        return {w.category for w in self.counter_windows if w.category is not None and w.finished}

    def with_fresh_server(self, fresh: FreshServer) -> Manifest:
        """Whether the engine was freshly started, as the first segment found it (set once: a ``--resume`` keeps
        it)."""
        return self if self.fresh_server is not None else self.model_copy(update={"fresh_server": fresh})

    def measured(self, measurement: Measurement) -> Manifest:
        """How the run measures (decided when the engine is up: ``--per-category-windows``)."""
        return self.model_copy(update={"measurement": measurement})

    def segment_after(self, records: Iterable[RequestRecord]) -> int:
        """The segment a resumed run writes: after every measured window and after every segment that has
        records (a client killed hard (kill -9) wrote records but never closed its window)."""
        return max(self.next_segment, 1 + max((r.segment for r in records), default=-1))

    def counter_window_dicts(self) -> list[dict[str, Any]]:
        return [w.as_dict() for w in self.counter_windows]

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude_none=False)
        d["counter_windows"] = self.counter_window_dicts()
        if self.engine is not None:
            d["engine"] = self.engine.model_dump(mode="json")
        for optional in ("counter_error", "finished_utc", "stop_cause", "measurement", "fresh_server"):
            if d[optional] is None:
                del d[optional]
        for listed in ("resumed_utc", "segment_changes", "arrivals", "warmup"):
            if not d[listed]:
                del d[listed]
        return d


def package_versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out
