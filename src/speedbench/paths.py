"""Where speedbench keeps what it builds once (converted models, fetched datasets, embeddings:
``$SPEEDBENCH_CACHE``, else ``$XDG_CACHE_HOME/speedbench``, else ``~/.cache/speedbench``) and where it
finds files that installed packages ship (models, datasets, vocabularies).
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


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (some packages' imports pull
    dependencies speedbench does not install); None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
