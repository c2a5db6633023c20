from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from speedbench.data.sample import Sample

# the `cluster` fixture (a Ray head and worker node on this machine) for the tests that use it
pytest_plugins = ["ray_cluster"]

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPEC_BENCH = SHARED / "data" / "spec_bench_questions.jsonl"


def make_samples(n: int, turns: int = 1, category: str | None = None, prefix: str = "q") -> list[Sample]:
    cats = ["coding", "math", "writing", "rag"]
    return [
        Sample(
            question_id=f"{prefix}{i}",
            category=category or cats[i % len(cats)],
            sub_category=None,
            turns=tuple(f"{prefix}{i} turn {t}: tell me something" for t in range(turns)),
            source="test",
            src_id=None,
            difficulty=None,
            multiturn=turns > 1,
        )
        for i in range(n)
    ]


def ok_turns(out: Path) -> Counter[tuple[str, int]]:
    """How many successful records each (question id, turn) of a run directory has."""
    from speedbench.results.loader import load_run

    return Counter((r.question_id, r.turn) for r in load_run(out).records if r.ok)


def assert_resumed_whole(out: Path, first: Counter[tuple[str, int]]) -> Any:
    """A run finished by --resume after an interruption: every turn of its dataset on disk exactly once, what the
    first segment finished (``first``) kept and not sent again, no errors, complete.  Returns the loaded run."""
    from speedbench.results.loader import load_run

    run = load_run(out)
    keys = ok_turns(out)
    assert set(keys.values()) == {1} and {q for q, _ in keys} == set(run.manifest.dataset.question_ids)
    assert all(k in keys for k in first)
    assert run.summary.overall.errors == 0 and run.manifest.status == "complete"
    return run


def speedbench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "speedbench.cli", *args]


@contextmanager
def serve_mock(*args: str) -> Iterator[str]:
    """Start `speedbench serve-mock --port 0 ARGS` in a subprocess; yield its base URL."""
    proc = subprocess.Popen(
        speedbench_cmd("serve-mock", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        assert m, f"serve-mock did not start: {line!r}"
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def spec_bench_path() -> Path:
    if not SPEC_BENCH.exists():
        pytest.skip(f"{SPEC_BENCH} not present (shared data is optional)")
    return SPEC_BENCH


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct converted to an HF folder (shared cache, converted once); its tokenizer
    serves the tiny models too."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from speedbench.engines import hf_models

    try:
        kind, path = hf_models.resolve(None)
    except hf_models.ModelLoadError as e:
        pytest.skip(str(e))
    return hf_models.converted_gguf(path)


@pytest.fixture(scope="session")
def tiny_pair_dirs(tmp_path_factory, smollm2_tokenizer_dir):
    """HF folders for a tiny same-tokenizer trio (head_dim 16) sharing SmolLM2's tokenizer."""
    from tiny_models import save_trio

    return save_trio(tmp_path_factory.mktemp("tiny"), smollm2_tokenizer_dir)


REPO = Path(__file__).resolve().parents[1]


def engine_binary(env_var: str, default: Path, what: str, install: str) -> str:
    """A real engine for the `engines` tests: $ENV_VAR, else the repo's .engines/ install.  Missing:
    skip, unless SPEEDBENCH_REQUIRE_ENGINES=1 (CI and the README's test command), then fail."""
    path = os.environ.get(env_var) or str(default)
    if Path(path).exists():
        return path
    msg = f"{what} not found at {path} (set {env_var} or run {install})"
    if os.environ.get("SPEEDBENCH_REQUIRE_ENGINES") == "1":
        pytest.fail(msg + "; SPEEDBENCH_REQUIRE_ENGINES=1 makes this a failure")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    return engine_binary(
        "SPEEDBENCH_VLLM_PYTHON",
        REPO / ".engines" / "vllm" / "bin" / "python",
        "vLLM",
        "scripts/install-vllm .engines/vllm",
    )


@pytest.fixture(scope="session")
def llama_server() -> str:
    return engine_binary(
        "SPEEDBENCH_LLAMA_SERVER",
        REPO / ".engines" / "llamacpp" / "bin" / "llama-server",
        "llama-server",
        "scripts/install-llamacpp .engines/llamacpp",
    )
