"""Launch an engine's HTTP server as a child process and manage its life.

Used by the adapters' ``--launch`` mode: pick a free loopback port, start the command with its
output going to a log file (kept in the run directory), wait for the health URL with a timeout,
and stop the whole process group at the end (also on Ctrl-C, and when speedbench itself dies:
on Linux the child gets SIGTERM when its parent exits).

Secrets (config.Secrets: the API key, URL passwords) never leave through it: the command line it shows
(log header, manifest, errors) and the log lines it quotes are scrubbed, and the log itself is scrubbed once the
server has stopped (a server may print its own ``--api-key``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from speedbench.config import Secrets
from speedbench.engines.errors import EngineStartError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def scrub_file(path: Path, secrets: Secrets) -> None:
    """Rewrite a text file (a server's log) with ``secrets`` scrubbed, line by line; untouched when clean."""
    tmp = path.with_name(path.name + ".scrubbing")
    changed = False
    try:
        with (
            open(path, encoding="utf-8", errors="surrogateescape", newline="") as src,
            open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as dst,
        ):
            for line in src:
                clean = secrets.scrub(line)
                changed = changed or clean != line
                dst.write(clean)
        if changed:
            os.replace(tmp, path)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class ServerProcess:
    """One engine server: ``await start()`` returns once ``health_url`` answers 200."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        health_url: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 600.0,
        secrets: Secrets | None = None,
    ) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.health_url = health_url
        self.log_path = Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.secrets = secrets or Secrets()

    @property
    def command_line(self) -> str:
        """The command as shown (log header, manifest, errors): secrets scrubbed."""
        return self.secrets.scrub(shlex.join(self.cmd))

    def _failure(self, what: str) -> EngineStartError:
        last = tail(self.log_path)
        quoted = ("; last lines of the log:\n" + last) if last else "; the log is empty"
        message = f"{self.name} {what} (command: {self.command_line}; log: {self.log_path}){quoted}"
        return EngineStartError(self.secrets.scrub(message))

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"# speedbench: {self.command_line}\n".encode())
            log.flush()
            t0 = time.monotonic()
            try:
                self.proc = subprocess.Popen(
                    self.cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    preexec_fn=_die_with_parent,
                )
            except OSError as e:
                raise EngineStartError(
                    self.secrets.scrub(
                        f"cannot start {self.name}: {self.cmd[0]}: {e.strerror or e}; "
                        "install the engine or point --server-bin at it"
                    )
                ) from None
        try:
            await self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    async def _wait_healthy(self, t0: float) -> None:
        assert self.proc is not None
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise self._failure(f"exited with code {code} before it was ready")
                try:
                    async with session.get(self.health_url) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    pass
                if time.monotonic() - t0 > self.startup_timeout_s:
                    raise self._failure(
                        f"did not answer {self.health_url} within {self.startup_timeout_s:.0f} s "
                        "(raise -E startup_timeout=SECONDS if it is just slow)"
                    )
                await asyncio.sleep(0.25)

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM the server's process group, SIGKILL after ``grace_s``; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        with open(self.log_path, "ab") as log:
            log.write(f"# speedbench: server stopped, exit code {proc.returncode}\n".encode())
        scrub_file(self.log_path, self.secrets)
        return proc.returncode
