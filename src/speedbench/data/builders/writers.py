"""Writers for sample sets: jsonl (``messages`` form) and parquet (``turns`` form), always atomic.

A file is written next to its destination under a temporary name, flushed to disk and renamed over
the destination, so a reader sees the old file or the new one, never half of one (Ctrl-C, a full
disk or a crash leave the destination untouched and the temporary file removed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from speedbench.atomic import atomic_path, atomic_write_with
from speedbench.data.sample import Sample

__all__ = ["sample_messages", "write_jsonl", "write_messages_jsonl", "write_parquet", "write_samples"]


def sample_messages(s: Sample) -> dict[str, Any]:
    """The NeMo-Skills row: the eight fields with the user turns as ``messages``."""
    d = s.to_dict()
    d["messages"] = [{"role": "user", "content": t} for t in d.pop("turns")]
    return d


def write_jsonl(rows: Iterable[dict[str, Any]], dest: str | Path) -> None:
    def write(f: IO[str]) -> None:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    atomic_write_with(dest, write)


def write_samples(samples: list[Sample], dest: str | Path) -> None:
    """``.parquet``: the eight official fields with ``turns``; anything else: jsonl with ``turns``."""
    dest = Path(dest)
    if dest.suffix == ".parquet":
        write_parquet(samples, dest)
    else:
        write_jsonl((s.to_dict() for s in samples), dest)


def write_messages_jsonl(samples: list[Sample], dest: str | Path) -> None:
    write_jsonl((sample_messages(s) for s in samples), dest)


def write_parquet(samples: list[Sample], dest: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([s.to_dict() for s in samples])
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)
