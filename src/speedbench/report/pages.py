"""The HTML pages of one run and of a comparison of two (docs/report.md).  Everything comes from the run
directories (manifest, records, the summary recomputed from them); the intervals and the comparison
(``results.estimates``, ``results.comparison``) come from analysis/."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from speedbench.metrics.figures import shown_in
from speedbench.metrics.latency import itl_s, tpot_s, ttft_s
from speedbench.metrics.models import GroupStats, RunSummary
from speedbench.records import RequestRecord
from speedbench.report.console import drift_line, status_lines, with_interval
from speedbench.report.figures import Band, Series, bars, cdfs, forest, interval_bars, lines
from speedbench.report.html import Cell, CellLike, Chart, Page, check
from speedbench.results.comparison import CategoryComparison, Pairing
from speedbench.results.estimates import Estimate
from speedbench.results.loader import RunResult
from speedbench.results.manifest import Manifest

PER_REQUEST = "per-request SD stats in records.jsonl"
TIMESTAMPS = "client perf_counter_ns timestamps of each streamed chunk (records.jsonl)"


def band(e: Estimate | None) -> Band:
    return Band(None) if e is None else Band(e.point, e.lo, e.hi)


def _short_hash(h: str) -> str:
    return h if len(h) <= 23 else h[:23] + "…"


def engine_version(m: Manifest) -> str:
    """What the engine said of its version: a server's /version, else the libraries an in-process engine runs."""
    if m.engine is None:
        return "not started"
    extra = m.engine.model_extra or {}
    raw = extra.get("server_version")
    if isinstance(raw, str) and raw:
        try:
            v = json.loads(raw)
            if isinstance(v, dict) and "version" in v:
                return str(v["version"])
        except ValueError:
            pass
        return raw
    libs = [f"{k} {extra[k]}" for k in ("torch", "transformers") if isinstance(extra.get(k), str)]
    return ", ".join(libs) if libs else "not reported by the engine"


def provenance(result: RunResult) -> list[tuple[str, str]]:
    """The header of a run: what was run, on what, from which data, when, where."""
    m, cfg = result.manifest, result.manifest.config
    e = cfg.engine
    extra = (m.engine.model_extra or {}) if m.engine is not None else {}
    sd = (m.engine.sd if m.engine is not None else None) or e.sd or "the engine's default method"
    sd_text = f"{sd}, k = {m.k}" + (f", draft model {e.draft_model}" if e.draft_model else "")
    if sd == "none" or m.k <= 0:
        sd_text = "off"
    rows = [
        ("run directory", str(result.path)),
        ("status", m.status + (f" ({m.stop_cause})" if m.stop_cause else "")),
        ("engine", f"{e.kind} ({engine_version(m)})" + (", launched by speedbench" if e.launch else "")),
        ("model", str(extra.get("model") or e.model or "the engine's default")),
        ("speculative decoding", sd_text),
        (
            "dataset",
            f"{m.dataset.name}: {m.dataset.selected} of {m.dataset.rows} conversations, "
            f"{_short_hash(m.dataset.content_hash)}",
        ),
        (
            "load",
            f"concurrency {cfg.concurrency}, output length {cfg.output_len or 'engine default'}, temperature "
            f"{cfg.temperature}" + (", ignore_eos" if cfg.ignore_eos else "") + f", seed {cfg.seed}",
        ),
        ("requests", f"{result.summary.overall.requests} succeeded, {result.summary.overall.errors} failed"),
        ("speedbench", m.speedbench_version),
        ("date (UTC)", f"{m.created_utc} → {m.finished_utc or 'not finished'}"),
        ("host", f"{m.host.hostname}, {m.host.platform}, {m.host.cpus} CPUs, Python {m.host.python}"),
    ]
    for a in m.arrivals:
        rows.append((f"traffic (segment {a.get('segment', 0)})", str(a.get("summary", ""))))
        if a.get("behind"):
            rows.append(("WARNING", str(a["behind"])))
    server = extra.get("server")
    if isinstance(server, dict) and server.get("command"):
        rows.append(("server command", str(server["command"])))
    if m.fresh_server is not None:
        fresh = {True: "yes", False: "no", None: "not known"}[m.fresh_server.fresh]
        rows.append(("freshly started engine", f"{fresh}: {m.fresh_server.why}"))
    return rows


# ---- one run -----------------------------------------------------------------------------------------


def _categories(summary: RunSummary) -> list[str]:
    return sorted(summary.per_category)


def _al_chart(prefix: str, summary: RunSummary, intervals: Mapping[str, Estimate]) -> Chart:
    cats = [*_categories(summary), "overall"]
    bands = []
    for c in cats:
        g = summary.overall if c == "overall" else summary.per_category[c]
        e = intervals.get(c)
        bands.append(band(e) if e is not None else Band(g.acceptance_length))
    fig = interval_bars(cats, {"AL": bands}, "acceptance length (tokens per step)", ref=1.0)
    return Chart(
        f"{prefix}al-per-category",
        "Acceptance length per category",
        "Macro AL (mean over requests) with its 95% interval; the dashed line is 1 (no draft token accepted).",
        "al",
        PER_REQUEST,
        fig,
    )


def _position_charts(prefix: str, summary: RunSummary, k: int) -> list[Chart]:
    out = []
    for kind, attr, what in (
        ("conditional", "conditional_acceptance_rate", "P(draft i accepted | drafts 1..i-1 accepted)"),
        ("joint", "joint_acceptance_rate", "share of steps accepting ≥ i drafts"),
    ):

        def rates(g: GroupStats, attr: str = attr) -> list[Band]:
            values = list(getattr(g, attr))[:k]
            return [Band(v) for v in values] + [Band(None)] * (k - len(values))  # positions it never reached

        series = [Series(c, list(range(1, k + 1)), rates(g)) for c, g in sorted(summary.per_category.items())]
        series.append(Series("overall", list(range(1, k + 1)), rates(summary.overall), bold=True))
        fig = lines(series, "draft position i", f"{kind} acceptance rate", integer_x=True, ylim=(0, 1.02))
        out.append(
            Chart(
                f"{prefix}{kind}-acceptance",
                f"{kind.capitalize()} acceptance per position",
                f"{what}, per category; overall in black.",
                "position",
                PER_REQUEST,
                fig,
            )
        )
    return out


def _histogram_chart(prefix: str, g: GroupStats) -> Chart | None:
    hist = {int(k): v for k, v in g.histogram.items()}
    if not hist:
        return None
    keys = sorted(hist)
    fig = bars([str(k) for k in keys], [hist[k] for k in keys], "tokens produced by the step", "steps")
    return Chart(
        f"{prefix}acceptance-histogram",
        "Acceptance histogram",
        f"All {sum(hist.values())} steps of the run by the tokens each produced.",
        "histogram",
        PER_REQUEST,
        fig,
    )


def latency_values(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    ok = [r for r in records if r.ok]
    return {
        "ttft": [v for r in ok if (v := ttft_s(r)) is not None],
        "tpot": [v for r in ok if (v := tpot_s(r)) is not None],
        "itl": [v for r in ok for v in itl_s(r)],
    }


LATENCY = (
    ("ttft", "TTFT", "time to first token (ms)"),
    ("tpot", "TPOT", "time per output token (ms)"),
    ("itl", "ITL", "inter-token latency (ms)"),
)


def latency_charts(prefix: str, sides: Mapping[str, Sequence[RequestRecord]], note: str) -> list[Chart]:
    """The TTFT, TPOT and ITL CDFs of one or more sets of records (overlaid)."""
    values = {name: latency_values(recs) for name, recs in sides.items()}
    out = []
    for key, short, label in LATENCY:
        series = {name: v[key] for name, v in values.items()}
        if not any(series.values()):
            continue
        fig = cdfs(series, label, scale=1000.0)
        out.append(
            Chart(f"{prefix}{key}-cdf", f"{short} distribution", f"CDF of {short} {note}.", key, TIMESTAMPS, fig)
        )
    return out


def _errors_block(page: Page, prefix: str, summary: RunSummary) -> None:
    causes = sorted(summary.errors_by_cause.items(), key=lambda kv: -kv[1])
    if not causes:
        page.note("No request failed.")
        return
    page.chart(
        Chart(
            f"{prefix}errors-by-cause",
            "Errors by cause",
            f"{sum(n for _, n in causes)} failed requests by recorded cause.",
            "errors",
            "each failed record's error cause (records.jsonl)",
            bars([c for c, _ in causes], [n for _, n in causes], "cause", "failed requests", bar_color="#c62828"),
        )
    )


def _fmt(v: float | None, digits: int = 2, scale: float = 1.0) -> str | None:
    return None if v is None else f"{v * scale:.{digits}f}"


def category_rows(summary: RunSummary) -> list[list[str | Cell | None]]:
    """A row per category and overall, a cell per figure metrics/figures.py shows on the page (``page``): counts
    as numbers (a flagged one other than 0 marked bad), the rest with the column's digits and scale."""
    from speedbench.report.console import column_sources

    sources = column_sources(summary)  # one source per column: a row with another (or none) shows '-'
    rows: list[list[str | Cell | None]] = []
    for c, g in [*sorted(summary.per_category.items()), ("overall", summary.overall)]:
        row: list[str | Cell | None] = [c]
        for f, col in shown_in("page"):
            v = f.shown(g, col) if f.name not in sources or sources[f.name].shows(g) else None
            if isinstance(v, int):
                row.append(Cell(str(v), "num bad" if col.flag and v else "num"))
            else:
                row.append(_fmt(v, col.digits, col.scale))
        rows.append(row)
    return rows


CATEGORY_HEADERS = ["category", *(col.label for _, col in shown_in("page"))]


def page_sources(summary: RunSummary) -> str:
    """Where the per-category table's acceptance columns come from, and why a column has '-' rows."""
    from speedbench.report.console import SHORT, column_sources

    sources = column_sources(summary)
    parts = []
    for f, col in shown_in("page"):
        src = sources.get(f.name)
        if src is None:
            continue
        text = f"{col.label}: {SHORT.get(src.source, 'no source')}"
        parts.append(text + (f" ('-': {src.why})" if src.why else ""))
    return "Sources: " + "; ".join(parts) + "." if parts else ""


def invariant_rows(summary: RunSummary) -> list[list[str | Cell | None]]:
    return [[i.name, check(i.ok), i.detail] for i in summary.invariants]


def run_page(
    result: RunResult, al_intervals: Mapping[str, Estimate], figures_dir: Path | None = None, resamples: int = 0
) -> Page:
    """One run: provenance, state, invariants, acceptance (per category with intervals, per position, histogram),
    latency CDFs, errors by cause, the per-category table."""
    s, m = result.summary, result.manifest
    page = Page(f"speedbench run: {result.path.name}", f"{m.config.engine.kind} · {m.dataset.name}", figures_dir)
    page.facts(provenance(result))
    for line in status_lines(result):
        page.banner(line)
    drift = drift_line(s.drift)
    if drift is not None:
        page.banner(drift)
    failed = s.failed_invariants
    page.section("Invariants and cross-checks")
    if failed:
        page.banner(f"{len(failed)} of {len(s.invariants)} checks FAILED: the figures below may be wrong.")
    elif s.invariants:
        page.banner(f"every check that applies holds ({len(s.invariants)} checks).", good=True)
    page.table(["check", "state", "detail"], invariant_rows(s))
    page.section(
        "Acceptance", f"acceptance source: {s.sources.acceptance}; per position: {s.sources.acceptance_per_position}."
    )
    if m.k <= 0 or s.overall.steps == 0:
        page.note("Speculative decoding was off (or no request reported a step): no acceptance figures.")
    else:
        page.chart(_al_chart("", s, al_intervals))
        hist = _histogram_chart("", s.overall)
        if hist is not None:
            page.chart(hist)
        if any(v is not None for v in s.overall.conditional_acceptance_rate):
            for c in _position_charts("", s, m.k):
                page.chart(c)
        else:
            page.note("No per-position acceptance: the engine reported no per-position counts for these requests.")
        if resamples:
            page.note(f"AL intervals: percentile bootstrap over conversations, {resamples} resamples.")
    page.section("Latency")
    for c in latency_charts("", {result.path.name: result.records}, "over the run's successful requests"):
        page.chart(c)
    page.section("Errors")
    _errors_block(page, "", s)
    page.section("Per category")
    page.table(
        CATEGORY_HEADERS, category_rows(s), "p50/p99: percentiles over requests (ITL: over tokens). " + page_sources(s)
    )
    return page


# ---- two runs -----------------------------------------------------------------------------------------


def comparison_page(
    names: tuple[str, str],
    results: tuple[RunResult, RunResult],
    pairing: Pairing,
    rows: Sequence[CategoryComparison],
    resamples: int,
    seed: int,
    figures_dir: Path | None = None,
    cautions: Sequence[str] = (),
) -> Page:
    """A (baseline) against B: provenance side by side, what was paired and dropped, per-category speedup with its
    paired interval, AL side by side, latency CDFs overlaid over the paired requests, the table.  ``cautions``: what
    may make the verdict wrong (a side that drifted, one freshly started server and not the other), one banner
    each."""
    a, b = results
    page = Page(
        f"speedbench comparison: {a.path.name} vs {b.path.name}", f"A = {names[0]}, B = {names[1]}", figures_dir
    )
    pa, pb = dict(provenance(a)), dict(provenance(b))
    page.table(["", "A", "B"], [[k, pa.get(k), pb.get(k)] for k in dict.fromkeys([*pa, *pb])])
    for run in results:
        for line in status_lines(run):
            page.banner(line)
    for line in cautions:
        page.banner(line)
    page.section("What was compared")
    if pairing.differences:
        page.banner("NOT like for like (--force): " + "; ".join(str(d) for d in pairing.differences))
    page.note(pairing.describe() + ". Every figure below is over the paired requests only.")
    cats = [r.category for r in rows]
    page.section("Speedup")
    page.chart(
        Chart(
            "speedup-per-category",
            "Speedup per category",
            "Mean user tok/s of B over A with the paired 95% interval; green: B significantly faster, red: slower, "
            "grey: the interval holds 1.",
            "speedup",
            f"{TIMESTAMPS}; paired bootstrap over conversations, {resamples} resamples, seed {seed}",
            forest(cats, [band(r.stats["speedup"]) for r in rows], "speedup (B / A, mean user tok/s)"),
        )
    )
    if any(r.a.steps or r.b.steps for r in rows):
        page.chart(
            Chart(
                "al-a-vs-b",
                "Acceptance length, A and B",
                "Macro AL of each run over the paired requests, with 95% intervals.",
                "al",
                PER_REQUEST,
                interval_bars(
                    cats,
                    {"A": [band(r.stats["al_a"]) for r in rows], "B": [band(r.stats["al_b"]) for r in rows]},
                    "acceptance length (tokens per step)",
                    ref=1.0,
                ),
            )
        )
    page.section("Latency")
    for c in latency_charts("", {"A": pairing.a, "B": pairing.b}, "over the paired requests, A and B overlaid"):
        page.chart(c)
    page.section("Per category")
    table: list[list[CellLike]] = []
    for r in rows:
        sp = r.stats["speedup"]
        sig = sp.significant
        table.append(
            [
                r.category,
                Cell(str(r.paired), "num"),
                _fmt(r.a.acceptance_length),
                _fmt(r.b.acceptance_length),
                _fmt(r.a.user_tps.mean, 1),
                _fmt(r.b.user_tps.mean, 1),
                Cell(with_interval(sp), "ok" if sig and (sp.point or 0) > 1 else "bad" if sig else ""),
            ]
        )
    page.table(["category", "paired", "AL A", "AL B", "user tok/s A", "user tok/s B", "speedup [95% CI]"], table)
    return page
