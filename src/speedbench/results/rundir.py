"""One run = one directory.

- manifest.json  resolved config (secrets redacted), versions, dataset name + hash, the
                 selected question ids, counter snapshots per measured window, status
- records.jsonl  one RequestRecord per line, appended and flushed as each request finishes
- summary.json / summary.csv   derived from the two files above (``speedbench report`` redoes them)
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from speedbench.atomic import atomic_write, atomic_write_with
from speedbench.config import Secrets
from speedbench.errors import UserError
from speedbench.metrics.figures import csv_columns
from speedbench.metrics.models import GroupStats, RunSummary
from speedbench.records import RequestRecord

if TYPE_CHECKING:
    from speedbench.results.manifest import Manifest


class RunDirError(UserError, ValueError):
    """A run or sweep directory that cannot be read, written or resumed (one line saying why)."""


M = TypeVar("M", bound=BaseModel)


def parse_versioned(path: Path, text: str, model: type[M], max_version: int, kind: str, schema: str, folder: str) -> M:
    """A typed JSON file (manifest.json, sweep.json) from its text; one-line RunDirError when it is not JSON, not a
    JSON object, from a newer schema than ``max_version``, or not a valid ``model`` (``kind``: what the file is,
    ``schema``: the schema's name, ``folder``: the directory it belongs in, as the messages name them)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise RunDirError(f"{path}: not a speedbench {kind} (a JSON object is expected)")
    version = raw.get("schema_version", 0)
    if not isinstance(version, int) or version > max_version:
        raise RunDirError(
            f"{path}: written by a newer speedbench ({schema} schema {version}; this one reads up to "
            f"{max_version}): upgrade speedbench to read it"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise RunDirError(f"{path}: field {loc}: {err['msg']}{more}; is this a speedbench {folder}?") from None


class RunDir:
    def __init__(self, path: str | Path, secrets: Secrets | None = None) -> None:
        self.path = Path(path)
        # scrubbed from the manifest and the records' errors (with every URL's userinfo) as they are written
        self.secrets = secrets or Secrets()
        self.manifest_path = self.path / "manifest.json"
        self.records_path = self.path / "records.jsonl"
        self.summary_path = self.path / "summary.json"
        self.csv_path = self.path / "summary.csv"
        self._fh: Any = None

    # ---- manifest (read it with results.loader.read_manifest: typed, refusing what it cannot read) ------
    def write_manifest(self, manifest: Manifest) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        data = self.secrets.scrub_obj(manifest.to_dict())
        atomic_write(self.manifest_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def check_writable(self) -> None:
        """Write a probe file where the run directory goes: a directory speedbench cannot write is refused in one
        line before anything starts (not after an engine was launched and requests were sent).  Directories made
        for the probe are removed again, so a run refused later for another reason leaves nothing behind."""
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        probe = self.path / f".speedbench-probe-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunDirError(
                f"--out {self.path}: cannot write a run directory there ({e.strerror or e}); pick another --out"
            ) from None
        finally:
            for d in missing:  # deepest first
                with contextlib.suppress(OSError):
                    d.rmdir()

    # ---- records -----------------------------------------------------------------------------
    def open_for_append(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fh = self.records_path.open("a", encoding="utf-8")

    def append(self, rec: RequestRecord) -> None:
        assert self._fh is not None, "open_for_append() first"
        d = rec.to_dict()
        d["error"] = self.secrets.scrub_obj(d["error"])  # a server's or a library's words (output text is the model's)
        self._fh.write(json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def _repair_tail(self) -> None:
        """Drop a half-written last line (a run killed mid-write) so appends stay valid JSONL."""
        if not self.records_path.exists():
            return
        data = self.records_path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with self.records_path.open("r+b") as f:
            f.truncate(cut)

    def load_records(self) -> list[RequestRecord]:
        return self.read_records()[0]

    def read_records(self) -> tuple[list[RequestRecord], int | None]:
        """The records, and the line number of a half-written last line (a run killed mid-write) that was
        left out, or None: readers that show figures say so (results.loader.RunResult.torn_line)."""
        if not self.records_path.exists():
            return [], None
        out: list[RequestRecord] = []
        with self.records_path.open("r", encoding="utf-8") as f:
            lines = f.readlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out.append(RequestRecord.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError) as e:
                if n == len(lines) and not line.endswith("\n"):
                    return out, n  # half-written last line of an interrupted run
                raise RunDirError(f"{self.records_path}:{n}: not a valid record ({e})") from None
        return out, None

    # ---- summaries ---------------------------------------------------------------------------
    def write_summary(self, summary: RunSummary) -> None:
        atomic_write(self.summary_path, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
        rows = summary_rows(summary)

        def write_csv(f: Any) -> None:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)

        atomic_write_with(self.csv_path, write_csv, newline="")


def summary_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """Flat rows (overall first, then each category) for summary.csv: ``scope``, then the columns of the figures
    that metrics/figures.py puts in it (``csv_columns``)."""
    scopes: list[tuple[str, GroupStats]] = [("overall", summary.overall), *summary.per_category.items()]
    columns = csv_columns(summary.k)
    return [{"scope": name, **{c.name: c.value(e) for c in columns}} for name, e in scopes]
