"""The table of figures (metrics/figures.py): what it declares, and that summary.csv, the console tables and the
run page walk it; a figure computed on its own reaches every group of summary.json, summary.csv and the tables."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from speedbench.metrics import figures, models
from speedbench.metrics.aggregate import group_stats, summarize
from speedbench.metrics.figures import FIGURES, VALUE, Column, Figure, csv_columns, shown_in
from speedbench.metrics.models import GroupStats, RunSummary
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord
from speedbench.report.console import acceptance_table, cell_text, timing_table
from speedbench.report.pages import CATEGORY_HEADERS, category_rows
from speedbench.results.loader import load_run
from speedbench.results.rundir import summary_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"
OLD_RUN = Path(__file__).parent / "fixtures" / "rundir-c6e6c23"


def _record(qid: str, tokens: int, ok: bool = True, category: str = "qa") -> RequestRecord:
    chunks = [1] * tokens
    return RequestRecord(
        question_id=qid,
        category=category,
        turn=0,
        start_ns=0,
        end_ns=10_000_000 * tokens,
        chunk_ns=[10_000_000 * (i + 1) for i in range(tokens)] if ok else [],
        chunk_tokens=chunks if ok else [],
        chunk_tokens_exact=True,
        completion_tokens=tokens if ok else None,
        error=None if ok else {"cause": "http_500", "message": "x"},
    )


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_typed_figure_of_a_group_is_declared_once() -> None:
    names = [f.name for f in FIGURES]
    assert len(names) == len(set(names))
    typed = [f.name for f in FIGURES if f.of is None]
    assert sorted(typed) == sorted(GroupStats.model_fields)


def test_every_definition_link_resolves() -> None:
    for f in FIGURES:
        file, _, anchor = f.doc.partition("#")
        assert anchor in _anchors((DOCS / file).read_text(encoding="utf-8")), f.doc


def test_summary_csv_header_is_the_table() -> None:
    """The pinned summary.csv (main at c6e6c23, k = 3) has exactly the columns the table derives, in its order."""
    with (OLD_RUN / "summary.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["scope", *(c.name for c in csv_columns(3))]
    assert [c.name for c in csv_columns(2)][5:7] == ["conditional_ar_1", "conditional_ar_2"]  # k columns


def test_console_and_page_tables_walk_the_table() -> None:
    s = load_run(OLD_RUN).summary
    timing = timing_table(s)
    assert [str(c) for c in timing.columns[0].cells] == [c.label for _, c in shown_in("timing")]
    assert timing.row_count == 6
    headers = [str(c.header) for c in acceptance_table(s).columns]
    walked = [c.label.format(i=i) for f, c in shown_in("acceptance") for i in ((1, 2, 3) if f.per_position else (0,))]
    assert headers == ["category", *walked]
    assert headers[:4] == ["category", "requests", "errors", "AL engine steps (mean)"]
    assert [h for h in headers if h.startswith("cond AR")] == ["cond AR1", "cond AR2", "cond AR3"]  # k = 3
    assert ["category", *(c.label for _, c in shown_in("page"))] == CATEGORY_HEADERS
    assert len(category_rows(s)[0]) == len(CATEGORY_HEADERS)


def test_cell_text_and_csv_values_by_hand() -> None:
    assert cell_text(None, Column("x")) == "-"
    assert cell_text(2.34567, Column("x")) == "2.346"
    assert cell_text(0.0123456, Column("ms", digits=2, scale=1000)) == "12.35"
    assert cell_text(0.25, Column("share", percent=True)) == "25.0%"
    assert cell_text(7, Column("n", digits=1)) == "7"
    g = GroupStats(requests=3, conditional_acceptance_rate=[0.5], ttft_s=models.Distribution(mean=0.1, p99=0.3, n=2))
    cols = {c.name: c.value(g) for c in csv_columns(2)}
    assert cols["conditional_ar_1"] == 0.5 and cols["conditional_ar_2"] is None  # position 2 never reached
    assert cols["ttft_s_mean"] == 0.1 and cols["ttft_s_p99"] == 0.3 and cols["requests"] == 3
    assert [(f.name, c.label) for f, c in shown_in("sweep")] == [
        ("user_tps", "user tok/s"),
        ("output_tps", "output tok/s"),
    ]


def test_a_group_refuses_a_key_that_is_no_figure() -> None:
    with pytest.raises(ValueError, match="not a figure of a group: no_such_figure"):
        GroupStats.model_validate({"requests": 1, "no_such_figure": 2.0})


def _mean_tokens(records: list[RequestRecord], basis: DecodeBasis) -> float | None:
    return sum(r.tokens for r in records) / len(records) if records else None


@pytest.fixture
def one_more_figure(monkeypatch: pytest.MonkeyPatch) -> Figure:
    """The table with one figure computed on its own (mean output tokens per successful request)."""
    fig = Figure(
        "tokens_per_request",
        "tokens",
        "tok/req",
        "metrics.md#timing-client-timestamps",
        of=_mean_tokens,
        csv=VALUE,
        acceptance=Column("tok/req", digits=1),
        page=Column("tok/req", digits=1),
    )
    table = (*FIGURES, fig)
    monkeypatch.setattr(figures, "FIGURES", table)
    monkeypatch.setattr(figures, "COMPUTED", (fig,))
    monkeypatch.setattr(models, "COMPUTED", (fig,))
    return fig


def test_a_computed_figure_reaches_every_reader(one_more_figure: Figure) -> None:
    recs = [
        _record("a", 4),
        _record("b", 6),
        _record("c", 9, category="math"),
        _record("d", 0, ok=False, category="math"),
        _record("e", 0, ok=False, category="rag"),
    ]
    s = summarize(recs, DecodeBasis(0))
    # by hand: overall (4 + 6 + 9) / 3 ok requests; qa (4 + 6) / 2; math 9 / 1 (the failed one does not count);
    # rag: no successful request
    assert one_more_figure.value(s.overall) == pytest.approx(19 / 3)
    by_cat = {c: one_more_figure.value(g) for c, g in s.per_category.items()}
    assert by_cat == {"math": 9.0, "qa": 5.0, "rag": None}
    assert group_stats(recs[:2], DecodeBasis(0)) == s.per_category["qa"]
    assert group_stats([], DecodeBasis(0)) == GroupStats()  # None where a group has none
    d = s.to_dict()
    assert list(d["overall"])[-1] == "tokens_per_request"  # after the typed keys
    assert RunSummary.model_validate(json.loads(json.dumps(d))) == s
    rows = summary_rows(s)
    assert list(rows[0])[-1] == "tokens_per_request" and rows[0]["tokens_per_request"] == pytest.approx(19 / 3)
    headers = [str(c.header) for c in acceptance_table(s).columns]
    assert headers[-1] == "tok/req"
    out = Console(width=300, record=True)
    out.print(acceptance_table(s))
    assert "6.3" in out.export_text()  # 19 / 3 with one digit
    assert category_rows(s)[-1][-1] == "6.3"
