"""Latency and throughput metrics from client timestamps (time.perf_counter_ns, in ns).

- TTFT      = first chunk arrival - request start
- TPOT      = (E2E - TTFT) / (tokens - 1)
- ITL       = per token: each gap between successive chunks divided by the tokens the later
              chunk carried, counted once per token (equals the chunk gap when chunks hold 1 token)
- step time = gaps between successive chunks after the first (one verification step per chunk)
- E2E       = end - start
- user TPS  = (tokens - 1) / (t_last_chunk - t_first_chunk)
- output TPS = sum(tokens) / (last end - first start) over the successful requests
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np

from speedbench.metrics.models import Distribution
from speedbench.records import RequestRecord

NS = 1e9


def ttft_s(r: RequestRecord) -> float | None:
    return (r.chunk_ns[0] - r.start_ns) / NS if r.chunk_ns else None


def e2e_s(r: RequestRecord) -> float:
    return (r.end_ns - r.start_ns) / NS


def tpot_s(r: RequestRecord) -> float | None:
    t = ttft_s(r)
    if t is None or r.tokens < 2:
        return None
    return (e2e_s(r) - t) / (r.tokens - 1)


def step_times_s(r: RequestRecord) -> list[float]:
    return [(b - a) / NS for a, b in pairwise(r.chunk_ns)]


def itl_s(r: RequestRecord) -> list[float]:
    out: list[float] = []
    for gap, n in zip(step_times_s(r), r.chunk_tokens[1:], strict=False):
        if n > 0:
            out.extend([gap / n] * n)
    return out


def user_tps(r: RequestRecord) -> float | None:
    if len(r.chunk_ns) < 2 or r.tokens < 2:
        return None
    span = (r.chunk_ns[-1] - r.chunk_ns[0]) / NS
    return (r.tokens - 1) / span if span > 0 else None


def output_tps(records: Sequence[RequestRecord]) -> float | None:
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    span = (max(r.end_ns for r in ok) - min(r.start_ns for r in ok)) / NS
    return sum(r.tokens for r in ok) / span if span > 0 else None


def distribution(values: Iterable[float | None]) -> Distribution:
    """{mean, p50, p90, p99, n} of the non-None values (all None when there are none)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return Distribution()
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return Distribution(mean=float(arr.mean()), p50=float(p50), p90=float(p90), p99=float(p99), n=int(arr.size))
