"""Per-category counter windows (--per-category-windows), one source per column, and the SD label checked
against the server's counters (issue 23)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import serve_mock, speedbench_cmd
from speedbench.config import EngineSpec, RunConfig
from speedbench.engines.base import Capabilities
from speedbench.errors import InvalidInput
from speedbench.load.drivers.windows import decide
from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.sd_label import sd_check, server_k
from speedbench.records import RequestRecord, SDStats
from speedbench.report.console import CHUNKS_WHY, column_sources
from speedbench.results.loader import load_run
from speedbench.usecases import run as uc

BY_CATEGORY = {"coding": [0.95, 0.9, 0.85], "qa": [0.3, 0.2, 0.1], "roleplay": [0.0, 0.0, 0.0]}


def _mock_cfg(out: Path, windows: str = "on", **extra: Any) -> RunConfig:
    options = {"clock": "virtual", "cost": "batch", "acceptance_by_category": json.dumps(BY_CATEGORY)}
    return RunConfig(
        engine=EngineSpec(kind="mock", options=options),
        concurrency=4,
        output_len=96,
        out=str(out),
        per_category_windows=windows,  # type: ignore[arg-type]
        **extra,
    )


def _by_category(records: list[RequestRecord]) -> dict[str, list[RequestRecord]]:
    out: dict[str, list[RequestRecord]] = {}
    for r in records:
        out.setdefault(r.category, []).append(r)
    return out


def test_mock_windows_give_each_category_its_own_counter_delta(tmp_path: Path) -> None:
    end = asyncio.run(uc.run(_mock_cfg(tmp_path / "run")))
    manifest, summary = end.result.manifest, end.result.summary
    assert manifest.measurement is not None and manifest.measurement.mode == "per_category_windows"
    windows = manifest.counter_windows
    cats = sorted(summary.per_category)
    assert sorted(w.category or "" for w in windows) == cats and len(cats) == 11
    assert all(w.complete and w.segment == 0 and w.before and w.after for w in windows)
    for cat, recs in _by_category(end.result.records).items():
        g = summary.per_category[cat]
        assert g.acceptance_source == "counter_delta" and g.per_position_source == "counter_delta"
        # the window's counter delta is exactly the category's own requests (nothing else ran in it)
        steps = sum(r.sd.steps for r in recs if r.sd)
        accepted = sum(r.sd.accepted for r in recs if r.sd)
        drafted = sum(r.sd.drafted for r in recs if r.sd)
        assert (g.steps, g.accepted, g.drafted) == (steps, accepted, drafted)
        assert g.acceptance_length_token_weighted == acceptance_length(accepted, steps)
    s = summary.per_category
    # the configured acceptance per category comes back (near the end of a reply drafts are capped)
    assert s["coding"].acceptance_length_token_weighted > 3.2
    assert s["qa"].acceptance_length_token_weighted < 1.6
    assert s["roleplay"].accepted == 0 and s["roleplay"].acceptance_length_token_weighted == 1.0
    assert summary.sources.acceptance_per_category == "counter_delta"
    assert all(i.ok is not False for i in summary.invariants), summary.failed_invariants
    names = [i.name for i in summary.invariants if i.name.startswith("per_request_vs_counter_delta")]
    assert sorted(names) == sorted(f"per_request_vs_counter_delta[segment 0 {c}]" for c in cats)
    assert summary.sd_check is not None and summary.sd_check.ok is True


def test_windows_and_a_mixed_run_agree_on_the_mock(tmp_path: Path) -> None:
    """The same conversations mixed or in windows: the same replies, the same acceptance per category (the mock's
    acceptance depends on the prompt and its category, not on what else is in the batch)."""
    mixed = asyncio.run(uc.run(_mock_cfg(tmp_path / "mixed", "off"))).result
    windowed = asyncio.run(uc.run(_mock_cfg(tmp_path / "windows", "on"))).result
    assert mixed.manifest.measurement is not None and mixed.manifest.measurement.mode == "mixed"
    for cat, g in windowed.summary.per_category.items():
        m = mixed.summary.per_category[cat]
        assert m.acceptance_source == "per_request"
        assert (g.steps, g.accepted, g.drafted) == (m.steps, m.accepted, m.drafted)
    assert mixed.manifest.counter_windows[0].category is None


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_an_interrupted_window_runs_again_whole_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "--engine", "mock", "-E", "step_ms=20", "-E", "ttft_ms=5", "--output-len", "48", "-n", "44"]
    args += ["-c", "4", "--per-category-windows", "on", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(speedbench_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    # stop inside a window: after the first windows finished and some records of the next one landed
    while time.monotonic() < deadline:
        if (out / "manifest.json").exists():
            m = json.loads((out / "manifest.json").read_text())
            done = {w["category"] for w in m.get("counter_windows", []) if w.get("complete")}
            landed = (
                {r["category"] for r in _records(out / "records.jsonl")} if (out / "records.jsonl").exists() else set()
            )
            if len(done) >= 2 and landed - done:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    first = json.loads((out / "manifest.json").read_text())
    finished = {w["category"] for w in first["counter_windows"] if w["complete"]}
    open_ = [w["category"] for w in first["counter_windows"] if not w["complete"]]
    assert len(finished) >= 2 and len(open_) == 1, first["counter_windows"]
    before = _records(out / "records.jsonl")
    cut = Counter(r["category"] for r in before)[open_[0]]
    assert cut >= 1

    p2 = subprocess.run(
        speedbench_cmd("run", "--resume", str(out), "--no-progress"), capture_output=True, text=True, timeout=300
    )
    assert p2.returncode == 0, p2.stdout + p2.stderr
    assert f"{cut} turns of unfinished category windows to run again" in p2.stdout
    result = load_run(out)
    # every turn once; the finished windows' records kept as written; the open window's sent again, whole
    assert len({(r.question_id, r.turn) for r in result.records}) == len(result.records)
    assert all(r.segment == 0 for r in result.records if r.category in finished)
    sent_before = {(r["question_id"], r["turn"]) for r in before if r["category"] == open_[0]}
    reran = [r for r in result.records if r.category == open_[0]]
    assert all(r.segment == 1 for r in reran)
    assert all(r.attempt == (1 if (r.question_id, r.turn) in sent_before else 0) for r in reran)
    assert len(result.superseded) == cut
    windows = result.manifest.counter_windows
    assert [w.category for w in windows if w.segment == 1 and w.category in finished] == []
    assert {w.category for w in windows if w.complete} == set(result.summary.per_category)
    g = result.summary.per_category[open_[0]]
    assert g.acceptance_source == "counter_delta"
    assert g.steps == sum(r.sd.steps for r in result.records if r.category == open_[0] and r.sd)
    assert all(i.ok is not False for i in result.summary.invariants), result.summary.failed_invariants


def test_attached_server_without_per_request_stats_gets_windows_and_a_wrong_label_is_caught(tmp_path: Path) -> None:
    """serve-mock drafting at k 3 without per-request stats, attached as vLLM with no --sd: auto measures each
    category in its own window, the label sd=none k=0 is flagged, and the figures use the server's k."""
    with serve_mock("--ttft-ms", "0", "--step-ms", "0", "-E", "per_request_stats=false") as url:
        common = ["run", "--engine", "vllm", "--base-url", url, "-n", "22", "-c", "4", "--output-len", "48"]
        auto = subprocess.run(
            speedbench_cmd(*common, "--out", str(tmp_path / "auto"), "--no-progress"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        mixed = subprocess.run(
            speedbench_cmd(*common, "--per-category-windows", "off", "--out", str(tmp_path / "mixed"), "--no-progress"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert auto.returncode == 0, auto.stdout + auto.stderr
    assert "per-category-windows=auto" in auto.stdout.splitlines()[0]
    assert "measuring: per-category counter windows" in auto.stdout
    assert "SD LABEL WRONG" in auto.stdout and "labelled sd=none k=0" in auto.stdout
    run = load_run(tmp_path / "auto")
    s = run.summary
    assert s.sd_check is not None and s.sd_check.ok is False
    assert (s.sd_check.server_drafted, s.sd_check.server_k, s.k) == (True, 3, 3)
    saved = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert saved["sd_check"]["ok"] is False and saved["sd_check"]["server_k"] == 3
    for cat, g in s.per_category.items():
        assert g.acceptance_source == "counter_delta", cat
        assert g.acceptance_length is None  # a mean over requests: no per-request stats, and chunks are not used
        assert g.acceptance_length_drafted_steps_token_weighted == acceptance_length(g.accepted, g.steps)
        assert len(g.conditional_acceptance_rate) == 3
    sources = column_sources(s)
    assert sources["acceptance_rate"].source == "counter_delta" and not sources["acceptance_rate"].why
    assert sources["acceptance_length"].source == ""
    # the same server measured mixed: per category only chunks, which the table does not show as AR or AL
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    m = load_run(tmp_path / "mixed").summary
    assert m.sources.acceptance_per_category == "chunks"
    cols = column_sources(m)
    assert cols["acceptance_rate"].source == "counter_delta" and cols["acceptance_rate"].why == CHUNKS_WHY
    assert cols["tokens_per_decode_step"].source == "chunks"  # tokens per chunk, under its own name


def _rec(sd: SDStats | None, category: str = "qa") -> RequestRecord:
    return RequestRecord(question_id="q", category=category, turn=0, start_ns=0, end_ns=1, sd=sd)


class _Engine:
    def __init__(self, per_request: bool, counters: bool = True) -> None:
        self.capabilities = Capabilities(per_request_sd_stats=per_request, counters=counters)


def test_auto_decides_from_the_warm_up_replies_and_the_counters() -> None:
    per_req = SDStats(drafted=6, accepted=3, steps=2)
    snap = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted_tokens": 0.0}
    engine: Any = _Engine(per_request=True)
    assert decide("auto", engine, [_rec(per_req)], snap)[0] == "mixed"
    assert decide("auto", engine, [_rec(None)], snap) == (
        "per_category_windows",
        "auto: the engine counts SD steps but its replies carry no per-request SD stats",
    )
    assert decide("auto", engine, [_rec(None)], None)[0] == "mixed"  # no counters: nothing to window
    assert decide("auto", engine, [], snap)[0] == "mixed"  # no warm-up: the declared capability
    assert decide("auto", _Engine(per_request=False), [], snap)[0] == "per_category_windows"  # type: ignore[arg-type]
    assert decide("on", engine, None, None)[0] == "per_category_windows"
    assert decide("off", engine, None, snap)[0] == "mixed"


def test_sd_label_check_by_hand() -> None:
    drafting = SDStats(drafted=30, accepted=12, steps=10, per_position=[6, 4, 2], source="counter_delta")
    assert server_k(drafting) == 3
    wrong = sd_check("none", 0, drafting, 5)
    assert wrong.ok is False and wrong.server_k == 3 and "-k 3" in wrong.detail
    assert sd_check("ngram", 3, drafting, 5).ok is True
    assert sd_check(None, 3, drafting, 5).ok is True  # no --sd: the engine's own default, drafting at k 3
    k_off = sd_check("ngram", 4, drafting, 5)
    assert k_off.ok is False and "pass -k 3" in k_off.detail
    idle = SDStats(drafted=0, accepted=0, steps=0, source="counter_delta")
    silent = sd_check("ngram", 3, idle, 5)
    assert silent.ok is False and silent.server_drafted is False
    assert sd_check("none", 0, idle, 5).ok is True
    assert sd_check("ngram", 3, None, 5).ok is None  # no counters: nothing to check


def test_launched_sd_that_contradicts_the_server_arguments_is_refused_before_launch(tmp_path: Path) -> None:
    from speedbench.engines.llamacpp import LlamaCppEngine
    from speedbench.engines.vllm import VLLMEngine

    base = {"launch": True, "model": str(tmp_path / "m"), "log_dir": str(tmp_path)}
    spec_cfg = '--speculative-config={"method":"ngram","num_speculative_tokens":5}'
    with pytest.raises(InvalidInput, match="--sd none, but --server-arg --speculative-config turns SD on"):
        VLLMEngine(EngineSpec(kind="vllm", sd="none", server_args=[spec_cfg], **base))
    with pytest.raises(InvalidInput, match="-k 3, but --server-arg --speculative-config has num_speculative_tokens 5"):
        VLLMEngine(EngineSpec(kind="vllm", sd="ngram", draft_length=3, server_args=[spec_cfg], **base))
    with pytest.raises(InvalidInput, match="runs method 'ngram'"):
        VLLMEngine(EngineSpec(kind="vllm", sd="eagle", draft_model="d", draft_length=5, server_args=[spec_cfg], **base))
    with pytest.raises(InvalidInput, match="--sd none, but --server-arg -md"):
        LlamaCppEngine(EngineSpec(kind="llamacpp", sd="none", server_args=["-md", "draft.gguf"], **base))


def test_per_category_windows_flag_refuses_other_values() -> None:
    p = subprocess.run(
        speedbench_cmd("run", "--engine", "mock", "--per-category-windows", "sometimes"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "per_category_windows: Input should be 'auto', 'on' or 'off'" in p.stderr


def test_reference_engine_windows_recover_each_categorys_per_request_acceptance(tmp_path: Path, tiny_pair_dirs) -> None:
    pytest.importorskip("torch")
    cfg = RunConfig(
        engine=EngineSpec(kind="reference", model=tiny_pair_dirs["target"], sd="ngram", options={"threads": "2"}),
        dataset={"num_requests": 11, "max_turns": 1},  # type: ignore[arg-type]
        concurrency=2,
        draft_length=3,
        output_len=24,
        warmup=0,
        out=str(tmp_path / "ref"),
        per_category_windows="on",
    )
    result = asyncio.run(uc.run(cfg)).result
    s = result.summary
    assert len(s.per_category) == 11 and len(result.manifest.counter_windows) == 11
    for cat, recs in _by_category(result.records).items():
        g = s.per_category[cat]
        assert g.acceptance_source == "counter_delta"
        own = [r.sd for r in recs if r.sd is not None]
        assert len(own) == len(recs) == g.requests
        # the window's counters are exactly this category's per-request stats
        assert (g.steps, g.drafted, g.accepted) == (
            sum(x.steps for x in own),
            sum(x.drafted for x in own),
            sum(x.accepted for x in own),
        )
    assert all(i.ok is not False for i in s.invariants), s.failed_invariants
