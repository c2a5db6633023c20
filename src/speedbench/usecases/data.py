"""``speedbench data``: what the dataset commands do beyond one builder call, for the command line to show with
its progress lines: embed a pool and select k prompts per category, written with their selection record
(``embed``, ``select``), audit prompt sets with the optional plot and JSON (``check_plot``, ``audit``), random-token
prompts written (``synthetic``).  The builders themselves are in ``data/builders/``; names resolve through
``data.readers.load_dataset`` like ``run --dataset``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speedbench.atomic import atomic_write
from speedbench.data.builders.writers import write_samples
from speedbench.data.readers import content_hash, load_dataset
from speedbench.data.sample import Sample
from speedbench.errors import InvalidInput

if TYPE_CHECKING:
    from speedbench.data.builders.audit import AuditResult
    from speedbench.data.builders.select import Selection
    from speedbench.embed.base import Embedder


@dataclass(frozen=True)
class Embedded:
    """The prompts' embeddings (row i: ``samples[i]``), the embedder and how long it took."""

    embedder: Embedder
    vectors: np.ndarray
    seconds: float


def embed(samples: Sequence[Sample], spec: str, no_cache: bool, progress: Callable[[int, int], None]) -> Embedded:
    """Embed each prompt's text (``select.sample_text``) with the embedder ``spec`` (cached unless ``no_cache``)."""
    from speedbench.data.builders.select import sample_text
    from speedbench.embed import get_embedder

    t0 = time.perf_counter()
    emb = get_embedder(spec, cache=not no_cache, progress=progress)
    vectors = emb.embed([sample_text(s) for s in samples])
    return Embedded(emb, vectors, time.perf_counter() - t0)


def select(
    specs: list[str],
    samples: list[Sample],
    embedded: Embedded,
    out: str,
    *,
    k: int,
    method: str,
    seed: int,
    max_iter: int,
    allow_short: bool,
) -> tuple[list[Sample], Selection]:
    """``data select``: k prompts per category of the pool (``specs``: its sources, ``samples``: its prompts),
    written to ``out`` with the selection's record at ``out.selection.json``."""
    from speedbench.data.builders.select import select as pick

    picked, sel = pick(
        samples,
        embedded.vectors,
        k=k,
        method=method,
        seed=seed,
        max_iter=max_iter,
        embedder=embedded.embedder.id,
        pool_hash=content_hash(samples),
        allow_short=allow_short,
    )
    write_samples(picked, out)
    record = {
        **sel.to_dict(),
        "pool": specs,
        "pool_size": len(samples),
        "output": out,
        "output_hash": content_hash(picked),
        "embed_seconds": round(embedded.seconds, 3),
    }
    atomic_write(f"{out}.selection.json", json.dumps(record, indent=2) + "\n")
    return picked, sel


def check_plot(plot: str | None) -> None:
    """``audit --plot`` needs the plotting library: say so before any embedding."""
    from speedbench.data.builders.audit import PLOT_NEEDS
    from speedbench.extras import require

    if plot:
        require(*PLOT_NEEDS, "data audit --plot")


def audit(
    files: list[str],
    pool_name: str | None,
    embedder: Embedder,
    *,
    draws: int,
    seed: int,
    threshold: float,
    plot: str | None = None,
    json_out: str | None = None,
) -> tuple[AuditResult, Path | None]:
    """``data audit``: each prompt set's mean pairwise cosine against random subsets of ``pool_name`` (or of the
    sets), near-duplicates; the plot (its path) and the JSON written when asked."""
    from speedbench.data.builders.audit import audit as run_audit
    from speedbench.data.builders.audit import plot as draw

    sets = {f: load_dataset(f) for f in files}
    ref = load_dataset(pool_name) if pool_name else None
    result = run_audit(
        sets, embedder, pool=ref, pool_name=pool_name or "pool", draws=draws, seed=seed, threshold=threshold
    )
    png = draw(result, plot) if plot else None
    if json_out:
        atomic_write(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
    return result, png


def synthetic(isl: int, out: str, count: int, tokenizer: str, seed: int) -> list[Sample]:
    """``data synthetic``: ``count`` random-token prompts of exactly ``isl`` tokens, written to ``out``."""
    from speedbench.data.builders.synthetic import synthetic_prompts

    if isl < 1 or count < 1:
        raise InvalidInput("--isl and --count must be >= 1")
    samples = synthetic_prompts(isl, count, tokenizer, seed=seed)
    write_samples(samples, out)
    return samples
