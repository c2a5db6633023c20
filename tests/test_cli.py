"""The command line end to end: files, tables, report, and one-line errors."""

import json
import os
import subprocess

import pytest
from typer.testing import CliRunner

from conftest import serve_mock, speedbench_cmd
from speedbench.cli import app
from speedbench.data.sample import PLACEHOLDER_PREFIX

runner = CliRunner()

OVERALL_KEYS = {
    "requests",
    "errors",
    "acceptance_length",
    "acceptance_length_token_weighted",
    "acceptance_rate",
    "conditional_acceptance_rate",
    "joint_acceptance_rate",
    "histogram",
    "ttft_s",
    "tpot_s",
    "itl_s",
    "step_time_s",
    "e2e_s",
    "user_tps",
    "output_tps",
}


def _check_run_dir(d, n_conversations=88):
    for name in ("manifest.json", "records.jsonl", "summary.json", "summary.csv"):
        assert (d / name).exists(), name
    summary = json.loads((d / "summary.json").read_text())
    assert set(summary["overall"]) >= OVERALL_KEYS
    assert len(summary["overall"]["conditional_acceptance_rate"]) == 3
    assert summary["per_category"] and all(
        "acceptance_length" in v and "requests" in v for v in summary["per_category"].values()
    )
    assert {"errors_by_cause", "sources", "invariants"} <= set(summary)
    assert "acceptance" in summary["sources"]
    assert all({"name", "ok", "detail"} <= set(i) for i in summary["invariants"])
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["dataset"]["content_hash"].startswith("sha256:")
    assert len(manifest["dataset"]["question_ids"]) == n_conversations
    records = [json.loads(line) for line in (d / "records.jsonl").read_text().splitlines()]
    keys = {(r["question_id"], r["turn"]) for r in records}
    assert len(keys) == len(records)
    return summary, manifest, records


def test_run_mock_88_then_report_recomputes_the_same(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "--engine",
            "mock",
            "--num-requests",
            "88",
            "--out",
            str(out),
            "-E",
            "step_ms=1",
            "-E",
            "ttft_ms=1",
            "--output-len",
            "64",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Acceptance per category" in res.output and "Timing" in res.output
    summary, manifest, records = _check_run_dir(out)
    assert set(summary["per_category"]) == {
        "coding",
        "humanities",
        "math",
        "multilingual",
        "qa",
        "rag",
        "reasoning",
        "roleplay",
        "stem",
        "summarization",
        "writing",
    }
    assert summary["overall"]["requests"] == len(records) == 121  # 88 conversations, 121 turns
    assert summary["sources"]["acceptance"] == "per_request"
    (out / "summary.json").unlink()
    res2 = runner.invoke(app, ["report", str(out)])
    assert res2.exit_code == 0, res2.output
    assert json.loads((out / "summary.json").read_text()) == summary
    # two run directories: paired comparison
    res3 = runner.invoke(app, ["report", str(out), str(out)])
    assert res3.exit_code == 0 and "1.00x" in res3.output


def test_run_openai_against_serve_mock_with_api_key_redacted(tmp_path):
    out = tmp_path / "http"
    env = {**os.environ, "OPENAI_API_KEY": "sk-very-secret-123"}
    with serve_mock("--ttft-ms", "1", "--step-ms", "1") as url:
        p = subprocess.run(
            speedbench_cmd(
                "run",
                "--engine",
                "openai",
                "--base-url",
                url,
                "--model",
                "mock",
                "--num-requests",
                "88",
                "--out",
                str(out),
                "--output-len",
                "64",
                "-E",
                "api_token=sk-other-secret",
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert p.returncode == 0, p.stderr + p.stdout
    assert "Acceptance per category" in p.stdout
    summary, manifest, _ = _check_run_dir(out)
    assert summary["overall"]["errors"] == 0
    assert any(i["name"].startswith("per_request_vs_counter_delta") and i["ok"] for i in summary["invariants"])
    for f in out.iterdir():
        text = f.read_text()
        assert "sk-very-secret-123" not in text and "sk-other-secret" not in text, f.name
    assert manifest["config"]["engine"]["options"]["api_token"] == "***"


def _one_line_error(args, match):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert match in lines[0], lines[0]
    return lines[0]


def test_one_line_errors(tmp_path):
    _one_line_error(["run", "--engine", "mokc", "--out", str(tmp_path / "a")], "did you mean 'mock'")
    _one_line_error(
        ["run", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "b")],
        "http://127.0.0.1:9/v1/models",
    )
    _one_line_error(["run", "-e", "mock", "-E", "acceptance", "--out", str(tmp_path / "c")], "expected key=value")
    _one_line_error(["run", "-e", "mock", "-E", "acceptance=1.5,0.2", "--out", str(tmp_path / "d")], "acceptance")
    _one_line_error(["run", "-e", "mock", "-E", "nonsense=1", "--out", str(tmp_path / "e")], "nonsense")
    _one_line_error(["run", "--dataset", str(tmp_path / "none.jsonl")], "none.jsonl: file not found")
    ph = tmp_path / "ph.jsonl"
    ph.write_text(json.dumps({"question_id": "x1", "category": "qa", "turns": [PLACEHOLDER_PREFIX + "..."]}) + "\n")
    _one_line_error(["run", "--dataset", str(ph)], f"{ph}:1: field turns[0]")
    _one_line_error(["data", "show", str(ph)], "placeholder")
    _one_line_error(["report", str(tmp_path / "missing")], "manifest.json: not found")


def test_data_show_and_engines():
    res = runner.invoke(app, ["data", "show"])
    assert res.exit_code == 0 and "summarization" in res.output and "88 samples" in res.output
    res = runner.invoke(app, ["engines"])
    assert res.exit_code == 0 and "mock" in res.output and "openai" in res.output


def test_existing_run_dir_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    args = [
        "run",
        "-e",
        "mock",
        "-n",
        "4",
        "--out",
        str(out),
        "-E",
        "step_ms=0",
        "-E",
        "ttft_ms=0",
        "--output-len",
        "8",
    ]
    assert runner.invoke(app, args).exit_code == 0
    line = _one_line_error(args, "--resume")
    assert str(out) in line


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_both_endpoints(tmp_path, endpoint):
    with serve_mock("--ttft-ms", "0", "--step-ms", "0") as url:
        res = runner.invoke(
            app,
            [
                "run",
                "--engine",
                "openai",
                "--base-url",
                url,
                "--endpoint",
                endpoint,
                "-n",
                "11",
                "--output-len",
                "32",
                "--out",
                str(tmp_path / endpoint),
            ],
        )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / endpoint / "summary.json").read_text())
    assert summary["overall"]["errors"] == 0 and summary["overall"]["requests"] >= 11
