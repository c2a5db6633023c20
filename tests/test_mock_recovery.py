"""The mock engine's acceptance settings are recovered by the whole pipeline."""

import asyncio

import pytest

from conftest import make_samples, serve_mock
from speedbench.config import EngineSpec
from speedbench.engines.mock import MockEngine, MockSettings
from speedbench.engines.openai import OpenAIEngine
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import LoadSettings
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.sources import DecodeBasis

ACCEPT = [0.8, 0.6, 0.4]
EXPECTED_AL = 1 + 0.8 + 0.8 * 0.6 + 0.8 * 0.6 * 0.4  # 2.472


def _run(engine, n=64, output_len=1024, concurrency=32):
    records = []

    async def go():
        await engine.start()
        try:
            res = await run_load(
                engine,
                make_samples(n),
                LoadSettings(concurrency=concurrency, output_len=output_len, warmup=0, timeout_s=120),
                records.append,
            )
        finally:
            await engine.close()
        return res

    res = asyncio.run(go())
    windows = [{"segment": 0, "before": res.counters_before, "after": res.counters_after}]
    return records, summarize(records, DecodeBasis(3), counter_windows=windows).to_dict()  # the summary.json form


def _check(summary):
    o = summary["overall"]
    assert o["errors"] == 0
    assert o["steps"] >= 20_000
    assert pytest.approx(2.472) == EXPECTED_AL
    assert MockSettings(acceptance=ACCEPT).expected_al() == pytest.approx(EXPECTED_AL)
    assert o["acceptance_length"] == pytest.approx(EXPECTED_AL, abs=0.03)
    assert o["acceptance_length_token_weighted"] == pytest.approx(EXPECTED_AL, abs=0.03)
    for got, want in zip(o["conditional_acceptance_rate"], ACCEPT, strict=True):
        assert got == pytest.approx(want, abs=0.02)
    assert len(o["conditional_acceptance_rate"]) == 3
    bad = [i for i in summary["invariants"] if i["ok"] is False]
    assert not bad, bad
    assert any(i["name"].startswith("per_request_vs_counter_delta") and i["ok"] for i in summary["invariants"])


def test_in_process_mock_recovers_acceptance():
    eng = MockEngine(
        EngineSpec(kind="mock", options={"acceptance": "0.8,0.6,0.4", "ttft_ms": "0", "step_ms": "0"}, draft_length=3)
    )
    records, summary = _run(eng)
    _check(summary)
    assert summary["sources"]["acceptance"] == "per_request"


def test_http_mock_recovers_acceptance_at_concurrency_32():
    with serve_mock("--k", "3", "--acceptance", "0.8,0.6,0.4", "--ttft-ms", "0", "--step-ms", "0") as url:
        records, summary = _run(OpenAIEngine(EngineSpec(kind="openai", base_url=url, model="mock", draft_length=3)))
    _check(summary)
    # every step arrived as its own chunk: chunk counting agrees exactly with the server's own stats
    from speedbench.metrics.sources import chunk_stats

    for r in records:
        c = chunk_stats(r, 3)
        assert c is not None and (c.steps, c.accepted, c.histogram) == (r.sd.steps, r.sd.accepted, r.sd.histogram)
        assert r.completion_tokens == sum(r.chunk_tokens) == len(r.output_token_ids)


def test_http_chunk_counting_without_per_request_stats():
    with serve_mock("--ttft-ms", "0", "--step-ms", "0", "-E", "per_request_stats=false") as url:
        records, summary = _run(
            OpenAIEngine(EngineSpec(kind="openai", base_url=url, model="mock", draft_length=3)), n=32, output_len=512
        )
    assert all(r.sd is None for r in records)
    assert summary["sources"]["acceptance"] == "counter_delta"
    assert summary["sources"]["acceptance_per_category"] == "chunks"
    assert summary["overall"]["acceptance_length_token_weighted"] == pytest.approx(EXPECTED_AL, abs=0.05)
    check = [i for i in summary["invariants"] if i["name"].startswith("chunks_vs_counter_delta")]
    assert check and check[0]["ok"] is True, check
