"""Where ``speedbench data fetch`` puts SPEED-Bench, and the ``speed:<config>[@<revision>]`` names that read it.

Per config, under ``<out_dir>/<revision>/``: ``<config>.parquet`` (read by ``speed:<config>``),
``<config>.jsonl`` and ``<config>.manifest.json`` (written by :mod:`speedbench.data.builders.speed_bench`).
"""

from __future__ import annotations

from pathlib import Path

from speedbench.data.sample import DatasetError
from speedbench.paths import cache_dir

REPO_ID = "nvidia/SPEED-Bench"
# The first commit of nvidia/SPEED-Bench ("Duplicate from SPEED-Bench/SPEED-Bench", v1.0), the data the
# reference resolvers were written for. Later commits (v1.1) changed throughput src_ids: see FACTS.md.
DEFAULT_REVISION = "fd51e1f5c17d9071cc2aaa1f21df2ef79641e588"
CONFIGS = ("qualitative", "throughput_1k", "throughput_2k", "throughput_8k", "throughput_16k", "throughput_32k")
NAME_PREFIX = "speed:"


def default_out_dir() -> Path:
    return cache_dir() / "datasets" / "speed-bench"


def revision_dir(out_dir: str | Path, revision: str) -> Path:
    return Path(out_dir) / revision.replace("/", "--")


def resolve_name(name: str, *, out_dir: str | Path | None = None) -> Path:
    """``speed:<config>[@<revision>]`` -> the fetched parquet (default: the pinned revision).

    Not fetched yet: a one-line ``DatasetError`` naming the ``speedbench data fetch`` command to run."""
    if not name.startswith(NAME_PREFIX):
        raise DatasetError(name, None, None, f"not a SPEED-Bench name (expected {NAME_PREFIX}<config>)")
    config, _, revision = name[len(NAME_PREFIX) :].partition("@")
    if config not in CONFIGS:
        raise DatasetError(name, None, None, f"unknown SPEED-Bench config {config!r} (one of: {', '.join(CONFIGS)})")
    revision = revision or DEFAULT_REVISION
    folder = revision_dir(out_dir if out_dir is not None else default_out_dir(), revision)
    parquet = folder / f"{config}.parquet"
    if parquet.is_file() and (folder / f"{config}.manifest.json").is_file():
        return parquet
    command = f"speedbench data fetch --config {config}"
    if revision != DEFAULT_REVISION:
        command += f" --revision {revision}"
    raise DatasetError(name, None, None, f"SPEED-Bench {config} is not fetched yet (no {parquet}); run `{command}`")
