"""Engine adapters without the real engines: wire formats of SGLang and TensorRT-LLM (fixtures written
from their sources, tests/fixtures/engines/README.md has the arithmetic), llama.cpp and vLLM parsing (vLLM's
dialect against the generic client), the command lines --launch builds, and the launch lifecycle against a
stand-in server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp import web

from speedbench.config import EngineSpec
from speedbench.engines import openai_http, registry
from speedbench.engines.base import Request
from speedbench.engines.errors import EngineStartError
from speedbench.engines.llamacpp import LlamaCppEngine, parse_llamacpp_timings
from speedbench.engines.openai import OpenAIEngine
from speedbench.engines.openai_http import OpenAIClient
from speedbench.engines.sglang import SGLangEngine, parse_sglang_counters, parse_sglang_details
from speedbench.engines.trtllm import TRTLLMEngine, parse_trtllm_counters, stats_from_avg
from speedbench.engines.vllm import VLLMEngine
from speedbench.load.generator import send
from speedbench.metrics.acceptance import acceptance_length
from speedbench.metrics.counters import counter_delta

FIX = Path(__file__).parent / "fixtures" / "engines"
ZERO = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted_tokens": 0.0, "per_position": {}}


def _req() -> Request:
    return Request("q1", "qa", 0, [{"role": "user", "content": "hi"}], max_tokens=12)


async def _serve(stream_body: bytes, metrics_path: str, metrics_text: str, fn):
    """A stand-in server: /v1/models, the recorded chat stream, and a /metrics page."""
    seen: list[dict] = []

    async def models(_r):
        return web.json_response({"data": [{"id": "m"}]})

    async def chat(r):
        seen.append(await r.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(r)
        await resp.write(stream_body)
        return resp

    async def metrics(_r):
        return web.Response(text=metrics_text)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get(metrics_path, metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        return await fn(f"http://127.0.0.1:{runner.addresses[0][1]}/v1"), seen
    finally:
        await runner.cleanup()


def _stream_through(engine_cls, stream_file, metrics_path, metrics_file, **kw):
    async def go(url):
        eng = engine_cls(EngineSpec(kind=engine_cls.name, base_url=url, draft_length=3, **kw))
        await eng.start()
        try:
            rec = await send(eng, _req(), timeout_s=30)
            return rec, await eng.counters(), eng
        finally:
            await eng.close()

    return asyncio.run(_serve((FIX / stream_file).read_bytes(), metrics_path, (FIX / metrics_file).read_text(), go))


# ---- SGLang -------------------------------------------------------------------------------------


def test_sglang_stream_spec_details_normalised_to_our_definition():
    (rec, counters, eng), seen = _stream_through(
        SGLangEngine, "sglang_chat_stream.txt", "/metrics", "sglang_metrics.txt"
    )
    assert seen[0]["return_spec_tokens_details"] is True and "return_token_ids" not in seen[0]
    assert rec.ok and rec.completion_tokens == 12
    sd = rec.sd
    # 5 verify steps accepted 3,0,1,2,0 drafts of 3: steps 5, accepted 6, drafted 15, histogram [2,1,1,1]
    assert (sd.steps, sd.accepted, sd.drafted, sd.histogram) == (5, 6, 15, [2, 1, 1, 1])
    assert sd.per_position == [3, 2, 1] and sd.inferred == []
    assert acceptance_length(sd.accepted, sd.steps) == pytest.approx(2.2)  # SGLang's own figure is 12/5 = 2.4
    # counters: verify calls 5; accepted = generation 12 - requests 1 - verify 5 = 6; drafted 5 x 3
    d = counter_delta(ZERO, counters)
    assert (d.steps, d.accepted, d.drafted) == (5, 6, 15) and d.inferred == ["accepted", "drafted"]


@pytest.mark.parametrize("name", ["sglang_generate.json", "sglang_generate_legacy.json"])
def test_sglang_generate_meta_info_current_and_legacy_names(name):
    meta = json.loads((FIX / name).read_text())["meta_info"]
    sd = parse_sglang_details(meta, k=3)
    assert (sd.steps, sd.accepted, sd.drafted, sd.histogram) == (5, 6, 15, [2, 1, 1, 1])


def test_sglang_details_without_accepted_infer_it_from_tokens_and_no_counters_means_none():
    sd = parse_sglang_details({"spec_verify_ct": 5, "spec_accept_length": 2.4}, k=3)
    assert sd.inferred == ["drafted", "accepted"] and sd.drafted == 15
    eng = SGLangEngine(EngineSpec(kind="sglang", base_url="http://127.0.0.1:1/v1", draft_length=3))
    done = eng.finish_sd(sd, 12, {})
    assert (done.steps, done.accepted) == (5, 6)
    assert parse_sglang_details(None, 3) is None and parse_sglang_details([], 3) is None
    assert parse_sglang_counters("sglang:num_requests_total 3\n", 3) is None  # SD off: no verify counter


# ---- TensorRT-LLM -------------------------------------------------------------------------------


def test_trtllm_stream_avg_decoded_tokens_and_prometheus_path():
    (rec, counters, eng), seen = _stream_through(
        TRTLLMEngine, "trtllm_chat_stream.txt", "/prometheus/metrics", "trtllm_metrics.txt"
    )
    assert eng.metrics_url.endswith("/prometheus/metrics")
    assert rec.ok and rec.completion_tokens == 12
    sd = rec.sd
    # final running average 2.0 over 12 tokens -> 6 iterations incl. prefill -> 5 steps, 6 accepted, 15 drafted
    assert (sd.steps, sd.accepted, sd.drafted) == (5, 6, 15)
    assert set(sd.inferred) == {"steps", "accepted", "drafted"}
    d = counter_delta(ZERO, counters)
    assert (d.steps, d.accepted, d.drafted) == (5, 6, 15) and d.inferred == ["steps"]


def test_trtllm_avg_arithmetic_and_missing_counters():
    assert stats_from_avg(1.0, 10, 3).steps == 9 and stats_from_avg(1.0, 10, 3).accepted == 0  # no drafts accepted
    # 9 tokens = 1 (prefill) + 3 steps + 5 accepted: 4 iterations, avg 9/4 = 2.25
    assert (stats_from_avg(2.25, 9, 3).steps, stats_from_avg(2.25, 9, 3).accepted) == (3, 5)
    assert stats_from_avg(0.0, 10, 3) is None
    assert parse_trtllm_counters("trtllm_generation_tokens_total 5\n", 3) is None


# ---- llama.cpp and vLLM parsing -----------------------------------------------------------------


def test_llamacpp_timings_steps_inferred_from_tokens():
    sd = parse_llamacpp_timings({"predicted_n": 20, "draft_n": 27, "draft_n_accepted": 10})
    assert (sd.drafted, sd.accepted) == (27, 10) and sd.inferred == ["steps"]
    eng = LlamaCppEngine(EngineSpec(kind="llamacpp", base_url="http://127.0.0.1:1/v1", draft_length=3))
    assert eng.capabilities.chunks_are_steps is False  # one token per chunk
    done = eng.finish_sd(sd, 20, {})
    assert done.steps == 9  # 20 tokens = 1 (prefill) + 9 steps + 10 accepted
    assert parse_llamacpp_timings({"predicted_n": 20}) is None  # no drafting: no SD stats


def test_vllm_speculative_config_and_command_line():
    def cfg(sd, **kw):
        return VLLMEngine(
            EngineSpec(kind="vllm", launch=True, model="org/m", sd=sd, draft_length=4, max_concurrency=8, **kw)
        )

    assert cfg("ngram").speculative_config() == {
        "method": "ngram",
        "num_speculative_tokens": 4,
        "prompt_lookup_max": 4,
        "prompt_lookup_min": 2,
    }
    assert cfg("draft", draft_model="/d").speculative_config() == {"model": "/d", "num_speculative_tokens": 4}
    assert cfg("eagle3", draft_model="/e").speculative_config()["method"] == "eagle3"
    assert cfg("mtp").speculative_config() == {"method": "mtp", "num_speculative_tokens": 4}
    assert cfg("none").speculative_config() is None
    e = cfg(
        "ngram",
        server_bin="/venv/bin/python",
        server_args=["--enforce-eager", "--max-num-seqs", "2"],
        options={"spec_config": '{"prompt_lookup_max": 5}'},
    )
    cmd = e.server.cmd
    assert cmd[:4] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert cmd[cmd.index("--port") + 1] == str(e.port) and e.base_url == f"http://127.0.0.1:{e.port}/v1"
    assert json.loads(cmd[cmd.index("--speculative-config") + 1])["prompt_lookup_max"] == 5
    assert cmd[-3:] == ["--enforce-eager", "--max-num-seqs", "2"]  # the user's arguments come last and win
    assert e.describe()["k"] == 4 and cfg("none").describe()["k"] == 0


def test_other_command_lines(tmp_path):
    (tmp_path / "t.gguf").write_bytes(b"")
    (tmp_path / "d.gguf").write_bytes(b"")
    lc = LlamaCppEngine(
        EngineSpec(
            kind="llamacpp",
            launch=True,
            model=str(tmp_path / "t.gguf"),
            sd="draft",
            draft_model=str(tmp_path / "d.gguf"),
            draft_length=3,
            server_bin="/bin/llama-server",
            max_concurrency=4,
        )
    )
    cmd = lc.server.cmd
    assert cmd[cmd.index("-md") + 1] == str(tmp_path / "d.gguf") and cmd[cmd.index("--spec-draft-n-max") + 1] == "3"
    assert "--metrics" in cmd and cmd[cmd.index("-np") + 1] == "4"
    sg = SGLangEngine(
        EngineSpec(kind="sglang", launch=True, model="m", sd="eagle3", draft_model="h", draft_length=3, server_bin="py")
    )
    cmd = sg.server.cmd
    assert cmd[cmd.index("--speculative-algorithm") + 1] == "EAGLE3"
    assert cmd[cmd.index("--speculative-num-draft-tokens") + 1] == "4"
    tr = TRTLLMEngine(
        EngineSpec(
            kind="trtllm",
            launch=True,
            model="m",
            sd="draft",
            draft_model="d",
            draft_length=3,
            server_bin="trtllm-serve",
            log_dir=str(tmp_path / "tr"),
        )
    )
    config = json.loads(Path(tr.server.cmd[tr.server.cmd.index("--config") + 1]).read_text())
    assert config["speculative_config"] == {
        "decoding_type": "DraftTarget",
        "max_draft_len": 3,
        "speculative_model": "d",
    }


def test_bad_launch_settings_fail_in_one_line(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="needs --model"):
        VLLMEngine(EngineSpec(kind="vllm", launch=True, sd="ngram"))
    with pytest.raises(ValueError, match="drop --base-url"):
        VLLMEngine(EngineSpec(kind="vllm", launch=True, model="m", base_url="http://x/v1"))
    with pytest.raises(ValueError, match="needs --draft-model"):
        VLLMEngine(EngineSpec(kind="vllm", launch=True, model="m", sd="draft"))
    with pytest.raises(ValueError, match="not supported by engine 'llamacpp'"):
        LlamaCppEngine(EngineSpec(kind="llamacpp", launch=True, model="m.gguf", sd="eagle"))
    with pytest.raises(EngineStartError, match="does not exist"):
        VLLMEngine(EngineSpec(kind="vllm", launch=True, model="/no/such/model", sd="none"))
    with pytest.raises(EngineStartError, match="not on PATH"):
        LlamaCppEngine(
            EngineSpec(kind="llamacpp", launch=True, model=str(tmp_path / "m.gguf"), server_bin="no-such-llama-server")
        )


# ---- the launch lifecycle against a stand-in server ---------------------------------------------


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable that vLLM's launcher calls as its 'python': it gets
    ``-m vllm.entrypoints.openai.api_server --model M --host H --port P ...``."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


MOCK_AS_VLLM = """
import os, sys
args = sys.argv[1:]
port = args[args.index("--port") + 1]
open(os.environ["FAKE_PIDFILE"], "w").write(str(os.getpid()))
print("fake vLLM starting on", port, flush=True)
os.execv(os.environ["REAL_PY"],
         [os.environ["REAL_PY"], "-m", "speedbench.cli", "serve-mock", "--port", port, "--k", "3",
          "--acceptance", "0.8,0.6,0.4", "--ttft-ms", "5", "--step-ms", "1"])
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_launch_runs_against_the_started_server_keeps_its_log_and_stops_it(tmp_path):
    fake = _fake_python(tmp_path, MOCK_AS_VLLM)
    pidfile = tmp_path / "pid"
    out = tmp_path / "run"
    env = {**os.environ, "FAKE_PIDFILE": str(pidfile), "REAL_PY": sys.executable}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "run",
            "--engine",
            "vllm",
            "--launch",
            "--model",
            "fake-model",
            "--sd",
            "ngram",
            "--server-bin",
            fake,
            "-n",
            "6",
            "-c",
            "3",
            "--output-len",
            "40",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    server = manifest["engine"]["server"]
    assert server["log"] == str(out / "server.log") and "--speculative-config" in server["command"]
    assert server["startup_s"] > 0
    log = (out / "server.log").read_text()
    assert "fake vLLM starting" in log and "server stopped" in log
    assert not _alive(int(pidfile.read_text()))
    summary = json.loads((out / "summary.json").read_text())
    names = {i["name"]: i for i in summary["invariants"]}
    assert names["per_request_vs_counter_delta[segment 0]"]["ok"] is True
    assert names["counters_within_our_traffic[segment 0]"]["ok"] is True
    assert names["chunks_vs_per_request[segment 0]"]["ok"] is True
    assert summary["overall"]["requests"] > 0 and summary["overall"]["errors"] == 0


def test_launch_failure_quotes_the_server_log(tmp_path):
    fake = _fake_python(
        tmp_path,
        """
        import sys
        print("INFO loading model", flush=True)
        print("RuntimeError: head_dim 16 is not supported by the CPU attention backend", flush=True)
        sys.exit(3)
    """,
    )
    out = tmp_path / "run"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "run",
            "--engine",
            "vllm",
            "--launch",
            "--model",
            "m",
            "--server-bin",
            fake,
            "-n",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    first = p.stderr.splitlines()[0]
    assert first.startswith("error: vLLM exited with code 3 before it was ready")
    assert "head_dim 16 is not supported" in p.stderr and str(out / "server.log") in first


def test_launch_health_timeout_and_sigint_stop_the_server(tmp_path):
    fake = _fake_python(
        tmp_path,
        """
        import os, time
        open(os.environ["FAKE_PIDFILE"], "w").write(str(os.getpid()))
        print("never healthy", flush=True)
        time.sleep(600)
    """,
    )
    pidfile = tmp_path / "pid"
    env = {**os.environ, "FAKE_PIDFILE": str(pidfile)}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "run",
            "--engine",
            "vllm",
            "--launch",
            "--model",
            "m",
            "--server-bin",
            fake,
            "-E",
            "startup_timeout=2",
            "-n",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2 and "did not answer" in p.stderr and "never healthy" in p.stderr
    assert not _alive(int(pidfile.read_text()))
    # Ctrl-C while waiting for the server: speedbench exits and takes the server with it
    pidfile.unlink()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "run",
            "--engine",
            "vllm",
            "--launch",
            "--model",
            "m",
            "--server-bin",
            fake,
            "-n",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "b"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 60
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    server_pid = int(pidfile.read_text())
    deadline = time.time() + 30
    while _alive(server_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(server_pid)


# ---- vLLM's dialect on the shared client: the generic client reads none of it ------------------------------


class PlainOpenAI(OpenAIClient):
    """The shared client with no dialect, as a plain OpenAI-compatible server's adapter would be."""

    name = "plain"
    capabilities = registry.declared("openai")  # token ids declared: still not asked for without a field


@pytest.mark.parametrize("engine_cls", [VLLMEngine, OpenAIEngine])
def test_vllm_dialect_reads_token_ids_per_request_stats_and_counters(engine_cls):
    (rec, counters, eng), seen = _stream_through(engine_cls, "vllm_chat_stream.txt", "/metrics", "vllm_metrics.txt")
    assert seen[0]["return_token_ids"] is True
    assert rec.ok and rec.completion_tokens == 12 and rec.chunk_tokens == [1, 4, 1, 2, 3, 1]
    assert rec.output_token_ids == list(range(101, 113))
    sd = rec.sd
    assert (sd.steps, sd.accepted, sd.drafted, sd.histogram) == (5, 6, 15, [2, 1, 1, 1])
    assert sd.per_position == [3, 2, 1] and sd.source == "per_request" and sd.inferred == []
    d = counter_delta(ZERO, counters)
    assert (d.steps, d.accepted, d.drafted, d.per_position) == (5, 6, 15, [3, 2, 1])


def test_the_generic_client_reads_no_vllm_fields_from_the_same_stream():
    (rec, counters, eng), seen = _stream_through(PlainOpenAI, "vllm_chat_stream.txt", "/metrics", "vllm_metrics.txt")
    assert "return_token_ids" not in seen[0]
    # the stream's shared parts are read as before: chunks, text, token ids where a choice carries them, usage
    assert rec.ok and rec.completion_tokens == 12 and rec.chunk_tokens == [1, 4, 1, 2, 3, 1]
    assert rec.output_text == "The quick brown fox jumps over the lazy dog. The end"
    assert rec.output_token_ids == list(range(101, 113))
    # vLLM's metrics.speculative_decoding and vllm:spec_decode_* counters are not
    assert rec.sd is None and counters is None and eng.counter_error.endswith(": no SD counters known")
    assert not hasattr(openai_http, "parse_vllm_sd") and PlainOpenAI.counter_prefix is None
