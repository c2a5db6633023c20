"""Acceptance metrics over SD stats.

Definitions (one place, used by every report):
- AL  = 1 + accepted / steps                       (tokens per verification step, bonus token included)
- AR  = accepted / drafted
- histogram[j] = steps that accepted exactly j drafts (produced j+1 tokens); L = j + 1
- joint AR_i       = P(L >= i+1)            = per_position[i-1] / steps
- conditional AR_i = P(L >= i+1) / P(L >= i) = per_position[i-1] / per_position[i-2]  (per_position[-1] = steps)

The figures above use ``steps`` as the source counts them, which differs by engine (sources.py).  The same on
every engine (``step_figures``, over ``sources.DecodeSteps``):
- AL over drafted steps    = 1 + accepted / drafted steps   (vLLM's and the paper's AL)
- tokens per decode step   = tokens after the first / all decode steps (drafted or not: what speedup follows)
- undrafted step share     = decode steps that drafted nothing / all decode steps
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from speedbench.metrics.models import AcceptanceStats
from speedbench.metrics.sources import DecodeSteps
from speedbench.records import SDStats


def acceptance_length(accepted: int, steps: int) -> float | None:
    """AL = 1 + accepted/steps; None when there were no steps."""
    return 1.0 + accepted / steps if steps > 0 else None


def acceptance_rate(accepted: int, drafted: int) -> float | None:
    return accepted / drafted if drafted > 0 else None


def sum_stats(stats: Iterable[SDStats], source: str | None = None) -> SDStats | None:
    """Add SD stats element-wise (histograms and per-position lists padded to the longest)."""
    items = list(stats)
    if not items:
        return None
    n_pos = max(len(s.per_position) for s in items)
    n_hist = max(len(s.histogram) for s in items)
    per_pos = [0] * n_pos
    hist = [0] * n_hist
    for s in items:
        for i, v in enumerate(s.per_position):
            per_pos[i] += v
        for i, v in enumerate(s.histogram):
            hist[i] += v
    return SDStats(
        drafted=sum(s.drafted for s in items),
        accepted=sum(s.accepted for s in items),
        steps=sum(s.steps for s in items),
        per_position=per_pos,
        histogram=hist,
        source=source or items[0].source,  # type: ignore[arg-type]
        inferred=sorted({f for s in items for f in s.inferred}),
        undrafted_steps=(
            None if any(s.undrafted_steps is None for s in items) else sum(s.undrafted_steps or 0 for s in items)
        ),
    )


def joint_acceptance(per_position: Sequence[int], steps: int) -> list[float | None]:
    """joint AR_i = P(L >= i+1) = per_position[i-1] / steps."""
    return [(p / steps if steps > 0 else None) for p in per_position]


def conditional_acceptance(per_position: Sequence[int], steps: int) -> list[float | None]:
    """conditional AR_i = P(L >= i+1) / P(L >= i): accepted at i given accepted at all before."""
    out: list[float | None] = []
    prev = steps
    for p in per_position:
        out.append(p / prev if prev > 0 else None)
        prev = p
    return out


def histogram_dict(histogram: Sequence[int]) -> dict[str, int]:
    """{"L": steps} keyed by tokens per step L = 1..k+1 (SPEED-Bench's histogram form)."""
    return {str(j + 1): int(n) for j, n in enumerate(histogram)}


def macro_acceptance_length(stats: Iterable[SDStats]) -> float | None:
    """Mean over requests of each request's AL (requests with no steps are skipped)."""
    vals = [v for s in stats if (v := acceptance_length(s.accepted, s.steps)) is not None]
    return sum(vals) / len(vals) if vals else None


def acceptance_stats(stats: list[SDStats], k: int | None = None) -> AcceptanceStats:
    """The acceptance figures of a group of requests (or of one counter delta), per the definitions above."""
    total = sum_stats(stats)
    if total is None:
        return AcceptanceStats()
    per_pos = total.per_position
    if k is not None and per_pos:  # empty = not reported (llama.cpp per request): no per-position figures
        per_pos = (list(per_pos) + [0] * k)[:k]
    return AcceptanceStats(
        acceptance_length=macro_acceptance_length(stats),
        acceptance_length_token_weighted=acceptance_length(total.accepted, total.steps),
        acceptance_rate=acceptance_rate(total.accepted, total.drafted),
        conditional_acceptance_rate=conditional_acceptance(per_pos, total.steps),
        joint_acceptance_rate=joint_acceptance(per_pos, total.steps),
        histogram=histogram_dict(total.histogram),
        steps=total.steps,
        drafted=total.drafted,
        accepted=total.accepted,
    )


def _missing(items: Sequence[DecodeSteps], known: Iterable[bool]) -> str:
    """'none: m of n requests: <the first missing request's reason>'."""
    flags = list(known)
    lacking = [d for d, ok in zip(items, flags, strict=True) if not ok]
    return f"none: {len(lacking)} of {len(items)} requests: {lacking[0].reason}" if lacking else "none"


def step_figures(items: Sequence[DecodeSteps]) -> dict[str, Any]:
    """The engine-independent figures of a group of requests (the new AcceptanceStats fields).

    Each is computed only when every request of the group has what it needs (partial sums would pass for
    figures of the whole group); otherwise it is None and its ``*_source`` says why ("none: m of n requests:
    reason").  Token-weighted figures are ratios of sums; ``acceptance_length_drafted_steps`` is the mean over
    requests that drafted at least once."""
    out: dict[str, Any] = {}
    if not items:
        return out
    if all(d.drafted_steps is not None for d in items):
        drafted = sum(d.drafted_steps or 0 for d in items)
        accepted = sum(d.accepted for d in items)
        per_req = [v for d in items if (v := acceptance_length(d.accepted, d.drafted_steps or 0)) is not None]
        out |= {
            "acceptance_length_drafted_steps": sum(per_req) / len(per_req) if per_req else None,
            "acceptance_length_drafted_steps_token_weighted": acceptance_length(accepted, drafted),
            "drafted_steps": drafted,
            "drafted_steps_source": "per_request",
        }
    else:
        out["drafted_steps_source"] = _missing(items, (d.drafted_steps is not None for d in items))
    if all(d.decode_steps is not None for d in items):
        steps = sum(d.decode_steps or 0 for d in items)
        tokens = sum(d.tokens for d in items)
        out |= {
            "tokens_per_decode_step": tokens / steps if steps > 0 else None,
            "decode_steps": steps,
            "decode_tokens": tokens,
            "decode_steps_source": "+".join(sorted({d.source for d in items})),
        }
        if all(d.undrafted_steps is not None for d in items):
            undrafted = sum(d.undrafted_steps or 0 for d in items)
            out |= {"undrafted_steps": undrafted, "undrafted_step_share": undrafted / steps if steps > 0 else None}
    else:
        out["decode_steps_source"] = _missing(items, (d.decode_steps is not None for d in items))
    return out
