"""How big a realistic sweep's HTML page is and how fast it opens (issue: "a sweep of 7 concurrencies x 6 draft
lengths x 2 datasets opens in under 2 s and stays under a few MB").

Builds that sweep on the mock engine (virtual clock, batched step cost: 98 cells in a minute or two), fits the
model on one dataset (so the page carries the model's figures too), writes the page with `speedbench report
SWEEP --html`, then opens it in headless Chromium (tests/browser.py) a few times and prints the size, the load
time (navigation start to the load event, the page's own performance timing), the time to build the page, and
where the screenshot is.  Prints figures; asserts nothing.

    .venv/bin/python benchmarks/html_report.py [--out DIR] [--loads 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import view_page  # noqa: E402

SPEEDBENCH = [sys.executable, "-m", "speedbench.cli"]
COST = ["-E", "cost=batch", "-E", "clock=virtual", "-E", "base_ms=10", "-E", "per_token_ms=0.5", "-E", "noise=0.1"]


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*SPEEDBENCH, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="where the sweep goes (default: a temporary folder)")
    ap.add_argument("--loads", type=int, default=5, help="how many times the page is opened")
    ns = ap.parse_args()
    out = Path(ns.out or tempfile.mkdtemp(prefix="html-bench-")) / "sweep"
    grid = ["--sd", "ngram", "-k", "1,2,3,4,5,6", "-c", "1,2,4,8,16,32,64", "--dataset", "starter,humaneval"]
    t_sweep = run(
        ["sweep", "--engine", "mock", *COST, *grid, "-n", "16", "--output-len", "32", "--ignore-eos", "--warmup", "0"]
        + ["--out", str(out), "--no-progress", "--no-html"]
    )
    t_model = run(["model", str(out), "--dataset", "starter", "--holdout", "c=64"])
    page = out / "report.html"
    t_page = run(["report", str(out), "--html", str(page)])
    size = page.stat().st_size
    loads, view = [], None
    for i in range(ns.loads):
        view = view_page(page, out / "report.png" if i == 0 else None)
        loads.append(view.load_ms)
    assert view is not None
    cells = len(list((out / "cells").iterdir()))
    print(f"sweep: {cells} cells (7 concurrencies x 6 draft lengths x 2 datasets + baselines) in {t_sweep:.0f} s")
    print(f"model fit + model.html: {t_model:.1f} s; report --html (tables, bootstrap, figures, page): {t_page:.1f} s")
    print(f"page: {size / 1e6:.2f} MB, {len(view.figures)} figures, title {view.title!r}")
    print(
        f"load (navigation start -> load event), {ns.loads} loads: median {statistics.median(loads):.0f} ms, "
        f"max {max(loads):.0f} ms"
    )
    print(
        f"console errors {len(view.console_errors)}, page errors {len(view.page_errors)}, "
        f"requests leaving the file {len(view.external_requests)}"
    )
    print(f"screenshot: {out / 'report.png'}")


if __name__ == "__main__":
    main()
