"""An unwritable or impossible --out is refused in one line before any engine is started or launched (issue 11)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "speedbench.cli", *args], capture_output=True, text=True, timeout=120)


def _fake_server(tmp_path: Path) -> tuple[Path, Path]:
    """A server binary that leaves a marker when it is launched (and then idles like a server)."""
    marker = tmp_path / "launched"
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake, marker


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_an_unwritable_out_is_refused_before_the_server_is_launched(tmp_path: Path, where: str) -> None:
    if where == "under_a_file":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only directory")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "run"
    fake, marker = _fake_server(tmp_path)
    p = _run(
        "run",
        "--engine",
        "vllm",
        "--launch",
        "--model",
        "m",
        "--server-bin",
        str(fake),
        "-n",
        "1",
        "--no-progress",
        "--out",
        str(out),
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith(f"error: --out {out}: cannot write a run directory there") and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr and not marker.exists()


def test_an_out_that_is_a_file_is_refused_for_the_in_process_engines(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("not a directory")
    p = _run("run", "--engine", "mock", "-n", "1", "--output-len", "4", "--no-progress", "--out", str(out))
    assert p.returncode == 2 and p.stderr.startswith(f"error: --out {out}: cannot write"), p.stdout + p.stderr
    assert out.read_text() == "not a directory"
