"""Where speedbench keeps what it builds once: converted models, fetched datasets, embeddings.

``$SPEEDBENCH_CACHE``, else ``$XDG_CACHE_HOME/speedbench``, else ``~/.cache/speedbench``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("SPEEDBENCH_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "speedbench"
