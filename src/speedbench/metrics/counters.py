"""Turn two Prometheus counter snapshots into SD stats for the window between them.

A snapshot is ``{"num_drafts": float, "num_draft_tokens": float, "num_accepted_tokens": float,
"per_position": {"0": float, ...}}`` (engine adapters map their own counter names onto these;
vLLM: vllm:spec_decode_num_drafts_total -> num_drafts, ...).  steps = drafts.  An optional
``"inferred": [field, ...]`` names fields the adapter derived rather than read (SGLang has no
accepted-token counter, TensorRT-LLM no step counter); the delta carries the label on.
"""

from __future__ import annotations

from typing import Any

from speedbench.records import SDStats


def counter_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> SDStats | None:
    if not before or not after:
        return None
    try:
        steps = int(round(after["num_drafts"] - before["num_drafts"]))
        drafted = int(round(after["num_draft_tokens"] - before["num_draft_tokens"]))
        accepted = int(round(after["num_accepted_tokens"] - before["num_accepted_tokens"]))
    except KeyError:
        return None
    pb, pa = before.get("per_position") or {}, after.get("per_position") or {}
    positions = sorted({int(p) for p in pa}, key=int)
    per_pos = [int(round(pa.get(str(p), 0) - pb.get(str(p), 0))) for p in positions]
    hist: list[int] = []
    if per_pos:
        prev = steps
        for p in per_pos:
            hist.append(prev - p)
            prev = p
        hist.append(per_pos[-1])
    inferred = sorted(set(after.get("inferred") or []) | set(before.get("inferred") or []))
    return SDStats(
        drafted=drafted,
        accepted=accepted,
        steps=steps,
        per_position=per_pos,
        histogram=hist,
        source="counter_delta",
        inferred=inferred,
    )
