#!/usr/bin/env python
"""Mock recovery figures: does the whole pipeline recover the mock's acceptance settings?

In-process (``--engine mock``) and over HTTP (``serve-mock`` + the OpenAI client) at concurrency 32, acceptance
0.8, 0.6, 0.4 (expected AL 2.472), 0 ms steps, enough requests for >= 20,000 steps.  Prints AL (macro and
token-weighted), conditional AR per position, steps, and the counter cross-check.  No asserts (tests do that).

    python benchmarks/mock_recovery.py --requests 64 --output-len 1024
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys

from speedbench.config import EngineSpec
from speedbench.data.sample import Sample
from speedbench.engines.mock import MockEngine, MockSettings
from speedbench.engines.openai import OpenAIEngine
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import LoadSettings
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.sources import DecodeBasis


def run(engine, n: int, output_len: int) -> dict:
    samples = [
        Sample(f"q{i}", ["coding", "math", "rag", "writing"][i % 4], None, (f"prompt {i}",), None, None, None, False)
        for i in range(n)
    ]
    records: list = []

    async def go():
        await engine.start()
        try:
            return await run_load(
                engine,
                samples,
                LoadSettings(concurrency=32, output_len=output_len, warmup=0, timeout_s=120),
                records.append,
            )
        finally:
            await engine.close()

    res = asyncio.run(go())
    return summarize(
        records,
        DecodeBasis(3),
        counter_windows=[{"segment": 0, "before": res.counters_before, "after": res.counters_after}],
    )


def show(name: str, s: dict) -> None:
    o = s["overall"]
    cond = ", ".join(f"{c:.4f}" for c in o["conditional_acceptance_rate"])
    check = [i for i in s["invariants"] if "counter_delta" in i["name"]]
    print(
        f"{name:<11} steps {o['steps']:>6}  AL {o['acceptance_length']:.4f} (token-weighted "
        f"{o['acceptance_length_token_weighted']:.4f})  conditional AR [{cond}]  errors {o['errors']}  "
        f"counters: {check[0]['ok'] if check else 'n/a'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=1024)
    a = ap.parse_args()
    print(f"expected AL {MockSettings(acceptance=[0.8, 0.6, 0.4]).expected_al():.4f}, conditional AR 0.8 / 0.6 / 0.4")
    options = {"acceptance": "0.8,0.6,0.4", "ttft_ms": "0", "step_ms": "0"}
    show(
        "in-process",
        run(MockEngine(EngineSpec(kind="mock", options=options, draft_length=3)), a.requests, a.output_len),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "serve-mock",
            "--port",
            "0",
            "--ttft-ms",
            "0",
            "--step-ms",
            "0",
            "--acceptance",
            "0.8,0.6,0.4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = re.search(r"(http://\S+/v1)", proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        engine = OpenAIEngine(EngineSpec(kind="openai", base_url=url, model="mock", draft_length=3))
        show("HTTP c32", run(engine, a.requests, a.output_len))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
