"""Read speculative-decoding counters from a Prometheus /metrics text page.

Uses prometheus_client's parser.  Engine adapters name their counter prefix
(vLLM: ``vllm:spec_decode_``, llama.cpp: ``llamacpp:spec_decode_``); samples with several
label sets (several models/engines) are summed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

FIELDS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")


def sum_samples(text: str, keep: Callable[[str], bool], by: str | None = None) -> dict[tuple[str, str], float]:
    """The samples of a /metrics page whose name ``keep`` accepts, summed over their label sets (several
    models/engines) -> {(sample name, value of label ``by`` or ""): total}; ``*_created`` samples skipped."""
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created") or not keep(sample.name):
                continue
            key = (sample.name, sample.labels.get(by, "") if by else "")
            totals[key] = totals.get(key, 0.0) + float(sample.value)
    return totals


def parse_sd_counters(text: str, prefix: str = "vllm:spec_decode_") -> dict[str, Any] | None:
    """Snapshot {num_drafts, num_draft_tokens, num_accepted_tokens, per_position{pos: v}} or None
    when the page has no spec-decode counters (vLLM omits them when SD is off)."""
    out: dict[str, Any] = {}
    per_pos: dict[str, float] = {}
    for (name, pos), value in sum_samples(text, lambda n: n.startswith(prefix), by="position").items():
        field = name[len(prefix) :].removesuffix("_total")
        if field == "num_accepted_tokens_per_pos":
            if pos:
                per_pos[pos] = per_pos.get(pos, 0.0) + value
        elif field in FIELDS:
            out[field] = out.get(field, 0.0) + value
    if not all(f in out for f in FIELDS):
        return None
    out["per_position"] = per_pos
    return out
