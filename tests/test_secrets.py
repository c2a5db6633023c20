"""Secrets never reach the run directory or the console (issue 11, "Secrets").

End to end: ``speedbench run`` subprocesses against serve-mock (healthy, HTTP 500s, resets, killed mid-run, a
wrong port, a 404 metrics URL, ``--resume``), a server that echoes the Authorization header it gets, and a
launched stand-in vLLM given ``--api-key``; every file of the run directory and the captured stdout/stderr are
searched for the planted password, API key and basic-auth token.  Then the redaction functions alone, with
hand-written expectations.

The faulty runs with URL credentials run without ``$OPENAI_API_KEY``: on c6e6c23 a key plus URL credentials could
not start at all (aiohttp refuses both), which would hide the leaks they show; the healthy run and the echo server
cover the two together.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import speedbench_cmd

PASSWORD = "s3cretpass"
KEY = "sk-planted-key-123"  # $OPENAI_API_KEY
TOKEN = "sk-option-token-456"  # -E api_token
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()  # what aiohttp sends for user:s3cretpass@
PLANTED = (PASSWORD, KEY, TOKEN, BASIC)


def _env(key: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a run: ``$OPENAI_API_KEY`` planted, or unset (``key=False``)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return {**env, **({"OPENAI_API_KEY": KEY} if key else {}), "PYTHONUNBUFFERED": "1", **extra}


def _url(port: int, path: str = "/v1") -> str:
    return f"http://user:{PASSWORD}@127.0.0.1:{port}{path}"


def _shown(port: int, path: str = "/v1") -> str:
    return f"http://***@127.0.0.1:{port}{path}"


def _run_args(out: Path, base_url: str, metrics_url: str, *extra: str) -> list[str]:
    return [
        "run",
        "--engine",
        "openai",
        "--base-url",
        base_url,
        "--metrics-url",
        metrics_url,
        "-n",
        "2",
        "--output-len",
        "8",
        "--warmup",
        "0",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _speedbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A speedbench command, by default with the key planted."""
    return subprocess.run(
        speedbench_cmd(*args), capture_output=True, text=True, env=env or _env(), timeout=240, check=False
    )


def assert_nothing_leaked(p: subprocess.CompletedProcess[str], run_dir: Path | None) -> None:
    """No planted secret in the captured console or in any file of the run directory."""
    leaks = [
        f"{where}: {line.strip()[:200]}"
        for where, text in (("stdout", p.stdout), ("stderr", p.stderr))
        for line in text.splitlines()
        if any(s in line for s in PLANTED)
    ]
    files = sorted(f for f in run_dir.rglob("*") if f.is_file()) if run_dir is not None else []
    for f in files:
        for line in f.read_bytes().decode("utf-8", "replace").splitlines():
            if any(s in line for s in PLANTED):
                leaks.append(f"{f.name}: {line.strip()[:200]}")
    assert leaks == [], "secrets written or printed:\n" + "\n".join(leaks)
    assert "Traceback" not in p.stderr, p.stderr


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines() if line.strip()]


def _manifest(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "manifest.json").read_text())
    return data


def _causes(records: list[dict[str, Any]]) -> set[str]:
    return {r["error"]["cause"] for r in records if r["error"]}


@contextmanager
def mock_server(*args: str, port: int = 0) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``speedbench serve-mock`` in a subprocess: (process, port); killed on exit."""
    proc = subprocess.Popen(
        speedbench_cmd("serve-mock", "--port", str(port), "--ttft-ms", "1", "--step-ms", "1", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert m, f"serve-mock did not start: {line!r}"
        yield proc, int(m.group(1))
    finally:
        proc.kill()
        proc.wait(10)


def _dead_port() -> int:
    """A port nothing listens on (serve-mock started and killed)."""
    with mock_server() as (_, port):
        pass
    return port


# ---- end to end: serve-mock, healthy and faulty ----------------------------------------------------------


@pytest.mark.parametrize("key", [True, False], ids=["url-credentials-and-key", "url-credentials"])
def test_a_healthy_run_with_credentials_and_a_404_metrics_url_writes_and_prints_no_secret(
    tmp_path: Path, key: bool
) -> None:
    out = tmp_path / "run"
    with mock_server() as (_, port):
        p = _speedbench(*_run_args(out, _url(port), _url(port, "/no-metrics-here")), env=_env(key))
    assert p.returncode == 0, p.stdout + p.stderr
    assert_nothing_leaked(p, out)
    records = _records(out)
    assert len(records) >= 2 and all(r["error"] is None for r in records)  # requests went through, with basic auth
    manifest = _manifest(out)
    assert manifest["config"]["engine"]["base_url"] == _shown(port)
    assert manifest["engine"]["base_url"] == _shown(port)
    assert manifest["engine"]["metrics_url"] == _shown(port, "/no-metrics-here")
    assert manifest["counter_error"] == f"{_shown(port, '/no-metrics-here')}: HTTP 404"


def test_http_500s_with_a_dead_metrics_url_record_their_cause_and_no_secret(tmp_path: Path) -> None:
    out = tmp_path / "run"
    dead = _dead_port()
    with mock_server("-E", "fail_500=1") as (_, port):
        p = _speedbench(*_run_args(out, _url(port), _url(dead, "/metrics")), env=_env(key=False))
    assert_nothing_leaked(p, out)
    records = _records(out)
    assert "http_500" in _causes(records)
    assert any("mock injected internal error" in r["error"]["detail"] for r in records if r["error"])
    counter_error = _manifest(out)["counter_error"]
    assert counter_error.startswith(f"{_shown(dead, '/metrics')}: ClientConnectorError"), counter_error


def test_resets_mid_stream_record_their_cause_and_no_secret(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with mock_server("-E", "fail_reset=1") as (_, port):
        p = _speedbench(*_run_args(out, _url(port), _url(port, "/metrics")), env=_env(key=False))
    assert_nothing_leaked(p, out)
    assert "reset" in _causes(_records(out))


def test_a_server_killed_mid_run_leaves_connect_errors_and_no_secret(tmp_path: Path) -> None:
    out = tmp_path / "run"
    records_path = out / "records.jsonl"
    with mock_server("--ttft-ms", "300", "--step-ms", "20") as (server, port):
        args = _run_args(out, _url(port), _url(port, "/metrics"))
        args[args.index("-n") + 1] = "4"
        run = subprocess.Popen(
            speedbench_cmd(*args, "--concurrency", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(key=False),
        )
        deadline = time.monotonic() + 120
        while not (records_path.exists() and records_path.read_text().strip()) and time.monotonic() < deadline:
            assert run.poll() is None, "the run ended before its first record"
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        stdout, stderr = run.communicate(timeout=240)
    p = subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    assert_nothing_leaked(p, out)
    records = _records(out)
    connect = [r for r in records if r["error"] and r["error"]["cause"] == "connect_error"]
    assert connect, records
    assert all(r["error"]["detail"].startswith(_shown(port, "/v1/chat/completions")) for r in connect), connect


def test_a_wrong_port_fails_in_one_line_without_the_password(tmp_path: Path) -> None:
    out = tmp_path / "run"
    dead = _dead_port()
    p = _speedbench(*_run_args(out, _url(dead), _url(dead, "/metrics")), env=_env(key=False))
    assert p.returncode == 2, p.stdout + p.stderr
    assert_nothing_leaked(p, out)
    assert f"error: cannot reach {_shown(dead, '/v1/models')}" in p.stderr


def test_resume_takes_the_credentials_from_the_flags_and_writes_none(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with mock_server("-E", "fail_500=1") as (_, port):
        first = _speedbench(*_run_args(out, _url(port), _url(port, "/metrics")), env=_env(key=False))
    assert_nothing_leaked(first, out)
    assert "http_500" in _causes(_records(out))
    with mock_server(port=port):  # the server is back, healthy, where it was
        refused = _speedbench("run", "--resume", str(out), "--no-progress", env=_env(key=False))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert_nothing_leaked(refused, out)
        assert "whose credentials are not saved: pass --base-url with them again" in refused.stderr
        resumed = _speedbench(
            "run",
            "--resume",
            str(out),
            "--base-url",
            _url(port),
            "--metrics-url",
            _url(port, "/metrics"),
            "--no-progress",
            env=_env(key=False),
        )
    assert "credentials are not saved" not in resumed.stderr, resumed.stderr
    assert_nothing_leaked(resumed, out)
    manifest = _manifest(out)
    assert len(manifest["resumed_utc"]) == 1 and manifest["config"]["engine"]["base_url"] == _shown(port)
    assert len(_records(out)) >= 2


# ---- end to end: a server that echoes the credentials it gets ------------------------------------------


@contextmanager
def echo_server() -> Iterator[tuple[int, list[str]]]:
    """An OpenAI-style server that lists a model, refuses every completion with the Authorization header it got
    (HTTP 401) and answers /metrics 404 quoting it too: (port, the Authorization headers seen)."""
    seen: list[str] = []

    def auth(request: web.Request) -> str:
        value = request.headers.get("Authorization", "")
        seen.append(value)
        return value

    async def models(request: web.Request) -> web.Response:
        auth(request)
        return web.json_response({"object": "list", "data": [{"id": "echo-model", "object": "model"}]})

    async def completions(request: web.Request) -> web.Response:
        return web.Response(status=401, text=f"rejected credentials: {auth(request)}")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(status=404, text=f"no metrics for {auth(request)}")

    app = web.Application()
    app.add_routes(
        [web.get("/v1/models", models), web.post("/v1/chat/completions", completions), web.get("/metrics", metrics)]
    )
    runner = web.AppRunner(app)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port, seen
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_a_server_echoing_the_bearer_key_has_it_scrubbed_from_the_records(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with echo_server() as (port, seen):
        plain = f"http://127.0.0.1:{port}"
        p = _speedbench(*_run_args(out, f"{plain}/v1", f"{plain}/metrics"))
    assert seen and set(seen) == {f"Bearer {KEY}"}  # the key went out on every request
    assert_nothing_leaked(p, out)
    records = _records(out)
    assert _causes(records) >= {"http_401"}
    assert any(r["error"]["detail"] == "rejected credentials: Bearer ***" for r in records if r["error"])
    assert _manifest(out)["counter_error"] == f"{plain}/metrics: HTTP 404"


def test_a_url_with_credentials_is_sent_as_basic_auth_and_the_echo_is_scrubbed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with echo_server() as (port, seen):
        p = _speedbench(*_run_args(out, _url(port), _url(port, "/metrics")))
    # the URL's own credentials, not the bearer key: HTTP has one Authorization header
    assert seen and set(seen) == {f"Basic {BASIC}"}
    assert_nothing_leaked(p, out)
    records = _records(out)
    assert any(r["error"]["detail"] == "rejected credentials: Basic ***" for r in records if r["error"])


# ---- end to end: a launched server given --api-key ------------------------------------------------------

FAKE_VLLM = """
import os, sys
args = sys.argv[1:]
port = args[args.index("--port") + 1]
print("fake vLLM args:", " ".join(args), flush=True)
os.execv(os.environ["REAL_PY"],
         [os.environ["REAL_PY"], "-m", "speedbench.cli", "serve-mock", "--port", port, "--ttft-ms", "1",
          "--step-ms", "1"])
"""


def test_a_launched_server_command_and_log_keep_no_key(tmp_path: Path) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n" + textwrap.dedent(FAKE_VLLM))
    fake.chmod(0o755)
    out = tmp_path / "run"
    p = _speedbench(
        "run",
        "--engine",
        "vllm",
        "--launch",
        "--model",
        "fake-model",
        "--server-bin",
        str(fake),
        "--server-arg=--api-key",
        f"--server-arg={KEY}",
        "-n",
        "2",
        "--output-len",
        "8",
        "--warmup",
        "0",
        "--no-progress",
        "--out",
        str(out),
        env=_env(REAL_PY=sys.executable),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert_nothing_leaked(p, out)
    log = (out / "server.log").read_text()
    assert "fake vLLM args:" in log and "--api-key ***" in log  # the server's own words, scrubbed
    assert "--api-key ***" in _manifest(out)["engine"]["server"]["command"]
    assert all(r["error"] is None for r in _records(out))


# ---- the functions alone ----------------------------------------------------------------------------------


def test_redact_urls_replaces_every_userinfo_by_stars() -> None:
    from speedbench.config import redact_urls

    cases = {
        "http://user:s3cretpass@127.0.0.1:8000/v1": "http://***@127.0.0.1:8000/v1",
        "https://tok3n@api.example.com/v1": "https://***@api.example.com/v1",  # a user without a password
        "http://user:pw@[::1]:8000/v1": "http://***@[::1]:8000/v1",  # IPv6 host
        "http://user:p@ss@host:1/v1": "http://***@host:1/v1",  # a raw @ in the password: up to the last one
        "http://user:p%40ss@host/v1": "http://***@host/v1",
        "http://127.0.0.1:8000/v1": "http://127.0.0.1:8000/v1",  # no userinfo
        "http://host/v1?next=a@b": "http://host/v1?next=a@b",  # an @ after the host is not userinfo
        "mail me at a@b.org": "mail me at a@b.org",
        "http://***@host/v1": "http://***@host/v1",  # already redacted
        "cannot reach http://u:pw@h:9/v1/models (ClientConnectorError: refused); also 'https://k@x.org/m'": (
            "cannot reach http://***@h:9/v1/models (ClientConnectorError: refused); also 'https://***@x.org/m'"
        ),
    }
    assert {text: redact_urls(text) for text in cases} == cases


def test_url_password_and_the_secrets_a_url_lets_out() -> None:
    from speedbench.config import url_password, url_secrets

    assert url_password("http://user:s3cretpass@127.0.0.1:8000/v1") == "s3cretpass"
    assert url_password("http://user:pw@[::1]:8000/v1") == "pw"
    assert url_password("https://tok3n@host/v1") is None  # no password (the URL is still redacted)
    assert url_password("http://127.0.0.1:8000/v1") is None and url_password(None) is None
    assert url_password("http://[::1/v1") is None  # unparsable
    assert url_secrets("http://user:s3cretpass@h/v1") == ["s3cretpass", "dXNlcjpzM2NyZXRwYXNz"]
    assert base64.b64decode("dXNlcjpzM2NyZXRwYXNz") == b"user:s3cretpass"
    assert url_secrets("http://h/v1") == []


def test_secrets_scrub_a_key_inside_a_longer_message() -> None:
    from speedbench.config import Secrets

    s = Secrets.of(KEY, None, "", "***", "EMPTY")  # empty, redacted and short values are not secrets to search
    assert s.values == (KEY,)
    assert s.scrub(f"HTTP 401: invalid key 'Bearer {KEY}' for http://user:pw@h/v1") == (
        "HTTP 401: invalid key 'Bearer ***' for http://***@h/v1"
    )
    assert s.scrub(f"{KEY}{KEY}-suffix") == "******-suffix"
    assert s.scrub("nothing secret here") == "nothing secret here"
    encoded = Secrets.of("p%40ssword")  # a percent-encoded password: both spellings
    assert encoded.scrub("p%40ssword and p@ssword") == "*** and ***"
    assert Secrets.of("longer-secret", "secret-x").scrub("longer-secret") == "***"  # the longest first
    both = Secrets.of(KEY) | Secrets.of(TOKEN)
    assert both.scrub(f"{KEY} {TOKEN}") == "*** ***"
    obj = {"detail": f"key {KEY}", "n": 3, "list": [f"http://u:{PASSWORD}@h/", None], KEY: "as a key"}
    assert both.scrub_obj(obj) == {"detail": "key ***", "n": 3, "list": ["http://***@h/", None], "***": "as a key"}


def test_redact_covers_urls_and_secret_fields() -> None:
    from speedbench.config import redact

    described = {
        "base_url": "http://user:s3cretpass@h:8000/v1",
        "metrics_url": "http://h:8000/metrics",
        "options": {"api_token": TOKEN, "chunks_are_steps": "false"},
        "api_key_env": "OPENAI_API_KEY",
        "server_args": ["--proxy", "http://p:pw@proxy:3128"],
    }
    assert redact(described) == {
        "base_url": "http://***@h:8000/v1",
        "metrics_url": "http://h:8000/metrics",
        "options": {"api_token": "***", "chunks_are_steps": "false"},
        "api_key_env": "OPENAI_API_KEY",
        "server_args": ["--proxy", "http://***@proxy:3128"],
    }


def test_engine_secrets_are_the_key_the_token_and_the_url_passwords() -> None:
    from speedbench.config import EngineSpec, engine_secrets

    spec = EngineSpec(
        kind="openai",
        base_url=_url(8000),
        metrics_url="http://m:other-pass@h/metrics",
        options={"api_token": TOKEN},
        api_key_env="MY_KEY",
    )
    found = set(engine_secrets(spec, {"MY_KEY": KEY, "OPENAI_API_KEY": "sk-not-this-one"}).values)
    assert found == {KEY, TOKEN, PASSWORD, BASIC, "other-pass", base64.b64encode(b"m:other-pass").decode()}


def test_the_console_stream_scrubs_whole_lines_even_when_written_in_pieces() -> None:
    from speedbench.cli.common import ScrubbedStream
    from speedbench.config import Secrets

    sink = io.StringIO()
    stream = ScrubbedStream(sink, Secrets.of(KEY))
    half = len(KEY) // 2
    stream.write(f"key {KEY[:half]}")
    assert sink.getvalue() == ""  # a partial line waits for the rest of it
    stream.write(f"{KEY[half:]} in http://user:pw@h/v1\nnext ")
    assert sink.getvalue() == "key *** in http://***@h/v1\n"
    stream.flush()
    assert sink.getvalue() == "key *** in http://***@h/v1\nnext "


def test_run_dir_scrubs_record_errors_and_the_manifest_but_not_output_text(tmp_path: Path) -> None:
    from speedbench.config import RunConfig, Secrets
    from speedbench.records import RequestRecord
    from speedbench.results.manifest import CounterWindow, DatasetInfo, Manifest
    from speedbench.results.rundir import RunDir

    rd = RunDir(tmp_path / "run", Secrets.of(KEY))
    rd.open_for_append()
    rec = RequestRecord(question_id="q", category="c", turn=0, start_ns=1, end_ns=2)
    rec.error = {"cause": "http_401", "detail": f"bad key {KEY} at http://user:pw@h/v1"}
    rec.output_text = f"the model may say {KEY}"  # the model's words are kept as they came
    rd.append(rec)
    rd.close()
    line = json.loads(rd.records_path.read_text())
    assert line["error"] == {"cause": "http_401", "detail": "bad key *** at http://***@h/v1"}
    assert line["output_text"] == f"the model may say {KEY}"
    dataset = DatasetInfo(name="starter", content_hash="h", rows=1, selected=1, question_ids=["q"])
    manifest = Manifest.new(RunConfig(), dataset).started({"engine": "x", "note": f"said {KEY}"})
    rd.write_manifest(manifest.finished(True, CounterWindow(), (), f"metrics: {KEY}"))
    text = rd.manifest_path.read_text()
    assert KEY not in text and '"counter_error": "metrics: ***"' in text and '"note": "said ***"' in text
