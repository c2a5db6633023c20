"""The figures of the HTML report: a few plotting primitives over plain numbers (matplotlib's object API, no
pyplot state), each returning a ``matplotlib.figure.Figure`` with labelled axes and units.  The pages
(report/pages.py, report/sweep_page.py) choose the data and the words; this module only draws.

Missing values (None, NaN) are left out of a plot, never drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from speedbench.extras import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

NEEDS = ("matplotlib", "report")  # (module, extra) of every figure
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
GOOD, BAD, NEUTRAL = "#1a7f37", "#c62828", "#5b6475"
Num = float | int | None


@dataclass(frozen=True)
class Band:
    """A point with an optional interval (lo, hi); missing values are None or NaN."""

    point: Num
    lo: Num = None
    hi: Num = None

    @property
    def ok(self) -> bool:
        return _ok(self.point)

    @property
    def has_interval(self) -> bool:
        return _ok(self.lo) and _ok(self.hi)

    def values(self) -> tuple[float, float, float]:
        """(point, lo, hi) as floats, NaN where missing (lo = hi = point without an interval)."""
        p = float(self.point) if self.point is not None else math.nan
        if not self.has_interval:
            return p, p, p
        return p, float(self.lo or 0.0), float(self.hi or 0.0)


def _ok(v: Num) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# every figure is drawn at one size (inches) so that, scaled to the page's columns, all have the same type size;
# WIDE ones take the whole width
WIDTH, HEIGHT, WIDE = 6.4, 3.8, 12.8


def new(width: float = WIDTH, height: float = HEIGHT) -> tuple[Figure, Axes]:
    require(*NEEDS, "the HTML report")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, color="#e3e6ec", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _errors(bands: Sequence[Band]) -> tuple[list[float], list[list[float]]]:
    """Points and matplotlib's asymmetric error extents (0 where there is no interval)."""
    vals = [b.values() for b in bands]
    points = [p for p, _, _ in vals]
    lo = [p - lo if not math.isnan(p) else 0.0 for p, lo, _ in vals]
    hi = [hi - p if not math.isnan(p) else 0.0 for p, _, hi in vals]
    return points, [lo, hi]


def interval_bars(
    labels: Sequence[str], series: Mapping[str, Sequence[Band]], ylabel: str, ref: float | None = None
) -> Figure:
    """Bars per label (one bar per series side by side), each with its interval as an error bar."""
    fig, ax = new(WIDE if len(labels) * len(series) > 26 else WIDTH, HEIGHT)
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, bands) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        pts, err = _errors(bands)
        ax.bar(xs, pts, width * 0.92, color=color(i), label=name, yerr=err, capsize=3, ecolor="#333", linewidth=0)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 5 else 0, ha="right")
    ax.set_ylabel(ylabel)
    if ref is not None:
        ax.axhline(ref, color=NEUTRAL, linewidth=1, linestyle="--")
    if len(series) > 1:
        ax.legend(frameon=False, ncols=min(4, len(series)))
    return fig


def forest(labels: Sequence[str], bands: Sequence[Band], xlabel: str, ref: float = 1.0) -> Figure:
    """One row per label: the point and its interval, green when the interval lies above ``ref``, red when below,
    grey when it holds ``ref`` (not significant) or there is no interval."""
    fig, ax = new(WIDTH, max(2.2, 0.3 * len(labels) + 1.0))
    ys = list(range(len(labels)))[::-1]
    for y, b in zip(ys, bands, strict=True):
        if not b.ok:
            continue
        c = NEUTRAL
        p, lo, hi = b.values()
        if b.has_interval:
            c = GOOD if lo > ref else BAD if hi < ref else NEUTRAL
            ax.plot([lo, hi], [y, y], color=c, linewidth=2, solid_capstyle="butt")
        ax.plot([p], [y], "o", color=c, markersize=6)
    ax.axvline(ref, color=NEUTRAL, linewidth=1, linestyle="--")
    ax.set_yticks(ys, labels)
    ax.set_xlabel(xlabel)
    ax.grid(False, axis="y")
    return fig


@dataclass(frozen=True)
class Series:
    """One line: x values and their bands; ``dashed`` for a model's curve against measured points."""

    name: str
    xs: Sequence[float]
    ys: Sequence[Band]
    dashed: bool = False
    bold: bool = False
    filled: bool = False  # the interval as a shaded band (a model) instead of error bars (a measurement)


def lines(
    series: Sequence[Series],
    xlabel: str,
    ylabel: str,
    ref: float | None = None,
    logx: bool = False,
    integer_x: bool = False,
    ylim: tuple[float, float] | None = None,
    dodge: float = 0.0,
) -> Figure:
    """Lines with markers, each point's interval as an error bar (or a shaded band).  ``dodge``: shift series i by
    (i - middle) × dodge along x (× 2^that on a log axis) so that overlapping error bars stay apart."""
    fig, ax = new(WIDTH, HEIGHT)
    mid = (len(series) - 1) / 2
    for i, s in enumerate(series):
        keep = [(x, b) for x, b in zip(s.xs, s.ys, strict=True) if b.ok]
        if not keep:
            continue
        shift = (i - mid) * dodge
        xs = [float(x) * 2**shift if logx else float(x) + shift for x, _ in keep]
        pts, err = _errors([b for _, b in keep])
        c = "#222" if s.bold else color(i)
        ls, lw = ("--" if s.dashed else "-"), (2.4 if s.bold else 1.6)
        if s.filled:
            ax.plot(xs, pts, label=s.name, linestyle=ls, linewidth=lw, color=c)
            lo = [p - e for p, e in zip(pts, err[0], strict=True)]
            hi = [p + e for p, e in zip(pts, err[1], strict=True)]
            ax.fill_between(xs, lo, hi, color=c, alpha=0.15, linewidth=0)
        else:
            ax.errorbar(
                xs,
                pts,
                yerr=err,
                marker="o",
                markersize=4,
                capsize=3,
                label=s.name,
                linestyle=ls,
                linewidth=lw,
                color=c,
            )
    if ref is not None:
        ax.axhline(ref, color=NEUTRAL, linewidth=1, linestyle=":")
    if logx:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_plain())
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=8, ncols=2 if len(series) > 6 else 1)
    return fig


def _plain() -> FuncFormatter:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:g}")


def cdfs(series: Mapping[str, Sequence[float]], xlabel: str, scale: float = 1.0) -> Figure:
    """Empirical CDFs, one step line per series (values × ``scale``, e.g. seconds to ms); a log x axis when the
    values span more than two decades."""
    fig, ax = new(WIDTH, HEIGHT)
    lows, highs = [], []
    for i, (name, values) in enumerate(series.items()):
        v = sorted(x * scale for x in values if _ok(x))
        if not v:
            continue
        n = len(v)
        ax.step(
            v, [(j + 1) / n for j in range(n)], where="post", color=color(i), linewidth=1.6, label=f"{name} (n={n})"
        )
        lows.append(v[0])
        highs.append(v[-1])
    if lows and min(lows) > 0 and max(highs) / min(lows) > 100:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of values ≤ x")
    if series:
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    return fig


def bars(
    labels: Sequence[str], values: Sequence[float], xlabel: str, ylabel: str, bar_color: str = PALETTE[0]
) -> Figure:
    fig, ax = new(WIDTH, HEIGHT)
    ax.bar(range(len(labels)), values, 0.7, color=bar_color)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0)
    for x, v in enumerate(values):
        ax.annotate(f"{v:g}", (x, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no fractional ticks
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False, axis="x")
    return fig


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    group: str  # one colour and legend entry per group
    marked: bool = False  # e.g. on the Pareto front, held out of a fit
    marker: str = "o"  # a second dimension (e.g. the dataset): matplotlib marker


def scatter(
    points: Sequence[Point],
    xlabel: str,
    ylabel: str,
    marked: str,
    connect_marked: bool = False,
    diagonal: bool = False,
    wide: bool = False,
) -> Figure:
    """Points coloured by group; ``marked`` points ringed (and joined in x order with ``connect_marked``, e.g. the
    Pareto front); ``diagonal``: the y = x line (measured vs predicted)."""
    fig, ax = new(WIDE if wide else WIDTH, HEIGHT * 1.2 if wide else HEIGHT)
    groups = list(dict.fromkeys(p.group for p in points))
    for i, g in enumerate(groups):
        mine = [p for p in points if p.group == g]
        for m in dict.fromkeys(p.marker for p in mine):
            at = [p for p in mine if p.marker == m]
            label = g if m == mine[0].marker else None
            ax.scatter([p.x for p in at], [p.y for p in at], s=30, color=color(i), marker=m, label=label, zorder=3)
    ring = sorted((p for p in points if p.marked), key=lambda p: p.x)
    if ring:
        ax.scatter(
            [p.x for p in ring], [p.y for p in ring], s=110, facecolors="none", edgecolors="#111", linewidths=1.3
        )
        ax.scatter([], [], s=110, facecolors="none", edgecolors="#111", label=marked)
        if connect_marked:
            ax.plot([p.x for p in ring], [p.y for p in ring], color="#111", linewidth=1, linestyle="--", zorder=2)
    if diagonal and points:
        lo = min(min(p.x, p.y) for p in points)
        hi = max(max(p.x, p.y) for p in points)
        ax.plot([lo, hi], [lo, hi], color=NEUTRAL, linewidth=1, linestyle=":", label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8, ncols=2 if len(groups) > 6 else 1)
    return fig


def predicted_vs_measured(
    rows: Sequence[tuple[str, float, Band, bool]], unit: str, marked: str = "held out of the fit"
) -> Figure:
    """Measured (x) against predicted (y, with its prediction interval) per cell: (label, measured, predicted,
    held out); held-out cells in red, fitted in blue; the y = x line."""
    fig, ax = new(WIDTH, HEIGHT)
    for held, c, name in ((False, PALETTE[0], "in the fit"), (True, BAD, marked)):
        mine = [r for r in rows if r[3] == held and r[2].ok]
        if not mine:
            continue
        pts, err = _errors([r[2] for r in mine])
        ax.errorbar([r[1] for r in mine], pts, yerr=err, fmt="o", color=c, capsize=3, markersize=5, label=name)
    vals = [v for r in rows if r[2].ok for v in (r[1], r[2].values()[0])]
    if vals:
        lo, hi = min(vals), max(vals)
        ax.plot([lo, hi], [lo, hi], color=NEUTRAL, linewidth=1, linestyle=":", label="predicted = measured")
    ax.set_xlabel(f"measured ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.legend(frameon=False, fontsize=8)
    return fig
