"""Source loading: the one function that reads an upstream data set, and a per-fetch memo around it.

Hub sources load with ``datasets.load_dataset(repo_id, config, revision=..., split=...)`` (file sources
with the ``json`` builder on the file's URL), as the reference client does. With ``sources_dir`` set, the
local copy at ``sources_dir/<repo_id>`` is read instead:

- a hub data set: ``sources_dir/<repo_id>[/<config>]/<split>.{parquet,jsonl,json,...}`` (any layout
  ``datasets.load_dataset(dir, data_dir=config)`` understands);
- a file source: ``sources_dir/<repo_id>/<path of the file inside its repository>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from speedbench.data.builders.resolvers.errors import ResolveError
from speedbench.extras import require


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its repository, the revision its URL names, its path there, and its URL."""

    repo_id: str
    revision: str | None
    path: str
    url: str


_HF = re.compile(r"^/datasets/([^/]+/[^/]+)/(?:tree|raw|resolve|blob)/([^/]+)/(.+)$")
_GITHUB = re.compile(r"^/([^/]+/[^/]+)/(?:tree|raw|blob)/([^/]+)/(.+)$")
_GITHUB_RAW = re.compile(r"^/([^/]+/[^/]+)/([^/]+)/(.+)$")


def source_file(url: str, default_repo: str) -> SourceFile:
    """Split a file URL into (repo, revision, path). Hugging Face and GitHub URLs carry all three;
    any other host (e.g. the AdaLEval files) maps to ``default_repo`` and the file's name."""
    parsed = urlparse(url)
    host, path = parsed.netloc.lower(), parsed.path
    pattern = {"huggingface.co": _HF, "github.com": _GITHUB, "raw.githubusercontent.com": _GITHUB_RAW}.get(host)
    m = pattern.match(path) if pattern else None
    if m:
        return SourceFile(m.group(1), m.group(2), m.group(3), url)
    name = path.rsplit("/", 1)[-1] if path else url.rsplit("/", 1)[-1]
    if not name:
        raise ResolveError(f"source {url!r} names no file")
    return SourceFile(default_repo, None, name, url)


def load_source(
    repo_id: str,
    revision: str | None,
    *,
    config: str | None = None,
    split: str = "test",
    files: Sequence[SourceFile] = (),
    sources_dir: str | Path | None = None,
) -> Any:
    """Load one source split as a ``datasets.Dataset``: the hub at ``revision``, or the local copy."""
    require("datasets", "data", "data fetch")
    import datasets

    if files:
        if sources_dir is not None:
            paths = [Path(sources_dir, f.repo_id, f.path) for f in files]
            for p in paths:
                if not p.is_file():
                    raise ResolveError(f"local copy {p} is missing (sources_dir mirrors <repo_id>/<path>)")
            data_files = [str(p) for p in paths]
        else:
            data_files = [f.url for f in files]
        return datasets.load_dataset("json", data_files={split: data_files}, split=split)
    if sources_dir is not None:
        base = Path(sources_dir, repo_id)
        where = base / config if config else base
        if not where.is_dir():
            raise ResolveError(f"local copy {where} is missing (sources_dir mirrors <repo_id>[/<config>])")
        return datasets.load_dataset(str(base), data_dir=config, split=split)
    return datasets.load_dataset(repo_id, config, revision=revision, split=split)


Loader = Callable[..., Any]


class SourceLoader:
    """Loads each source once per fetch and notes which sources each config used (for its manifest)."""

    def __init__(self, sources_dir: str | Path | None = None, loader: Loader = load_source) -> None:
        self.sources_dir = sources_dir
        self._loader = loader
        self._memo: dict[Any, Any] = {}
        self._touched: dict[str, set[tuple[tuple[str, Any], ...]]] = {}

    def dataset(
        self, resolver: str, repo_id: str, revision: str | None, *, config: str | None = None, split: str = "test"
    ) -> Any:
        key = ("hub", repo_id, revision, config, split)
        if key not in self._memo:
            self._memo[key] = self._loader(repo_id, revision, config=config, split=split, sources_dir=self.sources_dir)
        self._touch(resolver, {"repo": repo_id, "revision": revision, "config": config, "split": split})
        return self._memo[key]

    def files(self, resolver: str, files: Sequence[SourceFile], *, split: str = "test") -> Any:
        key = ("files", tuple(files), split)
        if key not in self._memo:
            first = files[0]
            self._memo[key] = self._loader(
                first.repo_id, first.revision, split=split, files=files, sources_dir=self.sources_dir
            )
        for f in files:
            self._touch(resolver, {"repo": f.repo_id, "revision": f.revision, "path": f.path, "url": f.url})
        return self._memo[key]

    def derived(self, key: Any, build: Callable[[], Any]) -> Any:
        """Memoize something computed from a source (an id index, a split) for the rest of the fetch."""
        full = ("derived", key)
        if full not in self._memo:
            self._memo[full] = build()
        return self._memo[full]

    def _touch(self, resolver: str, what: dict[str, Any]) -> None:
        self._touched.setdefault(resolver, set()).add(tuple(sorted(what.items())))

    def take_touched(self) -> dict[str, list[dict[str, Any]]]:
        """What each resolver used since the last call, sorted (so it never depends on row order)."""
        out = {name: [dict(t) for t in sorted(items, key=repr)] for name, items in sorted(self._touched.items())}
        self._touched = {}
        return out


def index_by(ds: Any, column: str) -> dict[Any, int]:
    """Row position by a column's value (first occurrence wins, as ``.iloc[0]`` does in the reference)."""
    if column not in ds.column_names:
        raise ResolveError(f"source has no column {column!r}")
    out: dict[Any, int] = {}
    for i, v in enumerate(ds[column]):
        out.setdefault(v, i)
    return out


def row_by(
    sources: SourceLoader, memo: Any, ds: Any, column: str, key: Any, where: str = "the source"
) -> dict[str, Any]:
    """The first row of ``ds`` whose ``column`` equals ``key``; the column's index is built once per fetch
    under ``memo`` (a key naming the resolver and the data set)."""
    index = sources.derived(memo, lambda: index_by(ds, column))
    if key not in index:
        raise ResolveError(f"no row with {column} == {key!r} in {where}")
    return row_at(ds, index[key])


def row_at(ds: Any, i: int) -> dict[str, Any]:
    if not 0 <= i < len(ds):
        raise ResolveError(f"row {i} is out of range (source has {len(ds)} rows)")
    return ds[i]
