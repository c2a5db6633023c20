"""`speedbench sweep`: the grid, launch groups, pairing, resume, failed cells, the TOML file (docs/sweep.md).

Everything runs against the in-process mock engine (fast: -E step_ms=1 -E ttft_ms=1, small -n, --output-len 16);
the attached case against serve-mock."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import serve_mock, speedbench_cmd
from speedbench.cli import app
from speedbench.config import EngineSpec, RunConfig
from speedbench.results.loader import load_run
from speedbench.results.rundir import RunDirError
from speedbench.results.sweep_manifest import SweepGrid, read_sweep
from speedbench.usecases.sweep import plan as plan_uc
from speedbench.usecases.sweep import runner as uc

runner = CliRunner()
FAST = ["--engine", "mock", "-E", "step_ms=1", "-E", "ttft_ms=1", "-n", "4", "--output-len", "16"]
# the grid of the subprocess sweeps: baseline + ngram k1, at concurrency 1 and 2 (4 cells, 2 launch groups)
GRID = ["--sd", "ngram", "-k", "1", "-c", "1,2"]
CELLS = [
    "sd-none_k-0_c-1_ds-starter",
    "sd-none_k-0_c-2_ds-starter",
    "sd-ngram_k-1_c-1_ds-starter",
    "sd-ngram_k-1_c-2_ds-starter",
]


def _config(kind: str, launch: bool = False, **grid) -> plan_uc.SweepConfig:
    engine = EngineSpec(kind=kind, launch=launch, model="m.gguf" if launch else None)
    defaults = {"concurrency": [1, 4], "draft_length": [1, 2], "sd": ["ngram"]}
    return plan_uc.SweepConfig(grid=SweepGrid(**{**defaults, **grid}), run=RunConfig(engine=engine))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _keys(sweep_dir: Path) -> set[tuple[str, str, int]]:
    return {
        (cell.name, r["question_id"], r["turn"])
        for cell in sorted((sweep_dir / "cells").iterdir())
        for r in _records(cell / "records.jsonl")
    }


# ---------------------------------------------------------------------------------------------- the grid


def test_grid_expansion_and_vllm_like_launch_groups(tmp_path):
    """sd [ngram] x k [1,2] x c [1,4] + the baseline: 6 cells; vLLM (batch cap only) shares one server per SD
    setting: 3 launch groups, each sized for concurrency 4."""
    cells, groups = plan_uc.expand(_config("vllm", launch=True), tmp_path)
    assert [c.id for c in cells] == [
        "sd-none_k-0_c-1_ds-starter",
        "sd-none_k-0_c-4_ds-starter",
        "sd-ngram_k-1_c-1_ds-starter",
        "sd-ngram_k-1_c-4_ds-starter",
        "sd-ngram_k-2_c-1_ds-starter",
        "sd-ngram_k-2_c-4_ds-starter",
    ]
    assert [(g.id, g.max_concurrency, g.cells) for g in groups] == [
        ("sd-none_k-0", 4, ("sd-none_k-0_c-1_ds-starter", "sd-none_k-0_c-4_ds-starter")),
        ("sd-ngram_k-1", 4, ("sd-ngram_k-1_c-1_ds-starter", "sd-ngram_k-1_c-4_ds-starter")),
        ("sd-ngram_k-2", 4, ("sd-ngram_k-2_c-1_ds-starter", "sd-ngram_k-2_c-4_ds-starter")),
    ]
    assert [(g.spec.sd, g.spec.draft_length, g.spec.max_concurrency) for g in groups] == [
        ("none", 0, 4),
        ("ngram", 1, 4),
        ("ngram", 2, 4),
    ]
    # a launched server logs into its group's folder; every cell records the group's batch cap
    assert groups[1].spec.log_dir == str(tmp_path / "groups" / "sd-ngram_k-1")
    by_id = {c.id: c for c in cells}
    cell = by_id["sd-ngram_k-2_c-1_ds-starter"]
    assert cell.cfg.concurrency == 1 and cell.cfg.draft_length == 2 and cell.cfg.engine.max_concurrency == 4
    assert cell.cfg.out == str(tmp_path / "cells" / cell.id) and cell.cfg.output_len == 256
    assert cell.baseline == "sd-none_k-0_c-1_ds-starter" and by_id[cell.baseline].baseline is None
    assert by_id["sd-none_k-0_c-4_ds-starter"].cfg.engine.sd == "none"
    # the mock only caps the batch too
    _, mock_groups = plan_uc.expand(_config("mock"), tmp_path)
    assert [(g.id, g.max_concurrency) for g in mock_groups] == [(g.id, 4) for g in groups]


@pytest.mark.parametrize("kind, launch", [("reference", False), ("llamacpp", True)])
def test_engines_whose_batch_cap_changes_the_measure_start_once_per_concurrency(tmp_path, kind, launch):
    cells, groups = plan_uc.expand(_config(kind, launch), tmp_path)
    assert len(cells) == 6 and len(groups) == 6
    assert [(g.id, g.max_concurrency) for g in groups] == [
        ("sd-none_k-0_c-1", 1),
        ("sd-none_k-0_c-4", 4),
        ("sd-ngram_k-1_c-1", 1),
        ("sd-ngram_k-1_c-4", 4),
        ("sd-ngram_k-2_c-1", 1),
        ("sd-ngram_k-2_c-4", 4),
    ]
    assert all(len(g.cells) == 1 and g.per_concurrency for g in groups)
    # attached, llama.cpp is what it is: no relaunch
    assert plan_uc.relaunch_per_concurrency(EngineSpec(kind="llamacpp", base_url="http://x/v1")) is False
    assert plan_uc.relaunch_per_concurrency(EngineSpec(kind="vllm", launch=True)) is False


def test_engine_option_axis_datasets_and_the_baseline_per_combination(tmp_path):
    config = _config(
        "mock",
        concurrency=[2],
        draft_length=[3],
        dataset=["starter", "speed:throughput_1k"],
        engine_options={"fail_500": [0, "0.5"]},
    )
    cells, groups = plan_uc.expand(config, tmp_path)
    # (baseline + ngram k3) x 2 option values x 2 datasets x 1 concurrency
    assert len(cells) == 8 and len(groups) == 4
    ids = {c.id for c in cells}
    assert "sd-ngram_k-3_c-2_ds-speed-throughput-1k_E-fail-500=0.5" in ids
    sd_cell = next(c for c in cells if c.id == "sd-ngram_k-3_c-2_ds-starter_E-fail-500=0.5")
    assert sd_cell.baseline == "sd-none_k-0_c-2_ds-starter_E-fail-500=0.5"
    assert sd_cell.cfg.engine.options == {"fail_500": "0.5"} and sd_cell.settings.engine_options == {"fail_500": "0.5"}
    # ignore_eos by default on throughput (and synthetic) datasets only; an explicit choice holds everywhere
    assert {c.settings.dataset: c.cfg.ignore_eos for c in cells} == {"starter": False, "speed:throughput_1k": True}
    explicit = config.model_copy(update={"ignore_eos": False})
    assert not any(c.cfg.ignore_eos for c in plan_uc.expand(explicit, tmp_path)[0])
    assert plan_uc.fixed_length_dataset("/data/synthetic-isl1000.jsonl") and not plan_uc.fixed_length_dataset("mtbench")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"grid": {"concurency": [1]}}, "grid.concurency: unknown key"),
        ({"grid": {"draft_length": [0, 1]}}, "grid.draft_length: every draft length must be >= 1"),
        ({"grid": {"concurrency": ["x"]}}, "grid.concurrency.0: Input should be a valid integer"),
        ({"run": {"concurrency": 4}}, "run.concurrency: set by the sweep (grid.concurrency (--concurrency))"),
        ({"run": {"dataset": {"name": "starter"}}}, "run.dataset.name: set by the sweep"),
        ({"run": {"engine": {"kind": "mock", "options": {"k": 2}}}}, "-E k: the grid sets the draft length"),
        ({"run": {"engine": {"kind": "mock"}}, "grid": {"sd": ["turbo"]}}, "--sd 'turbo' is not supported"),
        (
            {"run": {"engine": {"kind": "openai", "base_url": "http://h/v1"}}, "grid": {"draft_length": [3]}},
            "attached to one server (--base-url): only concurrency and dataset can vary, but the grid has 2 SD "
            "settings (none, ngram:k3)",
        ),
        ({"run": {"engine": {"kind": "openai"}}, "urls": {"ngram:k3": "http://h/v1"}}, "urls: no 'none' server"),
        ({"run": {"engine": {"kind": "openai"}}, "urls": {"ngram3": "http://h/v1"}}, "expected 'none' or METHOD:kK"),
        (
            {"run": {"engine": {"kind": "openai"}}, "grid": {"sd": ["ngram"]}, "urls": {"none": "http://h/v1"}},
            "the SD settings are the URLs' keys",
        ),
    ],
)
def test_bad_configs_are_refused_in_one_line_naming_the_field(data, message):
    with pytest.raises(plan_uc.SweepConfigError) as e:
        plan_uc.sweep_config(data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_one_server_per_sd_setting_gives_the_settings():
    config = plan_uc.sweep_config(
        {"run": {"engine": {"kind": "openai"}}, "urls": {"ngram:k3": "http://b/v1", "none": "http://a/v1"}}
    )
    assert [(s.sd, s.k, s.url) for s in plan_uc.sd_settings(config)] == [
        ("none", 0, "http://a/v1"),
        ("ngram", 3, "http://b/v1"),
    ]


# ---------------------------------------------------------------------------------------------- the command


def test_plan_prints_the_cells_and_starts_nothing(tmp_path, monkeypatch):
    from speedbench.engines.mock import MockEngine

    async def boom(self):
        raise AssertionError("--plan started an engine")

    monkeypatch.setattr(MockEngine, "start", boom)
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["sweep", *FAST, "-c", "1,4", "-k", "1,2", "--out", str(out), "--plan"])
    assert res.exit_code == 0, res.output
    for cell in ["sd-none_k-0_c-1_ds-starter", "sd-ngram_k-2_c-4_ds-starter"]:
        assert cell in res.output
    assert "6 cells in 3 launch groups" in res.output
    # warm-up: the default is one full wave per cell (1 at c 1, 4 at c 4; 3 SD settings): 15 (it was 2 per cell)
    assert "work: 6 cells, 3 engine starts, 42 requests (+15 warm-up), at most 672 output tokens" in res.output
    assert "rough: the mock engine's own timing settings" in res.output
    assert "nothing was started" in res.output
    assert not out.exists()


def test_toml_file_with_flags_overriding_it(tmp_path):
    toml = tmp_path / "sweep.toml"
    toml.write_text(
        """
[grid]
concurrency = [1, 2]
draft_length = [1, 2, 3]
sd = ["ngram"]
[grid.engine_options]
fail_500 = [0]

[run]
output_len = 16
warmup = 0
[run.engine]
kind = "mock"
[run.engine.options]
step_ms = 1
ttft_ms = 5
[run.dataset]
num_requests = 4
"""
    )
    res = runner.invoke(
        app, ["sweep", "--config", str(toml), "-c", "8", "-E", "ttft_ms=1", "--out", str(tmp_path / "s"), "--plan"]
    )
    assert res.exit_code == 0, res.output
    # --concurrency replaced the file's list; the file's k list and engine option axis stay
    assert "4 cells in 4 launch groups" in res.output
    assert "sd-ngram_k-3_c-8_ds-starter_E-fail-500=0" in res.output and "_c-1_" not in res.output
    config = plan_uc.sweep_config(
        plan_uc.merge(plan_uc.read_toml(toml), {"run": {"engine": {"options": {"ttft_ms": "1"}}}})
    )
    assert config.run.engine.options == {"step_ms": "1", "ttft_ms": "1"} and config.run.output_len == 16
    assert config.grid.draft_length == [1, 2, 3] and config.run.warmup == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("[grid\nconcurrency = [1]\n", "invalid TOML"),
        ("[grid]\nconcurency = [1]\n", "grid.concurency: unknown key"),
        ("[run]\nconcurrency = 4\n", "run.concurrency: set by the sweep"),
        ("[run.engine]\nkind = 'nosuch'\n", "unknown engine 'nosuch'"),
    ],
)
def test_bad_toml_or_unknown_key_exits_2_in_one_line(tmp_path, text, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    res = runner.invoke(app, ["sweep", "--config", str(toml), "--plan"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """A whole sweep in a subprocess, as a user runs it (stdout not a terminal)."""
    out = tmp_path_factory.mktemp("sweeps") / "whole"
    proc = subprocess.run(
        speedbench_cmd("sweep", *FAST, *GRID, "--out", str(out)), capture_output=True, text=True, timeout=300
    )
    return out, proc


def test_a_sweep_writes_ordinary_run_directories_and_a_complete_sweep_json(undisturbed):
    out, proc = undisturbed
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = read_sweep(out)
    assert manifest.status == "complete" and [c.id for c in manifest.cells] == CELLS
    assert all(c.status == "complete" and c.records == 7 and c.errors == 0 for c in manifest.cells)
    assert [(g.id, g.starts, g.max_concurrency) for g in manifest.groups] == [
        ("sd-none_k-0", 1, 2),
        ("sd-ngram_k-1", 1, 2),
    ]
    assert manifest.engine_versions["engine"] == "mock" and "speedbench" in manifest.engine_versions
    runs = {c.id: load_run(out / c.dir) for c in manifest.cells}
    for c in manifest.cells:
        run = runs[c.id]
        assert run.manifest.status == "complete" and run.summary.overall.requests == 7
        assert run.manifest.config.concurrency == c.settings.concurrency
        assert run.manifest.k == c.settings.k and run.manifest.config.engine.max_concurrency == 2
        # one engine served the group's cells: each run's counter window still matches its own requests
        assert not [i for i in run.summary.invariants if i.ok is False], run.summary.invariants
    # paired by construction: each SD cell's baseline ran the same prompts at the same concurrency and length
    for c in manifest.cells:
        if c.settings.sd == "none":
            continue
        a, b = runs[c.baseline].manifest, runs[c.id].manifest
        assert a.dataset.question_ids == b.dataset.question_ids and a.dataset.content_hash == b.dataset.content_hash
        assert a.config.concurrency == b.config.concurrency and a.config.output_len == b.config.output_len
        assert a.config.ignore_eos == b.config.ignore_eos
    assert runs[CELLS[2]].summary.overall.acceptance_length > 1.0 == runs[CELLS[0]].summary.overall.acceptance_length
    # progress without a terminal: one line per cell start and finish, no bar, no control characters
    lines = proc.stdout.splitlines()
    assert sum(" running, " in line for line in lines) == 4 and sum(": complete, " in line for line in lines) == 4
    assert "[4/4] sd-ngram_k-1_c-2_ds-starter: complete, 7 requests, 0 errors, AL" in proc.stdout
    assert "ETA" in proc.stdout and "\r" not in proc.stdout and "\x1b" not in proc.stdout


def test_ctrl_c_mid_sweep_then_resume_finishes_it(tmp_path, undisturbed):
    out = tmp_path / "sweep"
    args = ["sweep", "--engine", "mock", "-E", "step_ms=20", "-E", "ttft_ms=5", "-n", "4", "--output-len", "16"]
    proc = subprocess.Popen(
        speedbench_cmd(*args, *GRID, "--warmup", "0", "--out", str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    running = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            m = read_sweep(out)
        except Exception:  # not written yet
            time.sleep(0.05)
            continue
        done = [c for c in m.cells if c.status == "complete"]
        running = next((c for c in m.cells if c.status == "running"), None)
        rec = out / "cells" / running.id / "records.jsonl" if running else None
        if done and rec is not None and rec.exists() and len(rec.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert running is not None
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert f"speedbench sweep --resume {out}" in output
    m = read_sweep(out)
    assert m.status == "interrupted"
    by_status = {c.id: c.status for c in m.cells}
    assert by_status[running.id] == "interrupted" and "pending" in by_status.values()
    complete = [cid for cid, s in by_status.items() if s == "complete"]
    before = {cid: (out / "cells" / cid / "records.jsonl").read_bytes() for cid in complete}
    cut = _records(out / "cells" / running.id / "records.jsonl")
    assert 2 <= len(cut) < 7

    res = runner.invoke(app, ["sweep", "--resume", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    m = read_sweep(out)
    assert m.status == "complete" and all(c.status == "complete" for c in m.cells)
    assert len(m.resumed_utc) == 1
    # finished cells were not run again
    assert {cid: (out / "cells" / cid / "records.jsonl").read_bytes() for cid in complete} == before
    assert all(m.cell(cid).segments == 1 for cid in complete)
    # the interrupted cell was finished through run --resume: its records kept, the rest in segment 1
    resumed = _records(out / "cells" / running.id / "records.jsonl")
    assert resumed[: len(cut)] == cut and {r["segment"] for r in resumed[len(cut) :]} == {1}
    assert m.cell(running.id).segments == 2 and load_run(out / "cells" / running.id).manifest.resumed_utc
    # the same (cell, question_id, turn) as a sweep that was never interrupted
    whole, proc_whole = undisturbed
    assert proc_whole.returncode == 0
    assert _keys(out) == _keys(whole) and len(_keys(out)) == 4 * 7


def test_a_failed_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *FAST, "--sd", "ngram", "-k", "1", "-c", "2", "-G", "fail_500=0", "-G", "fail_500=1"]
    res = runner.invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 1, res.output
    m = read_sweep(out)
    assert m.status == "failed"
    status = {c.id: (c.status, c.cause) for c in m.cells}
    assert [c.id for c in m.cells if c.status == "complete"] == [
        "sd-none_k-0_c-2_ds-starter_E-fail-500=0",
        "sd-ngram_k-1_c-2_ds-starter_E-fail-500=0",
    ]
    failed = status["sd-ngram_k-1_c-2_ds-starter_E-fail-500=1"]
    assert failed[0] == "failed" and "every request failed" in failed[1] and "http_500" in failed[1]
    assert m.cell("sd-ngram_k-1_c-2_ds-starter_E-fail-500=1").verdict == failed[1]
    assert "sweep FAILED: 2 of 4 cells not complete" in res.output
    # --resume leaves failed cells alone (exit 1 again); --retry-failed runs them again through run --resume
    again = runner.invoke(app, ["sweep", "--resume", str(out), "--no-progress"])
    assert again.exit_code == 1 and " running" not in again.output, again.output
    retry = runner.invoke(app, ["sweep", "--resume", str(out), "--retry-failed", "--no-progress"])
    assert retry.exit_code == 1, retry.output
    m = read_sweep(out)
    assert [c.segments for c in m.cells] == [1, 2, 1, 2]
    rec = _records(out / "cells" / "sd-ngram_k-1_c-2_ds-starter_E-fail-500=1" / "records.jsonl")
    assert {r["attempt"] for r in rec} == {0, 1}


def test_resume_refuses_flags_that_would_change_the_sweep(tmp_path):
    out = tmp_path / "sweep"
    assert runner.invoke(app, ["sweep", *FAST, "--sd", "none", "-c", "1", "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["sweep", "--resume", str(out), "-c", "4"])
    assert res.exit_code == 2 and "--concurrency with --resume" in res.output
    again = runner.invoke(app, ["sweep", *FAST, "--sd", "none", "-c", "1", "--out", str(out)])
    assert again.exit_code == 2 and "already holds a sweep" in again.output


# ---------------------------------------------------------------------------------------------- launch groups


def _plan(tmp_path, **grid) -> plan_uc.SweepPlan:
    run = RunConfig(
        engine=EngineSpec(kind="mock", options={"step_ms": "1", "ttft_ms": "1"}),
        output_len=16,
        warmup=0,
        dataset={"num_requests": 2},
    )
    defaults = {"concurrency": [1, 2, 4], "draft_length": [2], "sd": ["ngram"]}
    return plan_uc.build_plan(plan_uc.SweepConfig(grid=SweepGrid(**{**defaults, **grid}), run=run), tmp_path / "sweep")


def test_a_launch_group_opens_its_engine_once(tmp_path, monkeypatch):
    from speedbench.engines.mock import MockEngine
    from speedbench.usecases import run as run_uc

    opened: list[tuple[str | None, int | None]] = []
    started: list[int] = []
    real_open, real_start = run_uc.open_engine, MockEngine.start

    def counting_open(spec):
        opened.append((spec.sd, spec.max_concurrency))
        return real_open(spec)

    async def counting_start(self):
        started.append(id(self))
        await real_start(self)

    monkeypatch.setattr(run_uc, "open_engine", counting_open)
    monkeypatch.setattr(MockEngine, "start", counting_start)
    plan = _plan(tmp_path)
    sdir, manifest = plan_uc.create(plan)
    final = uc.run_sweep(plan, sdir, manifest)
    assert uc.exit_status(final) == 0 and len(final.cells) == 6
    assert opened == [("none", 4), ("ngram", 4)] and len(started) == 2
    assert [g.starts for g in final.groups] == [1, 1]
    # every cell of a group ran on the one engine, sized for the group's largest concurrency
    for c in final.cells:
        run = load_run(sdir.path / c.dir)
        assert (
            run.manifest.config.engine.max_concurrency == 4
            and run.manifest.config.concurrency == c.settings.concurrency
        )


def test_an_engine_that_does_not_start_fails_its_group_only(tmp_path, monkeypatch):
    from speedbench.engines.errors import EngineStartError
    from speedbench.engines.mock import MockEngine

    real_start = MockEngine.start

    async def start(self):
        if self.sd != "none":
            raise EngineStartError("server exited during start-up (exit 1)")
        await real_start(self)

    monkeypatch.setattr(MockEngine, "start", start)
    plan = _plan(tmp_path, concurrency=[1, 2])
    sdir, manifest = plan_uc.create(plan)
    events: list[str] = []
    final = uc.run_sweep(plan, sdir, manifest, on_event=lambda ev: events.append(ev.kind))
    assert uc.exit_status(final) == 1 and final.status == "failed"
    assert [c.status for c in final.cells] == ["complete", "complete", "failed", "failed"]
    assert final.cells[2].cause == "engine start failed: EngineStartError: server exited during start-up (exit 1)"
    assert final.group("sd-ngram_k-2").start_error == final.cells[2].cause
    assert "group_failed" in events and events.count("cell_done") == 2


def test_attached_one_server_per_sd_setting(tmp_path):
    out = tmp_path / "sweep"
    with serve_mock("--step-ms", "1", "--ttft-ms", "1") as url:
        res = runner.invoke(
            app,
            [
                "sweep",
                "--engine",
                "openai",
                "--url",
                f"none={url}",
                "--url",
                f"ngram:k3={url}",
                "-c",
                "1,2",
                "-n",
                "3",
                "--output-len",
                "16",
                "--warmup",
                "0",
                "--out",
                str(out),
                "--no-progress",
            ],
        )
    assert res.exit_code == 0, res.output
    m = read_sweep(out)
    assert [c.id for c in m.cells] == [
        "sd-none_k-0_c-1_ds-starter",
        "sd-none_k-0_c-2_ds-starter",
        "sd-ngram_k-3_c-1_ds-starter",
        "sd-ngram_k-3_c-2_ds-starter",
    ]
    assert [g.id for g in m.groups] == ["sd-none_k-0", "sd-ngram_k-3"] and m.urls == {"none": url, "ngram:k3": url}
    run = load_run(out / m.cells[3].dir)
    assert run.manifest.config.engine.base_url == url and run.manifest.engine.sd == "ngram"
    assert m.cells[3].baseline == "sd-none_k-0_c-2_ds-starter"


def test_secrets_stay_out_of_sweep_json_and_resume_needs_the_credentials_again(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sweep-secret-key")
    url = "http://user:pw-sweep-secret@127.0.0.1:9/v1"
    config = plan_uc.sweep_config(
        {"grid": {"concurrency": [1]}, "urls": {"none": url, "ngram:k2": url}, "run": {"engine": {"kind": "openai"}}}
    )
    plan = plan_uc.build_plan(config, tmp_path / "sweep")
    sdir, _ = plan_uc.create(plan)
    text = sdir.sweep_path.read_text()
    assert "pw-sweep-secret" not in text and "sk-sweep-secret-key" not in text and "***@127.0.0.1" in text
    with pytest.raises(RunDirError, match="credentials that are not saved: pass it again"):
        plan_uc.resume_plan(sdir.path)
    again = plan_uc.SweepConfig(urls={"none": url, "ngram:k2": url})
    plan2, _, saved = plan_uc.resume_plan(sdir.path, again)
    assert plan2.cell("sd-ngram_k-2_c-1_ds-starter").cfg.engine.base_url == url and saved.status == "created"


def test_a_second_process_on_a_running_sweep_is_refused(tmp_path):
    plan = _plan(tmp_path, concurrency=[1])
    sdir, manifest = plan_uc.create(plan)
    with sdir.lock():  # another process running it
        res = runner.invoke(app, ["sweep", "--resume", str(sdir.path), "--no-progress"])
    assert res.exit_code == 2 and "is being run by another speedbench sweep" in res.output, res.output
    assert read_sweep(sdir.path).status == "created" and not (sdir.path / "cells").exists()
