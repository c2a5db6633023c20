"""Open a speedbench HTML page in headless Chromium (Debian's `chromium`, driven by Playwright over the DevTools
protocol) and say what a person would see: console errors, page errors, every request the page made, each
figure's drawn size and how much of it is ink, the load time, and a full-page screenshot.

Used by tests/test_html_report.py and benchmarks/html_report.py.  No browser is downloaded: Playwright is pointed
at the system binary (``$SPEEDBENCH_CHROMIUM`` or the first of chromium / chromium-browser on PATH).
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# background networking, component updates, sync, crash upload and the like off: any request left is the page's
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--disable-breakpad",
    "--no-sandbox",  # CI runs as root in a container
    "--disable-dev-shm-usage",
]


def chromium_binary() -> str | None:
    env = os.environ.get("SPEEDBENCH_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class FigureView:
    id: str
    width: float  # CSS pixels, as laid out
    height: float
    svg_elements: int  # drawable SVG elements inside (paths, lines, text, …)
    texts: int  # SVG text elements (labels, ticks)
    ink: float  # share of the figure's screenshot pixels that are not (near) white
    colours: int  # distinct colours in the figure's screenshot (quantised)


@dataclass
class PageView:
    url: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    figures: list[FigureView] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    load_ms: float = 0.0  # navigation start -> load event end (the page's own performance timing)
    title: str = ""
    screenshot: Path | None = None

    @property
    def external_requests(self) -> list[str]:
        """Requests to anything but the page's own file (and data: URLs inside it)."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]


def _ink(png: bytes) -> tuple[float, int]:
    """The share of pixels that are not near-white, and the distinct colours (4 bits a channel)."""
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    if not len(px):
        return 0.0, 0
    dark = float((px.min(axis=1) < 235).mean())
    q = px >> 4
    colours = len(np.unique(q[:, 0].astype(int) * 256 + q[:, 1].astype(int) * 16 + q[:, 2].astype(int)))
    return dark, colours


FIGURES_JS = """() => Array.from(document.querySelectorAll('figure.chart')).map(f => {
  const svg = f.querySelector('svg'); const r = (svg || f).getBoundingClientRect();
  return {id: f.dataset.chart, width: r.width, height: r.height,
          svg: svg ? svg.querySelectorAll('path, line, rect, text, polyline, polygon, circle, use').length : 0,
          texts: svg ? svg.querySelectorAll('text').length : 0,
          caption: (f.querySelector('figcaption') || {}).textContent || ''};
})"""


def view_page(html: Path, screenshot: Path | None = None, width: int = 1280) -> PageView:
    """Load ``html`` (a file) in headless Chromium and look at it."""
    from playwright.sync_api import sync_playwright

    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium) and SPEEDBENCH_CHROMIUM not set")
    url = html.resolve().as_uri()
    view = PageView(url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: view.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: view.page_errors.append(str(e)))
            page.on("request", lambda r: view.requests.append(r.url))
            page.goto(url, wait_until="load")
            view.title = page.title()
            view.load_ms = float(
                page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0]; "
                    "return n ? n.loadEventEnd - n.startTime : -1; }"
                )
            )
            for f in page.evaluate(FIGURES_JS):
                el = page.locator(f'figure.chart[data-chart="{f["id"]}"] svg')
                ink, colours = _ink(el.screenshot()) if f["width"] > 0 and f["height"] > 0 else (0.0, 0)
                view.figures.append(FigureView(f["id"], f["width"], f["height"], f["svg"], f["texts"], ink, colours))
                view.captions.append(f["caption"])
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
                view.screenshot = screenshot
        finally:
            browser.close()
    return view
