"""The figures of a group of requests (overall, a category, a resample), declared once: ``FIGURES``.

Each ``Figure`` is one key of every group in summary.json: its name, how it is computed, its unit, its label and
the link to its definition (docs/metrics.md), and where it is shown.  Every reader walks the table in its order:
summary.csv's columns (``csv``, results/rundir.py), the console's acceptance and timing tables (``acceptance``,
``timing``, report/console.py), the run page's per-category table (``page``, report/pages.py) and the sweep
tables' per-cell figures (``sweep``).  The order is that of the console and the pages (summary.json keeps the
typed models' order, docs/results.md).

Most figures are computed together by metrics/aggregate.py (they share sums and one choice of source) and are
typed fields of ``GroupStats``: their entry has ``of=None``.  A figure computed on its own has ``of``, a function
of the group's successful records and the run's ``DecodeBasis`` giving a number or None; ``aggregate`` stores its
value in every group (summary.json: after the typed keys; ``GroupStats`` fills None where a group has none).

Adding a figure: write its function, add its entry (where it goes in the table = where the tables show it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord

View = Literal["acceptance", "timing", "page", "sweep"]
Computed = Callable[[Sequence[RequestRecord], DecodeBasis], float | int | None]

VALUE = ("",)  # csv: the figure's value in one column named by the figure
MEAN_P99 = ("mean", "p99")  # csv: a distribution's mean and p99, columns <name>_mean, <name>_p99


@dataclass(frozen=True)
class Column:
    """How a table shows a figure: its header; ``stat``: which statistic of a distribution (None: the value);
    ``digits``; ``scale`` (1000: seconds shown in ms); ``percent``: as a percentage; ``flag``: a value other than 0
    is marked (the run page's failed requests).  The timing table shows every statistic of its rows."""

    label: str
    stat: str | None = None
    digits: int = 3
    scale: float = 1.0
    percent: bool = False
    flag: bool = False


@dataclass(frozen=True)
class Figure:
    """One figure of a group (see the module docstring).  ``per_position``: the figure is one value per draft
    position, shown as k columns ``<per_position>_i`` in summary.csv (``{i}`` in a label: the position)."""

    name: str
    unit: str
    label: str
    doc: str  # its definition: "<file in docs/>#<anchor>"
    of: Computed | None = None
    csv: tuple[str, ...] = ()
    per_position: str | None = None
    acceptance: Column | None = None
    timing: Column | None = None
    page: Column | None = None
    sweep: Column | None = None

    def value(self, stats: Any) -> Any:
        """The figure in a group's stats (a ``GroupStats``)."""
        return getattr(stats, self.name)

    def shown(self, stats: Any, column: Column) -> Any:
        """What ``column`` shows of the figure: the value, or the statistic it names of a distribution."""
        v = self.value(stats)
        return v if column.stat is None else getattr(v, column.stat)


AL = "metrics.md#speculative-decoding"
SAME = "metrics.md#figures-that-mean-the-same-on-every-engine"
TIMING = "metrics.md#timing-client-timestamps"
COUNTS = "results.md#summaryjson-contract"

# fmt: off
FIGURES: tuple[Figure, ...] = (
    Figure("requests", "requests", "requests", COUNTS, csv=VALUE, acceptance=Column("requests"),
           page=Column("requests")),
    Figure("errors", "requests", "failed requests", COUNTS, csv=VALUE, acceptance=Column("errors"),
           page=Column("failed", flag=True)),
    Figure("acceptance_length", "tokens/step", "AL engine steps (mean)", AL, csv=VALUE,
           acceptance=Column("AL engine steps (mean)"), page=Column("AL", digits=2)),
    Figure("acceptance_length_token_weighted", "tokens/step", "AL engine steps (tok-w)", AL, csv=VALUE),
    Figure("acceptance_length_drafted_steps", "tokens/step", "AL drafted steps (mean)", SAME,
           acceptance=Column("AL drafted steps (mean)")),
    Figure("acceptance_length_drafted_steps_token_weighted", "tokens/step", "AL drafted steps (tok-w)", SAME,
           acceptance=Column("AL drafted steps (tok-w)")),
    Figure("tokens_per_decode_step", "tokens/step", "tok/step all decode", SAME,
           acceptance=Column("tok/step all decode")),
    Figure("undrafted_step_share", "share", "no draft", SAME, acceptance=Column("no draft", percent=True)),
    Figure("acceptance_rate", "share", "AR", AL, csv=VALUE, acceptance=Column("AR"), page=Column("AR")),
    Figure("conditional_acceptance_rate", "share", "cond AR{i}", AL, csv=VALUE, per_position="conditional_ar",
           acceptance=Column("cond AR{i}")),
    Figure("joint_acceptance_rate", "share", "joint AR{i}", AL),
    Figure("histogram", "steps", "steps by tokens produced", AL),
    Figure("steps", "steps", "steps (engine's count)", AL),
    Figure("drafted", "tokens", "drafted tokens", AL),
    Figure("accepted", "tokens", "accepted tokens", AL),
    Figure("drafted_steps", "steps", "drafted steps", SAME),
    Figure("drafted_steps_source", "source", "drafted steps from", SAME),
    Figure("decode_steps", "steps", "all decode steps", SAME),
    Figure("decode_tokens", "tokens", "tokens after the first", SAME),
    Figure("undrafted_steps", "steps", "decode steps without a draft", SAME),
    Figure("decode_steps_source", "source", "decode steps from", SAME),
    Figure("acceptance_source", "source", "AL tok-w, AR, steps from", AL),
    Figure("acceptance_length_source", "source", "AL (mean) from", AL),
    Figure("per_position_source", "source", "per-position rates from", AL),
    Figure("ttft_s", "s", "TTFT", TIMING, csv=MEAN_P99, timing=Column("TTFT ms", digits=2, scale=1000),
           page=Column("TTFT p50 ms", "p50", 1, 1000)),
    Figure("tpot_s", "s", "TPOT", TIMING, csv=MEAN_P99, timing=Column("TPOT ms", digits=2, scale=1000),
           page=Column("TPOT p50 ms", "p50", 1, 1000)),
    Figure("itl_s", "s", "ITL", TIMING, csv=MEAN_P99, timing=Column("ITL ms", digits=2, scale=1000),
           page=Column("ITL p99 ms", "p99", 1, 1000)),
    Figure("step_time_s", "s", "step time", TIMING, timing=Column("step time ms", digits=2, scale=1000)),
    Figure("e2e_s", "s", "E2E", TIMING, csv=MEAN_P99, timing=Column("E2E ms", digits=2, scale=1000)),
    Figure("user_tps", "tok/s", "user tok/s", TIMING, csv=MEAN_P99, acceptance=Column("user tok/s", "mean", 1),
           timing=Column("user tok/s", digits=1), page=Column("user tok/s", "mean", 1),
           sweep=Column("user tok/s", "mean", 1)),
    Figure("output_tps", "tok/s", "output tok/s", TIMING, sweep=Column("output tok/s", digits=1)),
    Figure("output_tokens", "tokens", "output tokens", TIMING, csv=VALUE),
)
# fmt: on

COMPUTED: tuple[Figure, ...] = tuple(f for f in FIGURES if f.of is not None)


def shown_in(view: View) -> tuple[tuple[Figure, Column], ...]:
    """The figures a view shows, in table order, each with its column."""
    return tuple((f, c) for f in FIGURES if (c := getattr(f, view)) is not None)


@dataclass(frozen=True)
class CsvColumn:
    """One column of summary.csv: its name, its figure, the statistic of a distribution ("": the value) and the
    draft position (index) of a per-position figure."""

    name: str
    figure: Figure
    stat: str = ""
    position: int | None = None

    def value(self, stats: Any) -> Any:
        v = self.figure.value(stats)
        if self.position is not None:
            return v[self.position] if self.position < len(v) else None
        return getattr(v, self.stat) if self.stat else v


def csv_columns(k: int) -> list[CsvColumn]:
    """summary.csv's columns after ``scope``, in table order (a per-position figure: one per draft position)."""
    out: list[CsvColumn] = []
    for f in FIGURES:
        for stat in f.csv:
            if f.per_position is not None:
                out += [CsvColumn(f"{f.per_position}_{i + 1}", f, position=i) for i in range(k)]
            else:
                out.append(CsvColumn(f"{f.name}_{stat}" if stat else f.name, f, stat))
    return out


def computed(records: Sequence[RequestRecord], basis: DecodeBasis) -> dict[str, float | int | None]:
    """The figures computed on their own, for a group's records (its successful ones count)."""
    ok = [r for r in records if r.ok]
    return {f.name: f.of(ok, basis) for f in COMPUTED if f.of is not None}
