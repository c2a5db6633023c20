#!/usr/bin/env python
"""Client (load generator) fidelity and capacity against ``speedbench serve-mock``.

Fidelity: the mock server streams one token per SSE chunk on a fixed schedule (chunk i due at
arrival + ttft_ms + i * step_ms; defaults TTFT 50 ms, 10 ms per step, 256 tokens).  At each
concurrency level we send exactly C requests (one wave, all started together) through the real
client path -- OpenAIEngine + run_load + summarize -- and compare what the client measured with
the truth: mean TTFT vs 50 ms, mean/p99 ITL vs 10 ms, output tok/s vs the ideal
C * 256 / (0.050 + 255 * 0.010) s.

Capacity: a second server with 0 ms TTFT and 0 ms steps (every chunk is due at once) and
concurrency 256: the chunks/s the client ingests, client CPU seconds, server CPU seconds (from
/proc/<pid>/stat), and which side saturated its core.

Server and client are separate processes; where os.sched_setaffinity exists the server is
pinned to CPU 0 and this process (the client) to CPU 1 (``--no-pin`` turns that off).

    python benchmarks/client_overhead.py                      # 32,256,512 + capacity
    python benchmarks/client_overhead.py --quick              # smoke: concurrency 32 only
    python benchmarks/client_overhead.py --json out.json      # also dump the figures

Figures are printed, never asserted (timing on shared machines is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
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

from speedbench.data.sample import Sample
from speedbench.engines.openai_http import OpenAIEngine
from speedbench.load.generator import LoadSettings, run_load
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.latency import step_times_s
from speedbench.records import RequestRecord

LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SERVER_CPU, CLIENT_CPU = 0, 1


# ---- server subprocess ------------------------------------------------------------------------
class MockServer:
    """``speedbench serve-mock`` in a subprocess on a free loopback port."""

    def __init__(self, *, ttft_ms: float, step_ms: float, output_len: int, pin: bool) -> None:
        self.cmd = [sys.executable, "-m", "speedbench.cli", "serve-mock", "--host", "127.0.0.1",
                    "--port", "0", "--k", "0", "--acceptance", "",
                    "--ttft-ms", f"{ttft_ms:g}", "--step-ms", f"{step_ms:g}", "--output-len", str(output_len)]
        self.pin = pin
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.banner = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.tail: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
            self.tail = (self.tail + [line.rstrip()])[-20:]
        self._lines.put(None)

    def start(self, timeout_s: float = 30.0) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True,  # Ctrl-C is ours
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if self.pin:
            self._pin()
        threading.Thread(target=self._drain, name="server-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"serve-mock printed no 'listening' line within {timeout_s:g} s: "
                                   f"{' | '.join(self.tail)}") from None
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
        except (OSError, FileNotFoundError):
            os.sched_setaffinity(self.proc.pid, {SERVER_CPU})

    def cpu_s(self) -> float | None:
        """utime + stime of the server process (all threads), from /proc/<pid>/stat."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # the CLI exits quietly on KeyboardInterrupt
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "MockServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- client side ------------------------------------------------------------------------------
def make_samples(n: int, tag: str) -> list[Sample]:
    return [Sample(question_id=f"{tag}-q{i}", category="bench", sub_category=None,
                   turns=(f"prompt {i} for {tag}: describe the client overhead of streaming benchmarks.",),
                   source=None, src_id=None, difficulty=None, multiturn=False) for i in range(n)]


def client_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def drive(base_url: str, concurrency: int, n_requests: int, output_len: int, tag: str,
                server: MockServer) -> dict[str, Any]:
    """One measured run_load through a fresh OpenAIEngine; returns raw figures and the records."""
    engine = OpenAIEngine(base_url=base_url, model="mock", options={}, draft_length=0)
    await engine.start()
    records: list[RequestRecord] = []
    settings = LoadSettings(concurrency=concurrency, output_len=output_len, warmup=0, draft_length=0,
                            timeout_s=120)
    try:
        cpu0, srv0, wall0 = client_cpu_s(), server.cpu_s(), time.perf_counter()
        await run_load(engine, make_samples(n_requests, tag), settings, on_record=records.append)
        wall = time.perf_counter() - wall0
        cpu, srv1 = client_cpu_s() - cpu0, server.cpu_s()
    finally:
        await engine.close()
    return {"records": records, "wall_s": wall, "client_cpu_s": cpu,
            "server_cpu_s": (srv1 - srv0) if srv0 is not None and srv1 is not None else None}


def pct_err(measured: float | None, true: float) -> float | None:
    return None if measured is None else (measured - true) / true * 100.0


def fidelity_level(raw: dict[str, Any], c: int, n_requests: int, ttft_ms: float, step_ms: float,
                   output_len: int) -> dict[str, Any]:
    records: list[RequestRecord] = raw["records"]
    summary = summarize(records, k=0)
    ov = summary["overall"]
    ok = [r for r in records if r.ok]
    ttft, itl = ov["ttft_s"], ov["itl_s"]
    chunks = sum(len(r.chunk_ns) for r in records)
    gaps = np.asarray([v for r in ok for v in step_times_s(r)], dtype=float)
    late = float((gaps > 1.5 * step_ms / 1000).mean() * 100) if gaps.size else None
    bunched = float((gaps < 0.25 * step_ms / 1000).mean() * 100) if gaps.size else None
    waves = -(-n_requests // c)
    ideal_span = waves * (ttft_ms + (output_len - 1) * step_ms) / 1000
    ideal_tps = n_requests * output_len / ideal_span
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    wall = raw["wall_s"]
    return {
        "concurrency": c, "requests": n_requests, "ok": len(ok), "errors": len(records) - len(ok),
        "errors_by_cause": summary["errors_by_cause"],
        "output_tokens": ov.get("output_tokens"), "chunks": chunks,
        "ttft_ms": {k: ms(ttft[k]) for k in ("mean", "p50", "p90", "p99")},
        "ttft_max_ms": ms(max((r.chunk_ns[0] - r.start_ns) / 1e9 for r in ok)) if ok else None,
        "ttft_err_pct": pct_err(ms(ttft["mean"]), ttft_ms),
        "itl_ms": {k: ms(itl[k]) for k in ("mean", "p50", "p90", "p99")},
        "itl_err_pct": pct_err(ms(itl["mean"]), step_ms),
        "itl_p99_err_pct": pct_err(ms(itl["p99"]), step_ms),
        "gaps_late_pct": late, "gaps_bunched_pct": bunched,
        "e2e_mean_s": ov["e2e_s"]["mean"], "e2e_ideal_s": (ttft_ms + (output_len - 1) * step_ms) / 1000,
        "output_tps": ov["output_tps"], "ideal_tps": ideal_tps,
        "tps_pct_of_ideal": (ov["output_tps"] / ideal_tps * 100) if ov["output_tps"] else None,
        "wall_s": wall, "chunks_per_s": chunks / wall if wall > 0 else None,
        "client_cpu_s": raw["client_cpu_s"], "client_cpu_pct": raw["client_cpu_s"] / wall * 100,
        "client_us_per_chunk": raw["client_cpu_s"] / chunks * 1e6 if chunks else None,
        "server_cpu_s": raw["server_cpu_s"],
        "server_cpu_pct": raw["server_cpu_s"] / wall * 100 if raw["server_cpu_s"] is not None else None,
    }


def capacity_figures(raw: dict[str, Any], c: int, n_requests: int, output_len: int) -> dict[str, Any]:
    records: list[RequestRecord] = raw["records"]
    ok = [r for r in records if r.ok]
    chunks = sum(len(r.chunk_ns) for r in records)
    wall, ccpu, scpu = raw["wall_s"], raw["client_cpu_s"], raw["server_cpu_s"]
    cpct = ccpu / wall * 100
    spct = scpu / wall * 100 if scpu is not None else None
    if cpct >= 90 and (spct is None or spct < 90):
        verdict = "client-bound (client used ~all of its core)"
    elif spct is not None and spct >= 90 and cpct < 90:
        verdict = "server-bound (server used ~all of its core)"
    elif spct is not None and spct >= 90 and cpct >= 90:
        verdict = "both sides saturated their cores"
    else:
        verdict = "neither side saturated its core (CPU contention from other processes, or I/O/scheduling bound)"
    return {
        "concurrency": c, "requests": n_requests, "output_len": output_len, "ok": len(ok),
        "errors": len(records) - len(ok), "chunks": chunks,
        "tokens": sum(r.tokens for r in ok), "wall_s": wall,
        "chunks_per_s": chunks / wall if wall > 0 else None,
        "client_cpu_s": ccpu, "client_cpu_pct": cpct,
        "client_us_per_chunk": ccpu / chunks * 1e6 if chunks else None,
        "server_cpu_s": scpu, "server_cpu_pct": spct,
        "server_us_per_chunk": scpu / chunks * 1e6 if chunks and scpu is not None else None,
        "bottleneck": verdict,
    }


# ---- printing ---------------------------------------------------------------------------------
def f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def goal_for(c: int) -> float | None:
    return {32: 1.0}.get(c, 3.0 if c >= 512 else None)


def print_fidelity(levels: Sequence[dict[str, Any]], ttft_ms: float, step_ms: float) -> None:
    print(f"\nFidelity (true TTFT {ttft_ms:g} ms, true ITL {step_ms:g} ms; err = (measured - true) / true)")
    hdr = (f"{'conc':>5} {'reqs':>5} {'err':>4} | {'TTFT mean':>9} {'err%':>7} {'p99':>7} {'max':>7} | "
           f"{'ITL mean':>8} {'err%':>7} {'p50':>6} {'p99':>7} {'late%':>6} {'bunch%':>6} | {'goal':>10}")
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
        print(f"{L['concurrency']:>5} {L['requests']:>5} {L['errors']:>4} | {f(t['mean'], '9.2f')} "
              f"{f(L['ttft_err_pct'], '+7.2f')} {f(t['p99'], '7.2f')} {f(L['ttft_max_ms'], '7.2f')} | "
              f"{f(i['mean'], '8.3f')} {f(L['itl_err_pct'], '+7.2f')} {f(i['p50'], '6.2f')} {f(i['p99'], '7.2f')} "
              f"{f(L['gaps_late_pct'], '6.2f')} {f(L['gaps_bunched_pct'], '6.2f')} | {goal:>10}")
    print("  (ms; late% = chunk gaps > 1.5x step, bunch% = chunk gaps < 0.25x step: chunks queued and read in a burst)")
    print(f"\nThroughput and CPU (ideal tok/s = requests * output / (waves * (TTFT + (output-1) * step)))")
    hdr = (f"{'conc':>5} | {'out tok/s':>10} {'ideal':>10} {'%ideal':>7} | {'E2E mean s':>10} {'ideal':>6} | "
           f"{'wall s':>7} {'chunks/s':>9} | {'client CPU s':>12} {'%wall':>6} {'us/chunk':>8} | "
           f"{'server CPU s':>12} {'%wall':>6}")
    print(hdr)
    print("-" * len(hdr))
    for L in levels:
        print(f"{L['concurrency']:>5} | {f(L['output_tps'], '10.0f')} {L['ideal_tps']:>10.0f} "
              f"{f(L['tps_pct_of_ideal'], '7.2f')} | {f(L['e2e_mean_s'], '10.4f')} {L['e2e_ideal_s']:>6.3f} | "
              f"{L['wall_s']:>7.3f} {f(L['chunks_per_s'], '9.0f')} | {L['client_cpu_s']:>12.3f} "
              f"{L['client_cpu_pct']:>6.1f} {f(L['client_us_per_chunk'], '8.1f')} | "
              f"{f(L['server_cpu_s'], '12.3f')} {f(L['server_cpu_pct'], '6.1f')}")
    for L in levels:
        if L["errors"]:
            print(f"  concurrency {L['concurrency']}: errors by cause {L['errors_by_cause']}")


def print_capacity(cap: dict[str, Any], server_cmd: str) -> None:
    print(f"\nCapacity (server: TTFT 0 ms, 0 ms steps, 1 token/chunk; {cap['requests']} requests x "
          f"{cap['output_len']} tokens at concurrency {cap['concurrency']})")
    print(f"  chunks received     : {cap['chunks']:,} in {cap['wall_s']:.2f} s wall "
          f"({cap['ok']} ok, {cap['errors']} errors)")
    print(f"  client ingest rate  : {f(cap['chunks_per_s'], ',.0f')} chunks/s")
    print(f"  client CPU          : {cap['client_cpu_s']:.2f} s = {cap['client_cpu_pct']:.1f}% of wall, "
          f"{f(cap['client_us_per_chunk'], '.1f')} us/chunk")
    print(f"  server CPU          : {f(cap['server_cpu_s'], '.2f')} s = {f(cap['server_cpu_pct'], '.1f')}% of wall, "
          f"{f(cap['server_us_per_chunk'], '.1f')} us/chunk")
    print(f"  bottleneck          : {cap['bottleneck']}")
    if cap["wall_s"] < 5:
        print("  note: ran under 5 s; raise --capacity-requests or --capacity-output-len for a steadier figure")


# ---- main -------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="32,256,512", help="comma-separated levels (default 32,256,512)")
    p.add_argument("--quick", action="store_true", help="smoke run: concurrency 32 only, short capacity run")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    p.add_argument("--waves", type=int, default=1, help="requests per level = waves * concurrency (default 1)")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--step-ms", type=float, default=10.0)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--capacity-concurrency", type=int, default=256)
    p.add_argument("--capacity-output-len", type=int, default=2048)
    p.add_argument("--capacity-requests", type=int, default=None, help="default: 2 * capacity concurrency")
    p.add_argument("--no-capacity", action="store_true", help="skip the capacity run")
    p.add_argument("--no-pin", action="store_true", help="do not pin server to CPU 0 and client to CPU 1")
    a = p.parse_args(argv)
    a.levels = [32] if a.quick else [int(x) for x in a.concurrency.split(",") if x.strip()]
    if a.capacity_requests is None:
        a.capacity_requests = a.capacity_concurrency if a.quick else 2 * a.capacity_concurrency
    if a.quick:
        a.capacity_output_len = min(a.capacity_output_len, 256)
    return a


def setup_pinning(want: bool) -> str:
    if not want:
        return "off (--no-pin)"
    if not hasattr(os, "sched_setaffinity"):
        return "unavailable (no os.sched_setaffinity on this platform)"
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= cpus:
        return f"skipped (CPUs {SERVER_CPU} and {CLIENT_CPU} not both available: {sorted(cpus)})"
    os.sched_setaffinity(0, {CLIENT_CPU})
    return f"server -> CPU {SERVER_CPU}, client (this process) -> CPU {CLIENT_CPU}"


def raise_nofile(need: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return str(soft)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    # SIGTERM -> SystemExit so the finally blocks stop the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pinning = setup_pinning(not a.no_pin)
    nofile = raise_nofile(2 * max(a.levels + [a.capacity_concurrency]) + 256)
    env = {"python": platform.python_version(), "aiohttp": aiohttp.__version__, "cpus": os.cpu_count(),
           "pinning": pinning, "nofile": nofile, "loadavg_before": os.getloadavg()}
    print(f"speedbench client-overhead benchmark  (python {env['python']}, aiohttp {env['aiohttp']}, "
          f"{env['cpus']} CPUs, loadavg {' '.join(f'{x:.2f}' for x in env['loadavg_before'])})")
    print(f"pinning: {pinning}")
    print(f"fidelity: one token per chunk, output {a.output_len}, TTFT {a.ttft_ms:g} ms, step {a.step_ms:g} ms; "
          f"{a.waves} wave(s) = {a.waves} x concurrency requests per level, warmup 0, fresh client per level")
    out: dict[str, Any] = {"env": env, "settings": {k: v for k, v in vars(a).items()}, "levels": [], "capacity": None}
    t_start = time.perf_counter()

    with MockServer(ttft_ms=a.ttft_ms, step_ms=a.step_ms, output_len=a.output_len, pin=not a.no_pin) as srv:
        print(f"server: {' '.join(srv.cmd[1:])}\n        pid {srv.proc.pid}: {srv.banner}")  # type: ignore[union-attr]
        out["settings"]["fidelity_server_cmd"] = srv.cmd
        for c in a.levels:
            n = a.waves * c
            raw = asyncio.run(drive(srv.base_url, c, n, a.output_len, f"c{c}", srv))
            level = fidelity_level(raw, c, n, a.ttft_ms, a.step_ms, a.output_len)
            out["levels"].append(level)
            print(f"  concurrency {c:>4}: {level['ok']}/{n} ok, wall {level['wall_s']:.2f} s, "
                  f"TTFT err {f(level['ttft_err_pct'], '+.2f')}%, ITL err {f(level['itl_err_pct'], '+.2f')}%",
                  flush=True)
    print_fidelity(out["levels"], a.ttft_ms, a.step_ms)

    if not a.no_capacity:
        with MockServer(ttft_ms=0, step_ms=0, output_len=a.capacity_output_len, pin=not a.no_pin) as srv:
            print(f"\nserver: {' '.join(srv.cmd[1:])}\n        pid {srv.proc.pid}")  # type: ignore[union-attr]
            raw = asyncio.run(drive(srv.base_url, a.capacity_concurrency, a.capacity_requests,
                                    a.capacity_output_len, "cap", srv))
            out["capacity"] = capacity_figures(raw, a.capacity_concurrency, a.capacity_requests,
                                               a.capacity_output_len)
            out["settings"]["capacity_server_cmd"] = srv.cmd
        print_capacity(out["capacity"], " ".join(srv.cmd))

    env["loadavg_after"] = os.getloadavg()
    env["total_s"] = time.perf_counter() - t_start
    print(f"\ntotal {env['total_s']:.1f} s; loadavg after {' '.join(f'{x:.2f}' for x in env['loadavg_after'])}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"figures written to {a.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
