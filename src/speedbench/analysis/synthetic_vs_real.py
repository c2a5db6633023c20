"""Synthetic vs real: the bias a user would make by benchmarking SD on random-token prompts (docs/sweep.md
"Synthetic vs real", docs/statistics.md "Unpaired comparisons").

A sweep that runs the same SD settings on a real throughput prompt set and on random-token prompts of the same
input length (``speedbench data build-throughput`` / ``speed:throughput_<N>k`` and ``speedbench data synthetic
--isl N000``) gets, per (SD method, draft length, concurrency, engine options) and ISL, the AL and the speedup
measured on each, and their ratio synthetic / real with a 95% interval.  The two prompt sets are different
prompts: nothing pairs them, so each side is resampled on its own (``stats.unpaired_ratio``), each with the
paired bootstrap of SD against its own baseline inside.

Which datasets are which, from the cells' records alone: a dataset whose question ids are all
``synthetic-isl<N>-…`` is random-token synthetic of ISL N; one whose ids are all ``throughput_<N>k-…`` (the
offline builder, ``speedbench data build-throughput``) or whose name is a throughput bucket
(``speed:throughput_<N>k``, ``…/throughput_<N>k.parquet``) is real of ISL N×1000.  A synthetic and a real dataset
of the same ISL are compared; anything else is not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from speedbench.analysis.stats import RESAMPLES, PairedSample, unpaired_ratio
from speedbench.results.estimates import PairedStats
from speedbench.results.loader import RunResult
from speedbench.results.sweep_figures import SyntheticBias

_SYNTHETIC_ID = re.compile(r"^synthetic-isl(\d+)-")
_THROUGHPUT_ID = re.compile(r"^throughput_(\d+)k-")
_THROUGHPUT_NAME = re.compile(r"throughput_(\d+)k\b")


@dataclass(frozen=True)
class PromptSet:
    """What a dataset is for this comparison: its ISL (prompt tokens, o200k_base as the throughput split counts
    them) and whether it is random-token synthetic."""

    isl: int
    synthetic: bool


def prompt_set(dataset: str, runs: Sequence[RunResult]) -> PromptSet | None:
    """A dataset's ISL and kind from its cells' question ids (or, for real prompts, its name); None when it is
    neither a synthetic nor a throughput prompt set."""
    ids = [r.question_id for run in runs for r in run.records]
    if not ids:
        return None
    syn = [_SYNTHETIC_ID.match(q) for q in ids]
    if all(syn):
        isls = {int(m[1]) for m in syn if m}
        return PromptSet(isls.pop(), True) if len(isls) == 1 else None
    thr = [_THROUGHPUT_ID.match(q) for q in ids]
    if all(thr):
        buckets = {int(m[1]) for m in thr if m}
        return PromptSet(buckets.pop() * 1000, False) if len(buckets) == 1 else None
    name = _THROUGHPUT_NAME.search(Path(dataset.split(":", 1)[-1]).name)
    return PromptSet(int(name[1]) * 1000, False) if name else None


@dataclass(frozen=True)
class Side:
    """One prompt set's SD configuration as the sweep report paired it: its usable runs (baseline and SD
    repeats), their paired sample and its overall statistics (the report's own, not computed again here)."""

    dataset: str
    runs: Sequence[RunResult]
    sample: PairedSample
    stats: PairedStats


def compare_sides(
    real: Side,
    synthetic: Side,
    key: tuple[str, int, int, tuple[tuple[str, str], ...]],
    isl: int,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> SyntheticBias:
    """The bias of one configuration (``key`` = sd, k, concurrency, engine options)."""
    xs, ys = real.sample, synthetic.sample
    bx, by = real.stats, synthetic.stats
    sd, k, c, opts = key
    return SyntheticBias(
        sd,
        k,
        c,
        opts,
        isl,
        real.dataset,
        synthetic.dataset,
        bx["al_b"],
        by["al_b"],
        unpaired_ratio(xs, ys, "al_b", resamples, seed),
        bx["speedup"],
        by["speedup"],
        unpaired_ratio(xs, ys, "speedup", resamples, seed),
        (len(xs.conversations), len(ys.conversations)),
    )
