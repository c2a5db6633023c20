"""Atomic file writes: a reader sees the old file or the new one, never part of one.

The new content goes to a uniquely named temporary file beside the destination, is flushed to disk
and renamed over it; on any failure (an exception, Ctrl-C) the temporary file is removed and the
destination is left as it was.  Used for run directories, datasets and the embedding cache.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; when the block succeeds it is fsynced and renamed onto ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_with(dest: str | Path, write: Callable[[IO[str]], object], *, newline: str | None = None) -> None:
    """Write text through ``write(f)`` atomically."""
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        write(f)


def atomic_write(dest: str | Path, text: str) -> None:
    atomic_write_with(dest, lambda f: f.write(text))
