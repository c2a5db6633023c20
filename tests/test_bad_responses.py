"""End to end against a misbehaving OpenAI-style server (tests/bad_server.py): responses that are not what they
claim are refused at start or recorded with a cause naming what came back, never as ``reset``,
``client_exception`` or "Expecting value", and a failed start prints no "Unclosed connector" noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bad_server import running_server  # noqa: E402
from conftest import speedbench_cmd  # noqa: E402


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with running_server() as url:
        yield url


def _run(root: str, mode: str, out: Path, model: str = "m") -> subprocess.CompletedProcess[str]:
    args = ["run", "--engine", "openai", "--base-url", f"{root}/{mode}/v1", "--model", model, "-n", "2"]
    args += ["--output-len", "8", "--warmup", "0", "--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(speedbench_cmd(*args), capture_output=True, text=True, env=env, timeout=180, check=False)
    assert "Unclosed" not in p.stdout + p.stderr, p.stderr
    return p


def _errors(out: Path) -> list[dict[str, str]]:
    lines = (out / "records.jsonl").read_text().splitlines()
    return [e for e in (json.loads(line).get("error") for line in lines if line.strip()) if e]


def test_models_not_json_refused_at_start(root: str, tmp_path: Path) -> None:
    p = _run(root, "models-html", tmp_path / "run")
    assert p.returncode == 2
    err = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("error:")]
    assert len(err) == 1, p.stdout + p.stderr
    assert "did not answer JSON" in err[0] and "text/html" in err[0] and "<!DOCTYPE html>" in err[0]
    assert "Expecting value" not in p.stdout + p.stderr


def test_wrong_model_refused_at_start(root: str, tmp_path: Path) -> None:
    p = _run(root, "wrong-model", tmp_path / "run", model="x")
    assert p.returncode == 2
    assert f"--model 'x' is not served by {root}/wrong-model/v1 (it serves: a, b)" in p.stdout + p.stderr
    assert not (tmp_path / "run" / "records.jsonl").exists() or not _errors(tmp_path / "run")


@pytest.mark.parametrize(
    ("mode", "content_type", "head"),
    [("chat-html", "text/html", "<!DOCTYPE html>"), ("chat-json", "application/json", '"chat.completion"')],
)
def test_200_that_is_not_a_stream(root: str, tmp_path: Path, mode: str, content_type: str, head: str) -> None:
    p = _run(root, mode, tmp_path / "run")
    assert p.returncode != 0
    errors = _errors(tmp_path / "run")
    assert Counter(e["cause"] for e in errors) == {"not_streaming": 2, "prior_turn_failed": 2}
    for e in errors:
        if e["cause"] == "not_streaming":
            assert content_type in e["detail"] and head in e["detail"], e


@pytest.mark.parametrize(
    ("mode", "what"), [("shape-choices", "choices is str"), ("shape-token-ids", "token_ids is int")]
)
def test_chunks_of_the_wrong_shape_are_malformed_stream(root: str, tmp_path: Path, mode: str, what: str) -> None:
    p = _run(root, mode, tmp_path / "run")
    assert p.returncode != 0
    errors = _errors(tmp_path / "run")
    assert Counter(e["cause"] for e in errors) == {"malformed_stream": 2, "prior_turn_failed": 2}
    for e in errors:
        if e["cause"] == "malformed_stream":
            assert what in e["detail"] and '{"id": "x", "choices":' in e["detail"], e


def test_well_formed_stream_still_passes(root: str, tmp_path: Path) -> None:
    p = _run(root, "ok", tmp_path / "run")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _errors(tmp_path / "run") == []
