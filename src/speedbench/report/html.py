"""Self-contained HTML pages: a provenance header, sections of figures (inline SVG) and tables, and a glossary
of the definitions every caption links to.  No script, no external resource: the file opens offline in any
browser and prints as it shows (docs/report.md).

A :class:`Page` collects blocks and renders once; each figure (:class:`Chart`, a matplotlib figure) is drawn into
the page as SVG when added; with a ``figures_dir`` (``--figures DIR``) the page also gives each as SVG and PNG file
contents (``figure_files``).  ``results/pages.py`` writes the page and those files.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speedbench import __version__

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# term -> (name, definition, where the docs define it): every caption names one and links to it
DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "al": (
        "Acceptance length (AL)",
        "tokens per target verification step, the bonus token counted: AL = 1 + accepted / steps; macro = the mean "
        "over requests, token-weighted = 1 + Σ accepted / Σ steps. The interval is a 95% percentile bootstrap over "
        "conversations.",
        "docs/metrics.md, Acceptance",
    ),
    "position": (
        "Per-position acceptance",
        "conditional AR_i = P(L ≥ i+1) / P(L ≥ i): the chance draft token i is accepted given tokens 1..i-1 were; "
        "joint AR_i = P(L ≥ i+1): the share of steps that accepted at least i drafts (L = accepted drafts).",
        "docs/metrics.md, Per-position acceptance",
    ),
    "histogram": (
        "Acceptance histogram",
        "steps by the number of tokens each produced (accepted drafts + the bonus token): 1 = nothing accepted.",
        "docs/metrics.md, Acceptance",
    ),
    "ttft": (
        "Time to first token (TTFT)",
        "first streamed chunk's arrival − request start, from the client's perf_counter_ns timestamps.",
        "docs/metrics.md, Latency",
    ),
    "tpot": ("Time per output token (TPOT)", "(E2E − TTFT) / (tokens − 1), per request.", "docs/metrics.md, Latency"),
    "itl": (
        "Inter-token latency (ITL)",
        "each gap between successive chunks divided by the tokens the later chunk carried, counted once per token.",
        "docs/metrics.md, Latency",
    ),
    "cdf": (
        "Cumulative distribution (CDF)",
        "the share of values at or below x: read a percentile where the curve crosses it (0.5 = the median).",
        "docs/report.md",
    ),
    "speedup": (
        "Speedup",
        "mean user tok/s of B (the SD run) / mean user tok/s of A (its baseline) over the requests successful in "
        "both (paired by question id and turn); user tok/s = (tokens − 1) / (last chunk − first chunk). The "
        "interval is a paired 95% percentile bootstrap over conversations (crossed with repeats when there are "
        "several); > 1 = SD faster per user.",
        "docs/statistics.md",
    ),
    "pareto": (
        "Pareto front",
        "the configurations no other beats in both output tok/s (Σ tokens / run span: the server's throughput) and "
        "mean user tok/s (what one user sees).",
        "docs/sweep.md, Report",
    ),
    "bias": (
        "Synthetic vs real",
        "a random-token dataset's figure over a real dataset's of the same input length; the interval is an "
        "unpaired bootstrap (each side resampled on its own). 1 = random tokens measure what real text does.",
        "docs/statistics.md, Synthetic vs real",
    ),
    "model": (
        "Speedup model",
        "tau(k) = 1 + Σ_{i≤k} Π_{j≤i} conditional AR_j per category; step time t(b, k) = c0 [+ cb·b] + c1·b(k+1) "
        "[+ a knee], fitted on the batch each cell really held; per-user tok/s = tokens per step / t. Prediction "
        "intervals from resampled conversations and the fit's uncertainty.",
        "docs/model.md",
    ),
    "errors": (
        "Errors by cause",
        "failed requests by the cause recorded with each (connect_error, timeout, http_<status>, …); a failed "
        "request is kept in records.jsonl, never counted as a success.",
        "docs/reliability.md",
    ),
    "invariants": (
        "Invariants and cross-checks",
        "equations every record must satisfy (tokens = first token + steps + accepted, per-position counts "
        "non-increasing, …) and the client's sums checked against the engine's own counters when it has them.",
        "docs/metrics.md, Invariants",
    ),
}

WIDE_INCHES = 7.0  # a figure drawn wider than this takes the page's whole width (figures.WIDE)

CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#d9dde5; --ok:#1a7f37; --bad:#c62828; --na:#8a8f99; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 1180px; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 2px solid var(--line);
padding-bottom: 4px; } h3 { font-size: 15px; margin: 20px 0 6px; }
p.sub { color: var(--muted); margin: 0 0 16px; } p.note { color: var(--muted); margin: 6px 0; }
table { border-collapse: collapse; margin: 8px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #f4f6f9; font-weight: 600; } td.num { text-align: right; }
table.kv th { width: 190px; background: none; color: var(--muted); font-weight: 500; }
.ok { color: var(--ok); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; } .na { color: var(--na); }
.banner { border-left: 4px solid var(--bad); background: #fdecea; padding: 8px 12px; margin: 10px 0; }
.banner.good { border-color: var(--ok); background: #e9f5ec; }
.figs { display: flex; flex-wrap: wrap; gap: 18px; }
figure.chart { margin: 8px 0; flex: 0 1 calc(50% - 9px); min-width: 460px; }
figure.chart.wide { flex-basis: 100%; }
figure.chart svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 2px; }
figcaption b { color: var(--ink); } figcaption a { color: inherit; }
dl.defs dt { font-weight: 600; margin-top: 8px; } dl.defs dd { margin: 2px 0 0 18px; color: var(--muted); }
code { font-size: 12.5px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
@media print { body { max-width: none; padding: 0; } figure.chart { break-inside: avoid; } h2 { break-after: avoid; } }
"""


@dataclass
class Chart:
    """One figure: a matplotlib figure with what the page says of it.  ``definition`` is a key of
    :data:`DEFINITIONS`; ``source`` names where the numbers come from (per-request stats, engine counters, client
    chunk timestamps, the fitted model)."""

    id: str
    title: str
    caption: str
    definition: str
    source: str
    figure: Figure
    wide: bool = False

    def svg(self) -> str:
        """The figure as inline SVG (text kept as text, ids salted with the chart's id so that several figures
        share one page without clashing)."""
        import matplotlib

        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": self.id}):
            self.figure.savefig(buf, format="svg", bbox_inches="tight")
        text = buf.getvalue()
        text = text[text.index("<svg") :]
        text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
        return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(self.title)}" ', 1)

    def files(self) -> dict[str, bytes]:
        """``<id>.svg`` and ``<id>.png`` (150 dpi): their names and contents."""
        import matplotlib

        svg, png = io.BytesIO(), io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": self.id}):
            self.figure.savefig(svg, format="svg", bbox_inches="tight")
        self.figure.savefig(png, format="png", dpi=150, bbox_inches="tight")
        return {f"{self.id}.svg": svg.getvalue(), f"{self.id}.png": png.getvalue()}


@dataclass(frozen=True)
class Cell:
    """A table cell with a style: ``ok``, ``bad``, ``na`` or ``num`` (right-aligned)."""

    text: str
    cls: str = ""


CellLike = str | Cell | int | float | None


@dataclass
class Page:
    """One page: title, subtitle, blocks in order.  ``render()`` returns the whole document."""

    title: str
    subtitle: str = ""
    figures_dir: Path | None = None  # --figures: each chart also written there as SVG and PNG
    blocks: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    _figs_open: bool = False

    def _close_figs(self) -> None:
        if self._figs_open:
            self.blocks.append("</div>")
            self._figs_open = False

    def section(self, title: str, intro: str = "") -> None:
        self._close_figs()
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        self.blocks.append(f'<h2 id="{slug}">{html.escape(title)}</h2>')
        if intro:
            self.note(intro)

    def heading(self, title: str) -> None:
        self._close_figs()
        self.blocks.append(f"<h3>{html.escape(title)}</h3>")

    def note(self, text: str) -> None:
        self._close_figs()
        self.blocks.append(f'<p class="note">{html.escape(text)}</p>')

    def banner(self, text: str, good: bool = False) -> None:
        self._close_figs()
        self.blocks.append(f'<div class="banner{" good" if good else ""}">{html.escape(text)}</div>')

    def facts(self, rows: Iterable[tuple[str, CellLike]]) -> None:
        """A two-column table of facts (the provenance header)."""
        self._close_figs()
        body = "".join(f"<tr><th>{html.escape(k)}</th>{_td(v)}</tr>" for k, v in rows)
        self.blocks.append(f'<table class="kv">{body}</table>')

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[CellLike]], caption: str = "") -> None:
        self._close_figs()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
        cap = f'<p class="note">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{cap}")

    def chart(self, chart: Chart) -> None:
        """A figure with its caption: title, what it shows, its definition (linked to the glossary) and source."""
        if chart.definition not in DEFINITIONS:
            raise KeyError(f"chart {chart.id}: unknown definition {chart.definition!r}")
        if any(c.id == chart.id for c in self.charts):
            raise ValueError(f"two charts named {chart.id!r} on one page")
        if not self._figs_open:
            self.blocks.append('<div class="figs">')
            self._figs_open = True
        self.charts.append(chart)
        term = DEFINITIONS[chart.definition][0]
        cap = (
            f"<b>{html.escape(chart.title)}.</b> {html.escape(chart.caption)} "
            f'Definition: <a href="#def-{chart.definition}">{html.escape(term)}</a>. '
            f"Source: {html.escape(chart.source)}."
        )
        wide = " wide" if chart.wide or chart.figure.get_figwidth() > WIDE_INCHES else ""  # drawn wide: shown wide
        self.blocks.append(
            f'<figure class="chart{wide}" id="fig-{chart.id}" data-chart="{chart.id}">'
            f"{chart.svg()}<figcaption>{cap}</figcaption></figure>"
        )

    def figure_files(self) -> dict[str, bytes]:
        """With a ``figures_dir``: every chart's SVG and PNG file (name -> contents); else none."""
        return {} if self.figures_dir is None else {n: b for c in self.charts for n, b in c.files().items()}

    def render(self) -> str:
        self._close_figs()
        used = sorted({c.definition for c in self.charts}, key=list(DEFINITIONS).index)
        defs = "".join(
            f'<dt id="def-{k}">{html.escape(DEFINITIONS[k][0])}</dt><dd>{html.escape(DEFINITIONS[k][1])} '
            f"<i>({html.escape(DEFINITIONS[k][2])})</i></dd>"
            for k in used
        )
        glossary = f'<h2 id="definitions">Definitions</h2><dl class="defs">{defs}</dl>' if used else ""
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}{''.join(self.blocks)}{glossary}"
            f"<footer>speedbench {html.escape(__version__)}: every figure is recomputed from the run directories' "
            "records.jsonl and manifest.json; no figure on this page was typed in.</footer></body></html>\n"
        )


def _td(v: CellLike) -> str:
    if isinstance(v, Cell):
        cls = f' class="{v.cls}"' if v.cls else ""
        return f"<td{cls}>{html.escape(v.text)}</td>"
    if v is None:
        return '<td class="na">–</td>'
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def check(value: Any) -> Cell:
    """An invariant's state as a cell: ok / FAILED / n/a."""
    if value is True:
        return Cell("ok", "ok")
    if value is False:
        return Cell("FAILED", "bad")
    return Cell("n/a", "na")
