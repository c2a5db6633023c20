"""The engine contract: engines built from one EngineSpec, -E options validated alike for every engine,
--sd refused by the engine that does not take it, the mock's --sd none, one engine serving several runs,
and the one --seed (the legacy dataset.seed still read)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.config import DatasetSpec, EngineSpec, RunConfig
from speedbench.engines.build import build_engine, open_engine
from speedbench.load.seeds import request_seed
from speedbench.results.rundir import RunDir
from speedbench.usecases.run import execute, finish, prepare

runner = CliRunner()


# ---- -E options: one validation for every engine --------------------------------------------------


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("mock", {}),
        ("reference", {}),  # refused at construction: no model is loaded
        ("openai", {"base_url": "http://127.0.0.1:9/v1"}),
        ("vllm", {"base_url": "http://127.0.0.1:9/v1"}),
        ("vllm", {"launch": True, "model": "org/m"}),
    ],
)
def test_a_typod_option_is_refused_naming_the_key_and_the_accepted_ones(kind, extra):
    with pytest.raises(ValueError) as ei:
        build_engine(EngineSpec(kind=kind, options={"tempreature": "0.5"}, **extra))
    line = str(ei.value)
    assert line.startswith(f"-E tempreature=0.5: unknown option for engine '{kind}' (accepted: ")
    assert "\n" not in line


@pytest.mark.parametrize(
    "kind, options, extra, accepted",
    [
        ("mock", {"k": "three"}, {}, "acceptance"),
        ("reference", {"threads": "two"}, {}, "ngram_max"),
        ("openai", {"chunks_are_steps": "perhaps"}, {"base_url": "http://127.0.0.1:9/v1"}, "api_token"),
        ("vllm", {"ngram_max": "4.5"}, {"base_url": "http://127.0.0.1:9/v1"}, "spec_config"),
        ("vllm", {"spec_config": "{not json"}, {"base_url": "http://127.0.0.1:9/v1"}, "per_request_metrics"),
        ("llamacpp", {"port": "-1"}, {"base_url": "http://127.0.0.1:9/v1"}, "ngram_n"),
    ],
)
def test_a_wrong_type_is_refused_in_one_line(kind, options, extra, accepted):
    with pytest.raises(ValueError) as ei:
        build_engine(EngineSpec(kind=kind, options=options, **extra))
    key, value = next(iter(options.items()))
    line = str(ei.value)
    assert line.startswith(f"-E {key}={value}: ") and f"engine '{kind}' accepts: " in line and accepted in line
    assert "\n" not in line


def test_cli_refuses_a_typod_option_before_anything_starts(tmp_path):
    res = runner.invoke(
        app,
        [
            "run",
            "--engine",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "-E",
            "tempreature=0.5",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith(
        "error: -E tempreature=0.5: unknown option for engine "
        "'openai' (accepted: api_token, chunks_are_steps, enable_thinking, body.FIELD)"
    )
    assert not (tmp_path / "r").exists()


# ---- --sd per engine --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("mock", {}),
        ("openai", {"base_url": "http://127.0.0.1:9/v1"}),
        ("reference", {}),
        ("llamacpp", {"base_url": "http://127.0.0.1:9/v1"}),
    ],
)
def test_an_sd_method_the_engine_does_not_take_is_refused(kind, extra):
    with pytest.raises(ValueError, match=f"--sd 'turbo' is not supported by engine '{kind}' "):
        build_engine(EngineSpec(kind=kind, sd="turbo", **extra))


def test_cli_refuses_sd_turbo_on_the_mock_and_writes_nothing(tmp_path):
    res = runner.invoke(app, ["run", "-e", "mock", "--sd", "turbo", "-n", "2", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--sd 'turbo' is not supported by engine 'mock'" in res.stderr
    assert not (tmp_path / "r" / "manifest.json").exists()


def test_mock_sd_none_is_k_0_no_drafts_and_al_1(tmp_path):
    out = tmp_path / "none"
    res = runner.invoke(
        app,
        [
            "run",
            "-e",
            "mock",
            "--sd",
            "none",
            "-n",
            "6",
            "--output-len",
            "24",
            "-E",
            "step_ms=0",
            "-E",
            "ttft_ms=0",
            "--no-progress",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 0
    o = summary["overall"]
    assert o["errors"] == 0 and o["acceptance_length"] == 1.0 and o["acceptance_length_token_weighted"] == 1.0
    assert o["drafted"] == 0 and o["accepted"] == 0 and o["steps"] > 0
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert all(r["sd"]["drafted"] == 0 and r["sd"]["histogram"] == [r["sd"]["steps"]] for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"]["sd"] == "none" and manifest["engine"]["k"] == 0
    with pytest.raises(ValueError, match="--sd none"):
        build_engine(EngineSpec(kind="mock", sd="none", options={"k": "3"}))


def test_mock_check_lossless_baseline_does_not_draft(tmp_path):
    from speedbench.usecases.check_lossless import check

    cfg = RunConfig(
        engine=EngineSpec(kind="mock", sd="ngram", options={"step_ms": "0", "ttft_ms": "0"}),
        dataset=DatasetSpec(num_requests=5),
        concurrency=4,
        output_len=32,
        out=str(tmp_path),
    )
    result = check(cfg)
    assert result["lossless"] is True and result["outputs"]["identical"] == 5
    base = json.loads((tmp_path / "baseline" / "summary.json").read_text())
    sd = json.loads((tmp_path / "sd" / "summary.json").read_text())
    assert base["k"] == 0 and base["overall"]["drafted"] == 0 and base["overall"]["acceptance_length"] == 1.0
    assert sd["k"] == 3 and sd["overall"]["acceptance_length"] > 1.5


# ---- one engine, several runs ------------------------------------------------------------------------


def _two_runs(spec: EngineSpec, tmp_path: Path, **cfg_kw) -> list[Path]:
    """Two runs in a row (different sizes and concurrency) on one started engine."""
    cfgs = [
        RunConfig(
            engine=spec,
            dataset=DatasetSpec(num_requests=n),
            concurrency=c,
            output_len=24,
            warmup=1,
            out=str(tmp_path / name),
            **cfg_kw,
        )
        for name, n, c in (("first", 4, 2), ("second", 6, 3))
    ]
    shared = cfgs[0].engine_spec().model_copy(update={"max_concurrency": 3, "log_dir": str(tmp_path)})

    async def go() -> list[Path]:
        dirs = []
        async with open_engine(shared) as engine:
            for cfg in cfgs:
                cfg, run_dir, samples, done, manifest = prepare(cfg, None)
                assert await execute(cfg, run_dir, samples, done, manifest, engine=engine) == "complete"
                dirs.append(run_dir.path)
        return dirs

    dirs = asyncio.run(go())
    for d in dirs:
        finish(RunDir(d))
    return dirs


def _check_run(d: Path, conversations: int) -> dict:
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["dataset"]["question_ids"]) == conversations
    summary = json.loads((d / "summary.json").read_text())
    records = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
    assert summary["overall"]["errors"] == 0 and summary["overall"]["requests"] == len(records) > 0
    inv = {i["name"]: i for i in summary["invariants"]}
    # the counters are this run's window only: they equal its own requests' sums, not the engine's totals
    assert inv["per_request_vs_counter_delta[segment 0]"]["ok"] is True, inv
    assert summary["counter_delta"]["steps"] == sum(r["sd"]["steps"] for r in records)
    assert summary["counter_delta"]["accepted"] == sum(r["sd"]["accepted"] for r in records)
    return manifest


def test_one_mock_engine_serves_two_runs_in_a_row(tmp_path):
    first, second = _two_runs(EngineSpec(kind="mock", options={"step_ms": "0", "ttft_ms": "0"}), tmp_path)
    m1, m2 = _check_run(first, 4), _check_run(second, 6)
    assert m1["engine"]["k"] == m2["engine"]["k"] == 3


def test_one_launched_server_serves_two_runs_and_is_stopped_once(tmp_path, monkeypatch):
    from test_engine_adapters import MOCK_AS_VLLM, _alive, _fake_python

    fake = _fake_python(tmp_path, MOCK_AS_VLLM)  # a stand-in "vLLM": serve-mock behind the vLLM launcher
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_PIDFILE", str(pidfile))
    monkeypatch.setenv("REAL_PY", sys.executable)
    spec = EngineSpec(kind="vllm", launch=True, model="fake-model", sd="ngram", server_bin=fake)
    first, second = _two_runs(spec, tmp_path)
    m1, m2 = _check_run(first, 4), _check_run(second, 6)
    assert m1["engine"]["server"] == m2["engine"]["server"]  # the same server, started once
    assert m1["engine"]["server"]["log"] == str(tmp_path / "server.log")
    assert "--max-num-seqs 3" in m1["engine"]["server"]["command"]  # sized for the larger run
    log = (tmp_path / "server.log").read_text()
    assert log.count("fake vLLM starting") == 1 and "server stopped" in log
    assert not _alive(int(pidfile.read_text()))


# ---- the one seed ------------------------------------------------------------------------------------


def test_request_seed_is_stable_across_processes_and_depends_on_each_input():
    code = "from speedbench.load.seeds import request_seed; print(request_seed(7, 'q1', 1))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": h},
        ).stdout.strip()
        for h in ("1", "2")
    }
    assert outs == {str(request_seed(7, "q1", 1))}
    seeds = {request_seed(s, q, t) for s in (0, 1) for q in ("q1", "q2") for t in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**31 for s in seeds)


def test_legacy_dataset_seed_is_the_one_seed():
    assert RunConfig.model_validate({"dataset": {"name": "starter", "seed": 5}, "seed": 0}).seed == 5
    assert RunConfig.model_validate({"dataset": {"name": "starter", "seed": 5}}).dataset.name == "starter"
    with pytest.raises(ValueError, match="disagree"):
        RunConfig.model_validate({"dataset": {"seed": 5}, "seed": 6})


def test_resume_reads_a_manifest_with_the_legacy_dataset_seed(tmp_path):
    out = tmp_path / "r"
    args = [
        "run",
        "-e",
        "mock",
        "-n",
        "6",
        "--seed",
        "4",
        "--out",
        str(out),
        "-E",
        "step_ms=0",
        "-E",
        "ttft_ms=0",
        "--output-len",
        "8",
        "--no-progress",
    ]
    assert runner.invoke(app, args).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 4
    # the form written before the one seed: the pick's seed under dataset, an unused top-level seed 0
    manifest["config"]["dataset"]["seed"] = manifest["config"].pop("seed")
    manifest["config"]["seed"] = 0
    manifest["status"] = "interrupted"
    (out / "manifest.json").write_text(json.dumps(manifest))
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[:-3]))
    res = runner.invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["status"] == "complete" and resumed["config"]["seed"] == 4
    assert len((out / "records.jsonl").read_text().splitlines()) == len(lines)


SAMPLED_RUN = """
import json, sys
from typer.testing import CliRunner
from speedbench.cli import app
model, out = sys.argv[1], sys.argv[2]
result = {}
for c in (1, 2):
    res = CliRunner().invoke(app, ["run", "--model", model, "--sd", "ngram", "--temperature", "0.7", "-n", "3",
                                   "--output-len", "10", "-c", str(c), "--warmup", "0", "--seed", "11",
                                   "-E", "threads=1", "--no-progress", "--out", f"{out}/c{c}"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in open(f"{out}/c{c}/records.jsonl")]
    result[c] = {f"{r['question_id']}/{r['turn']}": r["output_token_ids"] for r in recs}
print(json.dumps(result))
"""


def test_a_sampled_reference_run_is_identical_in_two_processes(tmp_path, tiny_pair_dirs):
    """Sampling seeds come from (seed, question id, turn) through sha256, so two processes (with different
    str hash salts) sample the same tokens, at concurrency 1 and 2."""
    outs = []
    for salt in ("1", "2"):
        p = subprocess.run(
            [sys.executable, "-c", SAMPLED_RUN, tiny_pair_dirs["target"], str(tmp_path / salt)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONHASHSEED": salt},
        )
        assert p.returncode == 0, p.stderr[-3000:]
        outs.append(json.loads(p.stdout.splitlines()[-1]))
    assert outs[0] == outs[1]
    for c in ("1", "2"):
        assert len(outs[0][c]) >= 3 and all(len(ids) == 10 for ids in outs[0][c].values())
