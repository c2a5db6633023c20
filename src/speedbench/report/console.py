"""Console tables for a summary (rich).  Every figure comes from summary.json, whose
sources are named under the tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from speedbench.metrics.figures import Column, Figure, shown_in
from speedbench.metrics.models import Drift, GroupStats, Invariant, RunSummary

if TYPE_CHECKING:
    from speedbench.results.comparison import CategoryComparison
    from speedbench.results.estimates import Estimate
    from speedbench.results.loader import RunResult


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


ACCEPTANCE_LEGEND = (
    "AL engine steps = 1 + accepted/steps as the engine counts steps (the reference engine: every decode step; "
    "vLLM: only those that drafted), summary.json acceptance_length. AL drafted steps = 1 + accepted/drafted "
    "steps, the same on every engine (vLLM's and the paper's AL). mean = mean over requests; tok-w = "
    "token-weighted, 1 + sum(accepted)/sum(drafted steps), as vllm bench prints. tok/step all decode = tokens "
    "after the first / all decode steps, drafted or not (what the speedup follows). no draft = share of decode "
    "steps that drafted nothing. cond ARi = conditional acceptance rate of draft position i, P(L>=i+1)/P(L>=i) "
    "(not joint). '-' = not known for this engine or group (summary.json drafted_steps_source and "
    "decode_steps_source say why)."
)


def cell_text(v: Any, column: Column) -> str:
    """A figure's value as a console table shows it ("-": not known)."""
    if v is None:
        return "-"
    if column.percent:
        return f"{v:.1%}"
    return f"{v * column.scale:.{column.digits}f}" if isinstance(v, float) else str(v)


def acceptance_table(summary: RunSummary, title: str = "Acceptance per category") -> Table:
    """A row per category and overall, a column per figure metrics/figures.py shows in it (``acceptance``);
    a per-position figure has a column per draft position.  The first row says each figure's one source
    (``column_sources``); a row whose figure has another source, or none, shows '-' and the caption says why."""
    k = summary.k
    shown = shown_in("acceptance")
    sources = column_sources(summary)
    t = Table(title=title, caption=ACCEPTANCE_LEGEND + sources_caption(sources), caption_justify="left")
    t.add_column("category", no_wrap=True)
    for f, c in shown:
        for label in [c.label.format(i=i + 1) for i in range(k)] if f.per_position else [c.label]:
            t.add_column(label, justify="right")

    def width(f: Figure) -> int:
        return k if f.per_position else 1

    t.add_row(
        "source",
        *(
            SHORT.get(sources[f.name].source, "-") if f.name in sources else ""
            for f, _ in shown
            for _ in range(width(f))
        ),
        style="dim",
    )

    def row(name: str, e: GroupStats, style: str | None = None) -> None:
        cells = [name]
        for f, c in shown:
            v = f.shown(e, c) if f.name not in sources or sources[f.name].shows(e) else None
            cells += (
                [cell_text(v[i] if v is not None and i < len(v) else None, c) for i in range(k)]
                if f.per_position
                else [cell_text(v, c)]
            )
        t.add_row(*cells, style=style)

    for cat, e in summary.per_category.items():
        row(cat, e)
    row("overall", summary.overall, style="bold")
    return t


# which field of a group names the source of each acceptance figure of the table
ROW_SOURCE = {
    "acceptance_length": "acceptance_length_source",
    "acceptance_length_drafted_steps": "drafted_steps_source",
    "acceptance_length_drafted_steps_token_weighted": "drafted_steps_source",
    "tokens_per_decode_step": "decode_steps_source",
    "undrafted_step_share": "decode_steps_source",
    "acceptance_rate": "acceptance_source",
    "conditional_acceptance_rate": "per_position_source",
}
# chunks give tokens per decode step (shown as "tok/step all decode"), not these: a step that drafted nothing and
# one whose drafts were all rejected both arrive as a one-token chunk
NOT_FROM_CHUNKS = frozenset(
    {"acceptance_length", "acceptance_rate", "conditional_acceptance_rate", "undrafted_step_share"}
)
# means over requests: only each request's own stats give them
MEAN_OVER_REQUESTS = frozenset({"acceptance_length", "acceptance_length_drafted_steps"})
SHORT = {"per_request": "per req", "counter_delta": "counters", "chunks": "chunks"}
CHUNKS_WHY = (
    "chunks cannot give it: a step that drafted nothing and one whose drafts were all rejected both arrive as a "
    "one-token chunk (tokens per chunk is 'tok/step all decode'); --per-category-windows on gives the rates from "
    "the engine's counters"
)
MEAN_WHY = "a mean over requests needs each request's own SD stats, which this engine does not send"


@dataclass(frozen=True)
class ColumnSource:
    """The one source of a figure's column (``""``: none) and why rows show '-' (empty: every row has it)."""

    figure: str
    source: str
    why: str = ""

    def shows(self, group: GroupStats) -> bool:
        return bool(self.source) and row_source(self.figure, group)[0] == self.source


def row_source(figure: str, group: GroupStats) -> tuple[str, str]:
    """(the source of a figure in one row, why it has none): ("", why) when the row has no value from a source
    it may show (chunks for an AL figure, a mean over requests from counters)."""
    source = str(getattr(group, ROW_SOURCE[figure]))
    value = getattr(group, figure)
    if source.startswith("none"):
        return "", source.removeprefix("none").lstrip(": ") or "no source"
    if source == "chunks" and figure in NOT_FROM_CHUNKS:
        return "", CHUNKS_WHY
    if figure in MEAN_OVER_REQUESTS and source != "per_request":
        return "", MEAN_WHY
    if value is None or value == []:
        return "", f"not known from {source}"
    return source, ""


def column_sources(summary: RunSummary) -> dict[str, ColumnSource]:
    """Each acceptance figure's one source for all its rows: the overall row's when it has one, else the most
    common among the categories; rows with another source (or none) show '-', with the reason."""
    groups = [summary.overall, *(g for g in summary.per_category.values() if g.requests)]
    out: dict[str, ColumnSource] = {}
    for figure in ROW_SOURCE:
        rows = [row_source(figure, g) for g in groups]
        names = [r for r, _ in rows]
        chosen = names[0] or max(sorted(set(names) - {""}), key=names.count, default="")
        whys = sorted(
            {why if src == "" else f"from {src}, not {chosen}" for src, why in rows if src != chosen or not src}
        )
        out[figure] = ColumnSource(figure, chosen, "; ".join(whys))
    return out


def sources_caption(sources: dict[str, ColumnSource]) -> str:
    """The caption's sentences on sources: what the source row means, and why a column has '-' rows."""
    labels = {f.name: c.label.format(i="i") for f, c in shown_in("acceptance")}
    gaps = [
        f"'-' in {labels.get(s.figure, s.figure)}: {s.why}." for s in sources.values() if s.why and s.figure in labels
    ]
    return (
        " source = where every row of a column comes from (per req: the engine's per-request stats; counters: the "
        "engine's counter deltas, per category from its own window; chunks: tokens per streamed chunk)."
        + "".join(" " + g for g in gaps)
    )


def timing_table(summary: RunSummary) -> Table:
    o = summary.overall
    t = Table(title="Timing (client timestamps)")
    t.add_column("metric")
    for stat in ("mean", "p50", "p90", "p99"):
        t.add_column(stat, justify="right")
    for f, c in shown_in("timing"):  # a row per distribution metrics/figures.py shows here
        d = f.value(o)
        t.add_row(c.label, *(cell_text(v, c) for v in (d.mean, d.p50, d.p90, d.p99)))
    return t


def make_console() -> Console:
    """A console; wide enough for the tables when output goes to a file or CI log."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(acceptance_table(summary))
    console.print(timing_table(summary))
    o = summary.overall
    src = summary.sources
    console.print(
        f"output throughput: {_f(o.output_tps, 1)} tok/s over {o.output_tokens} tokens; "
        f"acceptance source: overall={src.acceptance}, per category={src.acceptance_per_category}, "
        f"per position={src.acceptance_per_position}; drafted steps: {o.drafted_steps_source}; "
        f"decode steps: {o.decode_steps_source}; AL counts the bonus token"
    )
    if summary.errors_by_cause:
        console.print(
            "errors by cause: " + ", ".join(f"{c}={n}" for c, n in sorted(summary.errors_by_cause.items())),
            style="yellow",
        )
    for inv in shown_invariants(summary.invariants):
        mark = {True: "[green]ok[/green]", False: "[red]FAILED[/red]", None: "[dim]n/a[/dim]"}[inv.ok]
        console.print(f"  invariant {escape(inv.name)}: {mark} - {escape(inv.detail)}")
    check = summary.sd_check
    if check is not None and check.ok is False:
        console.print(f"SD LABEL WRONG: {escape(check.detail)}", style="bold red", soft_wrap=True)
    drift = drift_line(summary.drift)
    if drift is not None:
        console.print(escape(drift), style="bold red", soft_wrap=True)


DRIFT_LABELS = {"ttft_s": "TTFT", "tpot_s": "TPOT"}


def seconds(v: float | None) -> str:
    """A time as the drift line shows it: seconds from 0.1 s, else milliseconds."""
    if v is None:
        return "-"
    return f"{v:.2f} s" if v >= 0.1 else f"{v * 1000:.1f} ms"


def drift_line(drift: Drift | None) -> str | None:
    """The one loud line of a run whose speed drifted during the measured window (summary.json ``drift``), e.g.
    ``DRIFT: TTFT first third 2.63 s, last third 0.93 s (0.35x [0.30, 0.41]); ...``; None when it did not (or
    was not tested)."""
    if drift is None or not drift.drifted:
        return None
    figs = drift.drifted_figures
    faster = any((f.ratio or 1.0) < 1 for f in figs)
    slower = any((f.ratio or 1.0) > 1 for f in figs)
    advice = []
    if faster:
        advice.append("faster at the end: the server was probably not warm - rerun, or use a longer --warmup")
    if slower:
        advice.append(
            "slower at the end: the server slowed down during the run (other load, throttling, a queue building "
            "up, or later turns' longer histories) - rerun it"
        )
    return f"DRIFT: {drifted_figures(drift)}; " + "; ".join(advice)


def drifted_figures(drift: Drift) -> str:
    """'TTFT first third 2.63 s, last third 0.93 s (0.35x [0.30, 0.41]), 30 requests a third' for each figure
    that drifted."""
    parts = [
        f"{DRIFT_LABELS.get(f.name, f.name)} first third {seconds(f.first)}, last third {seconds(f.last)} "
        f"({_f(f.ratio, 2)}x [{_f(f.ci_low, 2)}, {_f(f.ci_high, 2)}])"
        for f in drift.drifted_figures
    ]
    return "; ".join(parts) + f" ({drift.per_third} requests a third)"


def shown_invariants(invariants: Sequence[Invariant]) -> list[Invariant]:
    """The invariants as the console lists them: with per-category windows (names ``check[segment S category]``)
    the checks of one kind that hold in every window are one line; any that fails or does not apply is its own."""
    out: list[Invariant] = []
    kinds: dict[str, list[Invariant]] = {}
    for inv in invariants:
        name, _, window = inv.name.partition("[segment ")
        if " " in window.rstrip("]") and inv.ok is True:
            kinds.setdefault(name, []).append(inv)
        else:
            out.append(inv)
    for name, held in kinds.items():
        out.append(Invariant(name=f"{name}[every category window]", ok=True, detail=f"holds in {len(held)} windows"))
    return out


def _interval(e: Estimate, digits: int = 2, sign: bool = False) -> str:
    """'[lo, hi]', followed by 'n.s.' when the interval holds the value of no effect; '-' with no interval."""
    if e.lo is None or e.hi is None:
        return "-"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"[{fmt.format(e.lo)}, {fmt.format(e.hi)}]" + (" n.s." if e.significant is False else "")


def with_interval(e: Estimate, digits: int = 2, sign: bool = False) -> str:
    """'point [lo, hi]' (and 'n.s.'); the point alone when there is no interval; '-' when there is no point."""
    if e.point is None:
        return "-"
    point = f"{e.point:{'+' if sign else ''}.{digits}f}"
    return point if e.lo is None else f"{point} {_interval(e, digits, sign)}"


def _half_width(e: Estimate) -> str:
    return "-" if e.half_width is None else f"±{e.half_width:.2f}"


COMPARISON_LEGEND = (
    "Over the paired requests only. AL = mean over requests of 1 + accepted/steps (engine steps), with its 95% "
    "interval. speedup = mean user tok/s B / mean user tok/s A; 95% CI: percentile interval of a paired bootstrap "
    "over conversations (docs/statistics.md); n.s. = not significant (the interval contains 1); ± = the "
    "interval's half-width; conv. = paired conversations (the unit resampled). '-' in an interval: fewer than 2 "
    "conversations (no spread between conversations to resample) or the figure is not known."
)


def comparison_table(rows: Sequence[CategoryComparison], base_name: str, other_name: str) -> Table:
    """Per-category paired comparison (the last row: overall): requests paired, AL of each run with its
    interval, mean user tok/s of each run over the paired requests only, the speedup (ratio of those means)
    with its interval and half-width, and the conversations resampled."""
    t = Table(title=f"{other_name} vs {base_name} (paired requests only)", caption=COMPARISON_LEGEND)
    t.caption_justify = "left"
    t.add_column("category")
    t.add_column("paired", justify="right")
    t.add_column(f"AL {base_name} [95% CI]", justify="right")
    t.add_column(f"AL {other_name} [95% CI]", justify="right")
    t.add_column(f"user tok/s {base_name}", justify="right")
    t.add_column(f"user tok/s {other_name}", justify="right")
    t.add_column("speedup", justify="right")
    t.add_column("speedup 95% CI", justify="right")
    t.add_column("±", justify="right")
    t.add_column("conv.", justify="right")
    for i, r in enumerate(rows):
        s = r.stats
        t.add_row(
            r.category,
            str(r.paired),
            with_interval(s["al_a"], 3),
            with_interval(s["al_b"], 3),
            _f(r.a.user_tps.mean, 1),
            _f(r.b.user_tps.mean, 1),
            "-" if r.speedup is None else f"{r.speedup:.2f}x",
            _interval(s["speedup"]),
            _half_width(s["speedup"]),
            str(s.conversations),
            style="bold" if i == len(rows) - 1 else None,
        )
    return t


def ratios_legend(target_half_width: float) -> str:
    hw = f"±{target_half_width:g}"
    return (
        "Paired ratios B/A over the paired requests, each with its 95% interval (bootstrap over conversations): "
        "TTFT and E2E = ratio of the mean per request (< 1: B faster); system tok/s = ratio of Σ output tokens / "
        "Σ E2E × the run's mean requests in flight (> 1: B serves more). AL B-A = difference of the ALs. n.s. = "
        "the interval contains the value of no effect (1 for a ratio, 0 for a difference). conv. for "
        f"{hw} = about how many conversations the group needs for a speedup interval {hw} wide: conv. × "
        "(half-width / target)² (docs/statistics.md)."
    )


def ratios_table(
    rows: Sequence[CategoryComparison], base_name: str, other_name: str, target_half_width: float = 0.05
) -> Table:
    """Per category and overall: TTFT, E2E latency and system output tok/s ratios B/A and the AL difference,
    each with its interval, and the conversations a category needs for a speedup half-width of ± target."""
    t = Table(
        title=f"{other_name}/{base_name}: latency and system throughput (paired ratios, 95% CI)",
        caption=ratios_legend(target_half_width),
    )
    t.caption_justify = "left"
    t.add_column("category")
    t.add_column("conv.", justify="right")
    t.add_column("TTFT ratio", justify="right")
    t.add_column("E2E ratio", justify="right")
    t.add_column("system tok/s ratio", justify="right")
    t.add_column(f"AL {other_name}-{base_name}", justify="right")
    t.add_column(f"conv. for ±{target_half_width:g}", justify="right")
    for i, r in enumerate(rows):
        s = r.stats
        needed = s.conversations_needed(target_half_width)
        t.add_row(
            r.category,
            str(s.conversations),
            with_interval(s["ttft_ratio"]),
            with_interval(s["e2e_ratio"]),
            with_interval(s["system_tps_ratio"]),
            with_interval(s["al_diff"], 3, sign=True),
            "-" if needed is None else str(needed),
            style="bold" if i == len(rows) - 1 else None,
        )
    return t


def _status_line(result: RunResult) -> str | None:
    """The run's state when it is not ``complete``: what the figures cover and how to finish it."""
    status, path, n = result.manifest.status, result.path, len(result.records)
    selected = len(result.manifest.dataset.question_ids)
    if status == "complete":
        return None
    state = {
        "interrupted": f"run {path} is INTERRUPTED",
        "running": f"run {path} is RUNNING or its client was killed",
        "created": f"run {path} was CREATED but never started",
    }[status]
    if_idle = " once no client is writing it" if status == "running" else ""
    cause = result.manifest.stop_cause
    if status == "interrupted" and cause:
        state += f" ({cause})"
    return (
        f"{state} (manifest status {status!r}): figures cover only the {n} finished records "
        f"(turns of {selected} selected conversations); finish it{if_idle} with speedbench run --resume {path}"
    )


def _torn_line(result: RunResult) -> str | None:
    if result.torn_line is None:
        return None
    return (
        f"{result.path / 'records.jsonl'}: line {result.torn_line} is half-written (the run was killed mid-write) "
        f"and is left out of every figure; speedbench run --resume {result.path} drops it and runs that request again"
    )


def _no_success_line(result: RunResult) -> str | None:
    o, s = result.summary.overall, result.summary
    if o.requests > 0:
        return None
    if not result.records:
        return f"run {result.path}: no finished request in records.jsonl: no figures"
    causes = ", ".join(f"{c}={n}" for c, n in sorted(s.errors_by_cause.items()))
    line = f"run {result.path}: no request succeeded ({o.errors} failed{': ' + causes if causes else ''}): "
    line += "no acceptance or timing figures"
    d = s.counter_delta
    if d is not None and d.steps > 0:
        line += (
            f"; the engine's counters moved ({d.steps} steps, {d.accepted} accepted: summary.json counter_delta) "
            "but no request of this run succeeded, so they are not this run's figures"
        )
    return line


def status_lines(result: RunResult) -> list[str]:
    """What a reader must know before any figure of a run: it is not complete, its records.jsonl has a torn
    last line, or none of its requests succeeded.  Empty for a complete, readable run with successes."""
    return [x for x in (_status_line(result), _torn_line(result), _no_success_line(result)) if x]


def print_status_lines(result: RunResult, console: Console) -> None:
    for line in status_lines(result):
        console.print(escape(line), style="bold red", soft_wrap=True)


def lossless_table(result: dict[str, Any]) -> Table:
    """check-lossless: the verdict, the identical share and the first mismatches (or the score test)."""
    o = result["outputs"]
    verdict = {"lossless": "LOSSLESS", "not_lossless": "NOT LOSSLESS", "inconclusive": "INCONCLUSIVE"}[
        result["verdict"]
    ]
    t = Table(
        title=f"check-lossless: {result['engine']} sd={result['sd']} k={result['k']} "
        f"T={result['temperature']}: {verdict}"
    )
    t.add_column("figure")
    t.add_column("value")
    t.add_row("mode", result["mode"])
    share = o["identical_share"]
    t.add_row("identical outputs", f"{o['identical']}/{o['pairs']}" + ("" if share is None else f" ({share:.1%})"))
    t.add_row("request errors (either run)", str(len(o["errors"])))
    ctl = result.get("control")
    if ctl is not None:
        t.add_row(
            "control: baseline vs baseline again",
            f"{ctl['identical']}/{ctl['pairs']} identical (the engine's own run-to-run determinism)",
        )
    if result.get("note"):
        t.add_row("note", result["note"])
    t.add_row(
        "SD run AL (token-weighted) / AR", f"{_f(result['sd_acceptance_length'])} / {_f(result['sd_acceptance_rate'])}"
    )
    sampling = result.get("scores") is not None
    shown = [] if sampling else o["mismatches"][:10]  # with sampling, outputs differ by chance
    for m in shown:
        t.add_row(
            f"mismatch {m['question_id']} turn {m['turn']}",
            f"first divergence at {m['unit']} {m['first_divergence']} "
            f"(lengths {m['baseline_len']}/{m['sd_len']}): {m['baseline_at']!r} vs {m['sd_at']!r}",
        )
    if len(o["mismatches"]) > len(shown):
        t.add_row("…", f"{len(o['mismatches']) - len(shown)} mismatches (first divergence each) in lossless.json")
    sc = result.get("scores")
    if sc:
        t.add_row(
            "mean log-prob/token under target",
            f"baseline {_f(sc['baseline_mean_logprob'])} (n={sc['n_baseline']}) "
            f"vs SD {_f(sc['sd_mean_logprob'])} (n={sc['n_sd']})",
        )
        t.add_row(
            "surprise z (|z| <= 3: sampled from the target)",
            f"SD {_f(sc['sd_surprise_z'], 2)} over {sc['tokens_sd']} tokens; baseline (control) "
            f"{_f(sc['baseline_surprise_z'], 2)} over {sc['tokens_baseline']} tokens",
        )
        t.add_row("paired z of per-prompt mean log-prob", f"{_f(sc['paired_z'], 2)} (n={sc['n_paired']})")
    return t


def engines_table(rows: list[dict[str, str]]) -> Table:
    """`speedbench engines`: one row per engine (engines.registry.listing())."""
    t = Table(title="engines")
    columns = (
        ("name", "name"),
        ("installed", "installed"),
        ("extra", "extra"),
        ("capabilities", "capabilities"),
        ("sd", "--sd"),
        ("summary", "what it is"),
    )
    for _, header in columns:
        t.add_column(header)
    for row in rows:
        t.add_row(*(escape(row[key]) for key, _ in columns))
    return t
