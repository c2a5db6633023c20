"""Fetch the official SPEED-Bench data (``speedbench data fetch``); :mod:`speedbench.data.fetched` finds it
again (``speed:<config>``).

SPEED-Bench (``nvidia/SPEED-Bench``, paper arXiv 2604.09557) ships some rows as a placeholder that names
an upstream source (``source``, ``src_id``) instead of the prompt, because of the upstream licences.
NVIDIA's reference client (Model-Optimizer ``examples/specdec_bench``: ``prepare_data.py`` and
``specdec_bench/datasets/speed.py``) rebuilds them; :func:`fetch` does the same through
:mod:`speedbench.data.builders.resolvers` and writes, per config, under ``<out_dir>/<revision>/``:

- ``<config>.parquet``: the eight official fields with ``turns``;
- ``<config>.jsonl``: the same rows in the NeMo-Skills ``messages`` form;
- ``<config>.manifest.json``: dataset repo and revision, every source pin, row counts, rows resolved per
  source, content hash, seed.

Rows are written sorted by ``question_id`` and every random choice is seeded per row, so the files do
not depend on row or config order. A config's files appear only once all of its rows resolved; they are
staged beside the destination and renamed into place (a failure leaves earlier output as it was).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speedbench.atomic import atomic_write
from speedbench.data.builders.resolvers import (
    HLE_PAGE,
    Registry,
    ResolveContext,
    ResolveError,
    SourceLoader,
    Tokenizer,
    build_registry,
    o200k_tokenizer,
    row_is_placeholder,
)
from speedbench.data.builders.writers import write_messages_jsonl, write_parquet
from speedbench.data.fetched import CONFIGS, DEFAULT_REVISION, REPO_ID, default_out_dir, revision_dir
from speedbench.data.files import row_to_sample
from speedbench.data.readers import content_hash
from speedbench.data.sample import DatasetError, Sample
from speedbench.extras import MissingExtra, require

SPLIT = "test"
MAX_LISTED = 20

ProgressFn = Callable[[str, str, int, int], None]
"""``progress(config, resolver_name, done, total)`` after each placeholder row is resolved."""
AccessProbe = Callable[[str, "str | None"], None]
"""``probe(repo_id, token)`` returns when the token may read the gated repo, raises otherwise."""
RowLoader = Callable[[str, str, "str | Path | None"], list[dict[str, Any]]]


@dataclass(frozen=True)
class ConfigResult:
    config: str
    parquet: Path
    jsonl: Path
    manifest: Path
    rows: int
    resolved: dict[str, int]
    content_hash: str


@dataclass(frozen=True)
class FetchResult:
    revision: str
    out_dir: Path
    configs: dict[str, ConfigResult] = field(default_factory=dict)


def expand_configs(configs: str | Sequence[str]) -> list[str]:
    """``"all"`` -> every config; otherwise the named ones, checked, in the order given, without repeats."""
    names = [configs] if isinstance(configs, str) else list(configs)
    out: list[str] = []
    for name in names:
        for c in CONFIGS if name == "all" else (name,):
            if c not in CONFIGS:
                raise DatasetError(REPO_ID, None, "config", f"unknown config {c!r} (one of: {', '.join(CONFIGS)}, all)")
            if c not in out:
                out.append(c)
    if not out:
        raise DatasetError(REPO_ID, None, "config", "no config given")
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _listed(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:MAX_LISTED])
    return shown + (f" (+{len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else "")


# --- loading SPEED-Bench itself ---------------------------------------------------------------------


def load_config_rows(config: str, revision: str, source: str | Path | None = None) -> list[dict[str, Any]]:
    """One config's ``test`` split: the hub repo at ``revision``, or a local copy of it (``source``)."""
    require("datasets", "data", "data fetch")
    import datasets

    where = REPO_ID if source is None else str(source)
    try:
        ds = datasets.load_dataset(where, name=config, revision=revision, split=SPLIT)
    except Exception as e:  # the hub and the builders raise many types; report one line
        hint = (
            "; check the network and Hub access, or point --source at a local copy"
            if source is None
            else "; --source must be a folder `datasets.load_dataset` reads, with this config"
        )
        raise DatasetError(
            f"{where}@{revision}", None, None, f"cannot load config {config}: {_one_line(e)}{hint}"
        ) from None
    return [dict(r) for r in ds]


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """``datasets`` draws progress bars; library code must not print, so they are off during a fetch."""
    try:
        import datasets
    except ImportError:
        yield
        return
    was_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            datasets.enable_progress_bars()


# --- checks before any work -------------------------------------------------------------------------


def check_sources(rows_by_config: Mapping[str, list[dict[str, Any]]], registry: Registry) -> None:
    """Every placeholder row must name a source some resolver knows."""
    unknown = sorted(
        {
            str(r.get("question_id"))
            for rows in rows_by_config.values()
            for r in rows
            if row_is_placeholder(r) and registry.for_source(r.get("source")) is None
        }
    )
    if unknown:
        raise DatasetError(
            REPO_ID,
            None,
            "source",
            f"placeholder rows name no known source (question_id: {_listed(unknown)}); "
            f"known sources: {', '.join(registry.known())}",
        )


def hf_token() -> str | None:
    """``HF_TOKEN`` or the token saved by ``huggingface-cli login``."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()


def hf_access_probe(repo_id: str, token: str | None) -> None:
    """Raise unless ``token`` may read the dataset (``huggingface_hub.auth_check``)."""
    from huggingface_hub import auth_check

    auth_check(repo_id, repo_type="dataset", token=token)


def preflight(
    rows_by_config: Mapping[str, list[dict[str, Any]]],
    registry: Registry,
    *,
    sources_dir: str | Path | None = None,
    probe: AccessProbe | None = None,
) -> list[str]:
    """Check access to every gated source the placeholder rows need (HLE), before any work starts.

    A source with a local copy under ``sources_dir`` needs no access. Returns the repos probed."""
    needed = {
        res.name: res
        for rows in rows_by_config.values()
        for r in rows
        if row_is_placeholder(r)
        for res in [registry.for_source(r.get("source"))]
        if res is not None and res.gated
    }
    probed: list[str] = []
    for name in sorted(needed):
        repo = needed[name].pin.repo_id
        if sources_dir is not None and Path(sources_dir, repo).exists():
            continue
        try:
            (probe or hf_access_probe)(repo, hf_token())
        except Exception as e:
            page = HLE_PAGE if repo == "cais/hle" else f"https://huggingface.co/datasets/{repo}"
            raise DatasetError(
                repo,
                None,
                None,
                f"cannot read this gated dataset ({_one_line(e)}): request access at {page}, "
                "then run `huggingface-cli login` or set HF_TOKEN",
            ) from None
        probed.append(repo)
    return probed


# --- resolution ------------------------------------------------------------------------------------


def resolve_rows(
    config: str,
    rows: list[dict[str, Any]],
    registry: Registry,
    ctx: ResolveContext,
    *,
    display: str,
    progress: ProgressFn | None = None,
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Rows with every placeholder replaced by its source's text; counts of rows resolved per resolver."""
    todo: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if row_is_placeholder(r):
            res = registry.for_source(r.get("source"))
            assert res is not None  # check_sources ran first
            todo.setdefault(res.name, []).append(i)
    out = [dict(r) for r in rows]
    counts: Counter[str] = Counter()
    for name, positions in todo.items():
        res = registry.by_name(name)
        for done, i in enumerate(positions, start=1):
            row = out[i]
            try:
                turns = res.resolve(row, ctx)
            except (DatasetError, MissingExtra):
                raise
            except Exception as e:  # ResolveError, or a loader's error: one line naming the row
                what = str(e) if isinstance(e, ResolveError) else f"loading its source failed: {_one_line(e)}"
                where = f"question {row.get('question_id')} ({name})"
                raise DatasetError(display, i + 1, "src_id", f"{where}: {what}") from None
            row["turns"] = list(turns)
            counts[name] += 1
            if progress is not None:
                progress(config, name, done, len(positions))
    left = sorted(str(r.get("question_id")) for r in out if row_is_placeholder(r) or not r.get("turns"))
    if left:
        raise DatasetError(
            display, None, "turns", f"rows still hold the placeholder after resolution (question_id: {_listed(left)})"
        )
    return out, counts


def rows_to_samples(rows: list[dict[str, Any]], display: str) -> list[Sample]:
    """``Sample``s sorted by question_id (so the output never depends on row order)."""
    samples = [row_to_sample(r, display, i) for i, r in enumerate(rows, start=1)]
    counts = Counter(s.question_id for s in samples)
    dups = sorted(q for q, n in counts.items() if n > 1)
    if dups:
        raise DatasetError(display, None, "question_id", f"duplicate question_id: {_listed(dups)}")
    return sorted(samples, key=lambda s: s.question_id)


# --- output ----------------------------------------------------------------------------------------


def _publish(dest: Path, config: str, samples: list[Sample], manifest: dict[str, Any]) -> ConfigResult:
    """Write the three files into a staging folder beside ``dest``, then rename them in (manifest last)."""
    dest.mkdir(parents=True, exist_ok=True)
    names = {"parquet": f"{config}.parquet", "jsonl": f"{config}.jsonl", "manifest": f"{config}.manifest.json"}
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{config}-", dir=dest))
    try:
        write_parquet(samples, staging / names["parquet"])
        write_messages_jsonl(samples, staging / names["jsonl"])
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        atomic_write(staging / names["manifest"], text)
        for key in ("parquet", "jsonl", "manifest"):
            os.replace(staging / names[key], dest / names[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConfigResult(
        config,
        dest / names["parquet"],
        dest / names["jsonl"],
        dest / names["manifest"],
        len(samples),
        dict(manifest["resolved"]),
        manifest["content_hash"],
    )


def _manifest(
    config: str,
    revision: str,
    *,
    seed: int,
    local_dataset: bool,
    local_sources: bool,
    registry: Registry,
    counts: Counter[str],
    used: dict[str, list[dict[str, Any]]],
    tokenizer: str | None,
    samples: list[Sample],
) -> dict[str, Any]:
    sources = {}
    for res in registry.resolvers:
        entry = res.pin.to_dict()
        entry["used"] = used.get(res.name, [])
        sources[res.name] = entry
    return {
        "dataset": REPO_ID,
        "revision": revision,
        "config": config,
        "split": SPLIT,
        "dataset_location": "local copy" if local_dataset else "hub",
        "sources_location": "local copy" if local_sources else "hub",
        "seed": seed,
        "rows": len(samples),
        "placeholder_rows": sum(counts.values()),
        "resolved": dict(sorted(counts.items())),
        "sources": sources,
        "tokenizer": tokenizer,
        "order": "sorted by question_id",
        "content_hash": content_hash(samples),
        "files": {"parquet": f"{config}.parquet", "jsonl": f"{config}.jsonl"},
    }


# --- the entry points ------------------------------------------------------------------------------


def fetch(
    configs: str | Sequence[str],
    *,
    revision: str | None = None,
    source: str | Path | None = None,
    sources_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    source_revisions: Mapping[str, str] | None = None,
    tokenizer: Tokenizer | None = None,
    access_probe: AccessProbe | None = None,
    row_loader: RowLoader | None = None,
) -> FetchResult:
    """Fetch, resolve and write SPEED-Bench configs; see the module docstring for the files.

    ``revision``: of ``nvidia/SPEED-Bench`` (default :data:`DEFAULT_REVISION`). ``source``: a local copy of
    the dataset instead of the hub. ``sources_dir``: local copies of the upstream sources
    (``<sources_dir>/<repo_id>``). ``source_revisions``: pin overrides by resolver name. ``tokenizer``:
    token counter for throughput configs (default tiktoken o200k_base, as the reference).
    ``access_probe``: the gated-source check (default ``huggingface_hub.auth_check``)."""
    names = expand_configs(configs)
    revision = revision or DEFAULT_REVISION
    registry = build_registry(source_revisions)
    dest = revision_dir(out_dir if out_dir is not None else default_out_dir(), revision)
    load_rows = row_loader or load_config_rows
    shared: list[Tokenizer] = [tokenizer] if tokenizer is not None else []

    def get_tokenizer() -> Tokenizer:
        if not shared:
            shared.append(o200k_tokenizer())
        return shared[0]

    with _quiet_datasets():
        rows_by_config = {c: load_rows(c, revision, source) for c in names}
        check_sources(rows_by_config, registry)
        preflight(rows_by_config, registry, sources_dir=sources_dir, probe=access_probe)
        loader = SourceLoader(sources_dir)
        result = FetchResult(revision, dest)
        for config in names:
            display = f"{source if source is not None else REPO_ID}@{revision}:{config}"
            ctx = ResolveContext(config, seed, loader, get_tokenizer)
            try:
                rows, counts = resolve_rows(
                    config, rows_by_config[config], registry, ctx, display=display, progress=progress
                )
            except ResolveError as e:  # e.g. the tokenizer cannot load
                raise DatasetError(display, None, None, str(e)) from None
            samples = rows_to_samples(rows, display)
            tok_name = ctx.tokenizer_used
            manifest = _manifest(
                config,
                revision,
                seed=seed,
                local_dataset=source is not None,
                local_sources=sources_dir is not None,
                registry=registry,
                counts=counts,
                used=loader.take_touched(),
                tokenizer=tok_name,
                samples=samples,
            )
            result.configs[config] = _publish(dest, config, samples, manifest)
    return result
