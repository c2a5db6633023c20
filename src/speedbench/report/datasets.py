"""Console tables for the dataset commands (``speedbench data show / select / audit / build-throughput``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from speedbench.data.builders.audit import AuditResult
    from speedbench.data.builders.select import Selection
    from speedbench.data.sample import Sample


def samples_table(name: str, samples: Sequence[Sample]) -> Table:
    """Samples, multi-turn conversations, turns and words per turn, per category and in all."""
    from speedbench.data.readers import content_hash

    t = Table(title=f"{name}: {len(samples)} samples ({content_hash(list(samples))[:19]}…)")
    for c in ("category", "samples", "multi-turn", "turns", "mean words/turn", "max words/turn"):
        t.add_column(c, justify="left" if c == "category" else "right")
    cats: dict[str, list[Sample]] = {}
    for s in samples:
        cats.setdefault(s.category, []).append(s)

    def row(label: str, ss: Sequence[Sample]) -> list[str]:
        words = [len(turn.split()) for s in ss for turn in s.turns]
        mean = f"{sum(words) / len(words):.1f}" if words else "—"
        return [
            label,
            str(len(ss)),
            str(sum(s.multiturn for s in ss)),
            str(len(words)),
            mean,
            str(max(words, default=0)),
        ]

    for cat in sorted(cats):
        t.add_row(*row(cat, cats[cat]))
    t.add_row(*row("all", samples), style="bold")
    return t


def selection_table(sel: Selection, method: str, k: int, embedder_id: str) -> Table:
    """Per category: candidates, selected, the mean pairwise cosine after selection (and after greedy), swaps."""
    table = Table(title=f"{method} selection, k={k}, {embedder_id}")
    for col in ("category", "candidates", "selected", "mean cos", "greedy mean cos", "swaps", "s"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for c in sel.categories:
        pairs = len(c.selected) * (len(c.selected) - 1) / 2
        g = f"{c.greedy_objective / pairs:.4f}" if c.greedy_objective is not None and pairs else "—"
        table.add_row(
            c.category,
            str(c.candidates),
            str(len(c.selected)),
            f"{c.mean_cosine:.4f}",
            g,
            str(c.swaps),
            f"{c.seconds:.2f}",
        )
    return table


def audit_table(result: AuditResult) -> Table:
    """Mean pairwise cosine per file and category against random subsets of the reference, near-duplicates."""
    t = Table(title=f"diversity audit — {result.embedder} (mean pairwise cosine; lower = more diverse)")
    for c in ("file", "category", "n", "mean cos", "random mean ± sd", "z", "random from", "near-dups"):
        t.add_column(c, justify="left" if c in ("file", "category", "random from") else "right")
    for r in result.rows:
        rnd = f"{r.random_mean:.4f} ± {r.random_sd:.4f}" if r.random_mean is not None else "—"
        z = f"{r.z:+.1f}" if r.z is not None else "—"
        nd = str(len(result.near_duplicates[r.file])) if r.category == "all" else ""
        t.add_row(
            escape(Path(r.file).name),
            escape(r.category),
            str(r.n),
            f"{r.mean_cos:.4f}",
            rnd,
            z,
            escape(r.reference),
            nd,
            style="bold" if r.category == "all" else None,
        )
    return t


def throughput_table(rows: list[dict[str, Any]], target_tokenizer: str | None) -> Table:
    """The throughput split per bucket and tier: lengths in o200k_base tokens, exactness, padding, target ISL."""
    from speedbench.data.builders.throughput import REPORT_COLUMNS, report_cells

    isl = f"; ISL = {target_tokenizer} after its chat template" if target_tokenizer else ""
    table = Table(title=f"throughput split (lengths in o200k_base tokens{isl})")
    for col in REPORT_COLUMNS:
        table.add_column(col, justify="left" if col in ("bucket", "tier") else "right")
    for r in rows:
        table.add_row(*report_cells(r))
    return table
