"""Console tables of a sweep report (``speedbench report SWEEP_DIR``): per (SD method, dataset, engine options)
a concurrency x draft length table of the speedup over the paired baseline, of AL and of output tok/s, and the
Pareto front of output tok/s against mean per-user tok/s.  The figures (``results.sweep_figures``) come from
``analysis.sweep_report``; this module only draws them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from speedbench.report.console import with_interval
from speedbench.results.estimates import Estimate
from speedbench.results.sweep_figures import CellFigures, SweepReport, SweepTable, SyntheticBias

BEST = "*"


def interval_text(e: Estimate | None, digits: int = 2) -> str:
    """'1.23 [1.10, 1.35]', with ' n.s.' when the interval holds 1; the point alone without an interval."""
    return "-" if e is None else with_interval(e, digits)


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


class Footnotes:
    """Numbered notes of the cells shown as '-' (one number per distinct note)."""

    def __init__(self) -> None:
        self.notes: dict[str, int] = {}

    def mark(self, cell: CellFigures) -> str:
        if not cell.note:
            return ""
        n = self.notes.setdefault(cell.note, len(self.notes) + 1)
        return f" ({n})"

    def lines(self) -> list[str]:
        return [f"({n}) {note}" for note, n in self.notes.items()]


def grid_table(
    t: SweepTable, what: str, text: Callable[[CellFigures], str], notes: Footnotes, mark_best: bool = False
) -> Table:
    """Rows concurrency, columns draft length; ``text`` draws a cell; the best draft length per row gets ``*``."""
    table = Table(title=f"{what}: {t.title}")
    table.add_column("concurrency", justify="right")
    for k in t.ks:
        table.add_column(f"k={k}", justify="right")
    for c in t.concurrencies:
        row = []
        for k in t.ks:
            cell = t.cells.get((c, k))
            if cell is None:
                row.append("")
                continue
            raw = text(cell)
            mark = notes.mark(cell)  # no figure, or some repeats left out: the note says why
            if raw != "-" and mark_best and t.best_k.get(c) == k:
                row.append(f"[bold]{escape(raw)} {BEST}[/bold]{escape(mark)}")
            else:
                row.append(escape(raw + mark))
        table.add_row(str(c), *row)
    return table


def _speedup(cell: CellFigures) -> str:
    return interval_text(cell.speedup)


def _al(cell: CellFigures) -> str:
    return interval_text(cell.al)


def _output(cell: CellFigures) -> str:
    return _f(cell.output_tps)


def pareto_table(report: SweepReport) -> Table:
    table = Table(title="Output tok/s vs mean per-user tok/s (every cell; * = on the Pareto front)")
    for name in ("cell", "sd", "k", "c", "dataset", "output tok/s", "user tok/s", "speedup", "front"):
        table.add_column(name, justify="left" if name in ("cell", "sd", "dataset") else "right")
    for c in report.cells:
        table.add_row(
            escape(c.id),
            escape(c.sd),
            str(c.k),
            str(c.concurrency),
            escape(c.dataset),
            _f(c.output_tps),
            _f(c.user_tps_mean),
            "" if c.sd == "none" else escape(interval_text(c.speedup)),
            BEST if report.on_front.get(c.id) else "",
        )
    return table


def bias_tables(report: SweepReport) -> list[Table]:
    """Synthetic vs real: one table per (SD method, ISL, real set, synthetic set, engine options), a row per
    (concurrency, k)."""
    groups: dict[tuple[str, int, str, str, tuple[tuple[str, str], ...]], list[SyntheticBias]] = {}
    for b in report.bias:
        groups.setdefault((b.sd, b.isl, b.real, b.synthetic, b.engine_options), []).append(b)
    tables = []
    for (sd, isl, real, synthetic, opts), rows in groups.items():
        extra = ",".join(f"{k}={v}" for k, v in opts)
        title = f"Synthetic vs real (unpaired): {sd}, ISL {isl:,}: {real} vs {synthetic}" + (
            f" ({extra})" if extra else ""
        )
        table = Table(title=escape(title))
        for name in ("c", "k", "conv.", "AL real", "AL synthetic", "AL syn/real", "speedup real", "speedup synthetic"):
            table.add_column(name, justify="right")
        table.add_column("speedup syn/real", justify="right")
        for b in sorted(rows, key=lambda b: (b.concurrency, b.k)):
            table.add_row(
                str(b.concurrency),
                str(b.k),
                f"{b.conversations[0]}/{b.conversations[1]}",
                escape(interval_text(b.al_real)),
                escape(interval_text(b.al_synthetic)),
                escape(interval_text(b.al_ratio)),
                escape(interval_text(b.speedup_real)),
                escape(interval_text(b.speedup_synthetic)),
                escape(interval_text(b.speedup_ratio)),
            )
        tables.append(table)
    return tables


def print_sweep_report(report: SweepReport, console: Console, files: Sequence[str] = ()) -> None:
    notes = Footnotes()
    for t in report.tables:
        console.print(grid_table(t, "Speedup over the baseline", _speedup, notes, mark_best=True))
        console.print(grid_table(t, "AL", _al, notes))
        console.print(grid_table(t, "Output tok/s", _output, notes))
    console.print(pareto_table(report))
    console.print(
        escape(
            "speedup = mean user tok/s of the SD cell / of its baseline cell (sd none, same dataset, concurrency and "
            "engine options) over their paired requests; [lo, hi] = 95% percentile interval of a paired bootstrap "
            f"over conversations ({report.resamples} resamples, seed {report.seed}); n.s. = the interval holds 1; "
            f"{BEST} = the best draft length of the row (highest speedup among the significantly faster, else the "
            "highest). AL = mean over the SD cell's paired requests of 1 + accepted/steps with its interval, or "
            "without an interval the run's AL over drafted steps. Output tok/s: each cell's run summary."
            + (
                f" Every figure pools {report.repeats} repeats of its cell (output tok/s: their mean); the bootstrap "
                "also resamples the repeats, so the intervals include the spread between them (docs/statistics.md)."
                if report.repeats > 1
                else ""
            )
        ),
        soft_wrap=True,
    )
    for line in notes.lines():
        console.print(escape(line), soft_wrap=True)
    for table in bias_tables(report):
        console.print(table)
    if report.bias:
        console.print(
            escape(
                "synthetic vs real: the same SD settings on random-token prompts and on real prompts of the same input "
                "length; AL and speedup of each over its own baseline (paired); syn/real = their ratio, > 1: random "
                "tokens overstate it, < 1: understate it. The two are different prompts, so the ratio's 95% interval "
                "comes from resampling each side on its own (unpaired; wider than a paired one); n.s. = it holds 1 "
                "(no bias shown). conv. = conversations real/synthetic."
            ),
            soft_wrap=True,
        )
    for f in files:
        console.print(escape(f"wrote {f}"), soft_wrap=True)
