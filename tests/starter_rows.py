"""The embedded starter set's rows, a few per category, as a dataset file's lines: what the real-engine tests and
benchmarks/vllm_per_category.py run (benchmarks put tests/ on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any


def starter_rows(per_category: int, categories: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The first ``per_category`` questions of each of ``categories`` (default: every category, by name), in that
    order."""
    text = resources.files("speedbench.data").joinpath("starter.jsonl").read_text()
    rows = [json.loads(x) for x in text.splitlines()]
    cats = list(categories) if categories is not None else sorted({r["category"] for r in rows})
    return [r for c in cats for r in [r for r in rows if r["category"] == c][:per_category]]


def jsonl(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as JSONL text."""
    return "".join(json.dumps(r) + "\n" for r in rows)
