"""Pick the acceptance figures for each request from the best source available.

Priority: the engine's per-request stats ("per_request") > Prometheus counter deltas around
the measured window ("counter_delta", run level only) > counting tokens per streamed chunk
("chunks", valid only for engines that stream one chunk per verification step).
"""

from __future__ import annotations

from speedbench.records import RequestRecord, SDStats


def chunk_stats(r: RequestRecord, k: int) -> SDStats | None:
    """SD stats inferred from tokens per chunk.

    The first chunk carries the prefill token; every later chunk is one verification step
    that produced n tokens = (n - 1) accepted drafts + 1 bonus token.  Returns None when the
    per-chunk token counts are not exact or a chunk holds more than k+1 tokens (then chunks
    are not steps).
    """
    if not r.chunk_tokens_exact or len(r.chunk_tokens) < 1 or k < 1:
        return None
    steps_tokens = [n for n in r.chunk_tokens[1:] if n > 0]
    if any(n > k + 1 for n in steps_tokens):
        return None
    hist = [0] * (k + 1)
    for n in steps_tokens:
        hist[n - 1] += 1
    return SDStats.from_histogram(hist, source="chunks", k=k)


def request_stats(r: RequestRecord, k: int, chunks_are_steps: bool) -> SDStats | None:
    if r.sd is not None:
        return r.sd
    if chunks_are_steps:
        return chunk_stats(r, k)
    return None
