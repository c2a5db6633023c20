"""Read a run directory into typed results: the one way ``report``, ``compare`` and the analysis read runs.

``load_run(path)`` returns a ``RunResult`` (manifest, records and the summary recomputed from them, and the
number of a half-written last line of records.jsonl that was left out, so readers can say so) or
refuses, with one line naming the file and what to do, a directory it cannot read: no manifest, no
records, a manifest that is not valid, or one written by a newer speedbench (a future schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from speedbench.metrics.aggregate import summarize
from speedbench.metrics.models import RunSummary
from speedbench.records import RequestRecord, final_attempts
from speedbench.results.manifest import MANIFEST_SCHEMA_VERSION, Manifest
from speedbench.results.rundir import RunDir, RunDirError, parse_versioned


@dataclass(frozen=True)
class RunResult:
    """One run directory, read and summarized.  ``records`` holds the final attempt of each (question_id, turn),
    which every figure counts; ``superseded`` the earlier attempts that ``--resume`` retried (history)."""

    path: Path
    manifest: Manifest
    records: list[RequestRecord]
    summary: RunSummary
    torn_line: int | None = None  # records.jsonl's half-written last line (left out of records), if any
    superseded: tuple[RequestRecord, ...] = ()


def parse_manifest(path: Path, text: str) -> Manifest:
    """A manifest from its JSON text; one-line RunDirError when it cannot be read."""
    return parse_versioned(path, text, Manifest, MANIFEST_SCHEMA_VERSION, "manifest", "manifest", "run directory")


def read_manifest(run_dir: RunDir) -> Manifest:
    if not run_dir.manifest_path.exists():
        raise RunDirError(f"{run_dir.manifest_path}: not found; is {run_dir.path} a speedbench run directory?")
    return parse_manifest(run_dir.manifest_path, run_dir.manifest_path.read_text(encoding="utf-8"))


def summarize_records(
    manifest: Manifest, records: list[RequestRecord], superseded: Sequence[RequestRecord] = ()
) -> RunSummary:
    return summarize(
        records,
        manifest.basis,
        counter_windows=manifest.counter_window_dicts(),
        max_tokens=manifest.config.output_len,
        superseded=superseded,
        label=manifest.label,
        sequential_categories=manifest.per_category_windows,
        closed_loop=manifest.config.request_rate is None,
    )


def load_run(path: str | Path) -> RunResult:
    """Manifest, records and summary of one run directory (the summary recomputed from the records)."""
    run_dir = RunDir(path)
    manifest = read_manifest(run_dir)
    if not run_dir.records_path.exists():
        raise RunDirError(
            f"{run_dir.records_path}: not found; the run wrote no records (it never started, or the "
            "file was moved): rerun it, or finish it with speedbench run --resume "
            f"{run_dir.path}"
        )
    lines, torn_line = run_dir.read_records()
    records, superseded = final_attempts(lines)
    return RunResult(
        run_dir.path, manifest, records, summarize_records(manifest, records, superseded), torn_line, tuple(superseded)
    )
