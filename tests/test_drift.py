"""The drift test of a run's measured window (metrics/drift.py): first third against last third of the successful
requests by start time, on mean TTFT and TPOT, with the conversation bootstrap; its summary.json key, its console
line and run page banner; and `report A B`'s cautions (a side that drifted, one side on a freshly started engine)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.metrics.aggregate import summarize
from speedbench.metrics.drift import DRIFT_FIGURES, DRIFT_THRESHOLD, SEQUENTIAL, drift, measured_order, steady, thirds
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord
from speedbench.report.console import drift_line, print_summary
from speedbench.results.loader import load_run
from speedbench.results.manifest import FreshServer
from speedbench.usecases.report import open_runs

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs"
MS = 1_000_000
# the mock on its virtual clock: the same timings on any machine, however busy
MOCK = ["--engine", "mock", "-E", "cost=batch", "-E", "clock=virtual", "-E", "base_ms=10", "-E", "per_token_ms=0.5"]


def _rec(i: int, ttft_ms: float, tpot_ms: float = 5.0, qid: str | None = None, segment: int = 0) -> RequestRecord:
    """Request i, started at i seconds, 8 tokens one a chunk: TTFT and TPOT as given."""
    start = i * 1000 * MS
    first = start + int(ttft_ms * MS)
    chunks = [first + int(j * tpot_ms * MS) for j in range(8)]
    return RequestRecord(
        question_id=qid or f"q{i:03d}",
        category="qa",
        turn=0,
        start_ns=start,
        end_ns=chunks[-1],
        chunk_ns=chunks,
        chunk_tokens=[1] * 8,
        chunk_tokens_exact=True,
        completion_tokens=8,
        segment=segment,
    )


def _wobble(i: int) -> float:
    """A deterministic spread of ±10% so that the intervals have a width."""
    return 1.0 + 0.1 * ((i * 7) % 5 - 2) / 2


def _step(n: int, first_ms: float, rest_ms: float) -> list[RequestRecord]:
    """n requests whose first third has TTFT first_ms (times a wobble) and the rest rest_ms."""
    return [_rec(i, (first_ms if i < n // 3 else rest_ms) * _wobble(i)) for i in range(n)]


def _figure(d: object, name: str) -> object:
    return next(f for f in d.figures if f.name == name)  # type: ignore[attr-defined]


# ---- the test itself ----------------------------------------------------------------------------------


def test_a_3x_ttft_step_between_the_thirds_has_drifted() -> None:
    d = drift(_step(30, 300.0, 100.0))
    assert d.tested and d.drifted and d.why is None and d.per_third == 10
    ttft = _figure(d, "ttft_s")
    assert ttft.drifted and ttft.ratio == pytest.approx(1 / 3, rel=0.05)  # type: ignore[attr-defined]
    assert ttft.ci_high < 0.5 and ttft.first == pytest.approx(0.3, rel=0.05)  # type: ignore[attr-defined]
    assert not _figure(d, "tpot_s").drifted  # type: ignore[attr-defined]


def test_identical_distributions_have_not_drifted() -> None:
    d = drift([_rec(i, 100.0 * _wobble(i)) for i in range(30)])
    assert d.tested and not d.drifted
    for f in d.figures:
        assert f.ci_low is not None and f.ci_low <= 1 <= f.ci_high and not f.drifted


def test_a_small_change_is_not_material_even_when_its_interval_excludes_1() -> None:
    d = drift([_rec(i, 100.0 * (1.05 if i < 10 else 1.0)) for i in range(30)])  # 5% faster, no spread at all
    ttft = _figure(d, "ttft_s")
    assert ttft.ci_high < 1 and abs(ttft.ratio - 1) < DRIFT_THRESHOLD  # type: ignore[attr-defined]
    assert not ttft.drifted and not d.drifted  # type: ignore[attr-defined]


def test_tpot_drift_and_a_slowdown() -> None:
    records = [_rec(i, 100.0, tpot_ms=(5.0 if i < 20 else 10.0) * _wobble(i)) for i in range(30)]
    d = drift(records)
    tpot = _figure(d, "tpot_s")
    assert d.drifted and tpot.drifted and tpot.ratio > 1.5  # type: ignore[attr-defined]
    line = drift_line(d)
    assert line is not None and line.startswith("DRIFT: TPOT first third 5.0 ms") and "slower at the end" in line


def test_too_few_requests_is_not_tested_with_the_reason() -> None:
    d = drift(_step(6, 300.0, 100.0))
    assert not d.tested and not d.drifted and d.figures == []
    assert d.why == "6 successful requests: the test needs at least 9 (3 in each third)"
    failed = [dataclasses.replace(_rec(i, 100.0), error={"cause": "http_500"}) for i in range(20)]
    assert drift(failed).why is not None and drift(failed).why.startswith("0 successful requests")  # type: ignore[union-attr]


def test_one_conversation_in_a_third_is_not_tested() -> None:
    records = [_rec(i, 300.0 if i < 3 else 100.0, qid="long" if i < 3 else None) for i in range(9)]
    d = drift(records)
    assert not d.tested and not d.drifted and "first third holds 1 conversation" in (d.why or "")
    assert _figure(d, "ttft_s").ratio == pytest.approx(1 / 3)  # type: ignore[attr-defined]


def test_per_category_windows_are_not_tested() -> None:
    d = drift(_step(30, 300.0, 100.0), sequential_categories=True)
    assert not d.tested and not d.drifted and d.why == SEQUENTIAL


def test_the_same_records_give_the_same_interval() -> None:
    records = _step(30, 300.0, 100.0)
    assert drift(records) == drift(list(reversed(records)))  # order of the records does not matter, start time does
    assert drift(records, seed=1) != drift(records)  # the seed is the only source of randomness


def test_order_is_by_segment_then_start() -> None:
    """A resumed segment's client clock is its own: its records come after the first segment's whatever their
    start_ns."""
    records = [_rec(i, 100.0) for i in range(6)] + [_rec(i, 300.0, segment=1, qid=f"r{i}") for i in range(3)]
    assert [r.segment for r in measured_order(records)] == [0] * 6 + [1] * 3
    first, last = thirds(records)
    assert {r.segment for r in last} == {1} and {r.segment for r in first} == {0}


def _closed_loop(n: int, c: int, drain_tpot_ms: float = 5.0) -> list[RequestRecord]:
    """n requests of 1 s each, c in flight: c start together at 0, each slot then starts its next when one ends;
    the last c (the drain) decode at ``drain_tpot_ms``."""
    out = []
    for i in range(n):
        slot, k = i % c, i // c
        drain = i >= n - c
        r = _rec(0, 100.0, tpot_ms=drain_tpot_ms if drain else 5.0, qid=f"q{i:03d}")
        shift = k * 1000 * MS + slot * 10 * MS * (k > 0)  # the first burst starts at once; later starts stagger
        out.append(
            dataclasses.replace(
                r, start_ns=r.start_ns + shift, chunk_ns=[t + shift for t in r.chunk_ns], end_ns=r.end_ns + shift
            )
        )
    return out


def test_closed_loop_burst_and_drain_are_left_out() -> None:
    """A batching server decodes faster as the drain empties its batch, and prefills the first burst together:
    neither is drift.  In a closed loop those requests are left out of the thirds."""
    records = _closed_loop(30, 4, drain_tpot_ms=2.5)
    kept = steady(records)
    assert 0 < len(kept) < 30
    assert not {r.question_id for r in kept} & {f"q{i:03d}" for i in range(4)}  # the burst
    assert not {r.question_id for r in kept} & {f"q{i:03d}" for i in range(26, 30)}  # the drain
    assert drift(records, closed_loop=False).drifted  # all requests: the drain looks like a warm-up
    assert not drift(records).drifted
    assert steady(_step(12, 300.0, 100.0)) == _step(12, 300.0, 100.0)  # one request at a time: nothing left out
    few = drift(records[:12])
    assert not few.tested and "at full concurrency (" in (few.why or "")


def test_every_drift_figure_is_declared_with_a_definition_that_resolves() -> None:
    assert [f.name for f in DRIFT_FIGURES] == ["ttft_s", "tpot_s"]
    anchors = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", (DOCS / "metrics.md").read_text(encoding="utf-8"), re.M)
    }
    for f in DRIFT_FIGURES:
        file, _, anchor = f.doc.partition("#")
        assert file == "metrics.md" and anchor in anchors


# ---- summary.json and the console ---------------------------------------------------------------------


def test_summary_has_the_drift_key_and_the_console_says_so() -> None:
    s = summarize(_step(30, 300.0, 100.0), DecodeBasis(0))
    assert s.drift is not None and s.drift.drifted
    assert list(s.to_dict())[-1] == "drift" and s.to_dict()["drift"]["figures"][0]["name"] == "ttft_s"
    console = Console(record=True, width=400)
    print_summary(s, console)
    lines = [ln for ln in console.export_text().splitlines() if ln.startswith("DRIFT")]
    assert len(lines) == 1
    assert lines[0].startswith("DRIFT: TTFT first third 0.30 s, last third 0.10 s (0.33x [")
    assert "the server was probably not warm - rerun, or use a longer --warmup" in lines[0]

    calm = summarize([_rec(i, 100.0 * _wobble(i)) for i in range(30)], DecodeBasis(0))
    console = Console(record=True, width=400)
    print_summary(calm, console)
    assert "DRIFT" not in console.export_text()


# ---- runs on the mock, and report A B -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drift") / "a"
    flags = ["-n", "24", "-c", "2", "--output-len", "8", "--warmup", "0", "--no-progress", "--out", str(out)]
    res = runner.invoke(app, ["run", *MOCK, *flags])
    assert res.exit_code == 0, res.output
    assert "DRIFT" not in res.output
    return out


def _slow_start(src: Path, dst: Path, factor: float = 4.0) -> Path:
    """A copy of the run whose first third (as the test orders it) waited ``factor`` times as long for its first
    token, everything after each slow request's start delayed by as much (as a slow server would): the runs'
    overlaps, so its burst and drain, stay as they were."""
    shutil.copytree(src, dst)
    records = [RequestRecord.from_dict(json.loads(ln)) for ln in (dst / "records.jsonl").read_text().splitlines()]
    first, _ = thirds(records)
    extra = sorted((r.start_ns, int((r.chunk_ns[0] - r.start_ns) * (factor - 1))) for r in first)

    def shift(t: int) -> int:
        return t + sum(e for start, e in extra if start < t)

    out = []
    for r in records:
        moved = dataclasses.replace(
            r, start_ns=shift(r.start_ns), chunk_ns=[shift(t) for t in r.chunk_ns], end_ns=shift(r.end_ns)
        )
        out.append(json.dumps(moved.to_dict()) + "\n")
    (dst / "records.jsonl").write_text("".join(out))
    return dst


def _set_fresh(run: Path, fresh: FreshServer) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m["fresh_server"] = fresh.model_dump()
    (run / "manifest.json").write_text(json.dumps(m))


def test_a_mock_run_is_tested_fresh_and_steady(mock_run: Path) -> None:
    r = load_run(mock_run)
    assert r.summary.drift is not None and r.summary.drift.tested and not r.summary.drift.drifted
    assert r.manifest.fresh_server is not None and r.manifest.fresh_server.fresh is True
    assert "in speedbench's process" in r.manifest.fresh_server.why
    assert json.loads((mock_run / "summary.json").read_text())["drift"]["tested"] is True


def test_report_of_a_drifted_run_prints_the_line(mock_run: Path, tmp_path: Path) -> None:
    b = _slow_start(mock_run, tmp_path / "b")
    res = runner.invoke(app, ["report", str(b)])
    assert res.exit_code == 0, res.output
    drift_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("DRIFT")]
    assert len(drift_lines) == 1 and "TTFT first third" in drift_lines[0] and "not warm" in drift_lines[0]


def test_report_a_b_warns_before_the_verdict_when_a_side_drifted(mock_run: Path, tmp_path: Path) -> None:
    b = _slow_start(mock_run, tmp_path / "b")
    res = runner.invoke(app, ["report", str(mock_run), str(b)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    caution = out.index("DRIFT in B (")
    assert caution < out.index("B/A: latency and system throughput") < out.index("B vs A (paired requests only)")
    assert "DRIFT in A" not in out and "COLD vs WARM" not in out  # both ran fresh, in-process
    assert open_runs([str(mock_run), str(b)]).cautions()[0].startswith("DRIFT in B")


def test_report_a_b_warns_when_one_side_ran_on_a_fresh_engine_and_the_other_not(mock_run: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(mock_run, a)
    _set_fresh(a, FreshServer(why="attached to a running server (--base-url): what it served before is not known"))
    cautions = open_runs([str(a), str(mock_run)]).cautions()
    assert len(cautions) == 1
    assert cautions[0].startswith("COLD vs WARM: B (") and "A (" in cautions[0] and "may not have been" in cautions[0]
    _set_fresh(a, FreshServer(fresh=False, why="known warm"))
    assert "was not (known warm)" in open_runs([str(a), str(mock_run)]).cautions()[0]
    _set_fresh(a, FreshServer(fresh=True, why="launched"))
    assert open_runs([str(a), str(mock_run)]).cautions() == []
    res = runner.invoke(app, ["report", str(mock_run), str(a)])
    assert res.exit_code == 0 and "COLD vs WARM" not in res.stdout
    _set_fresh(a, FreshServer(fresh=False, why="known warm"))
    res = runner.invoke(app, ["report", str(mock_run), str(a)])
    assert res.exit_code == 0
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("COLD vs WARM"))
    assert line.startswith("COLD vs WARM: A (") and res.stdout.index("COLD vs WARM") < res.stdout.index("B vs A (")


def test_a_manifest_written_before_fresh_server_reads_as_unknown(mock_run: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(mock_run, a)
    m = json.loads((a / "manifest.json").read_text())
    del m["fresh_server"]
    (a / "manifest.json").write_text(json.dumps(m))
    assert load_run(a).manifest.fresh_server is None
    cautions = open_runs([str(a), str(mock_run)]).cautions()
    assert len(cautions) == 1 and "not recorded" in cautions[0]


def test_fresh_server_by_how_the_engine_was_started() -> None:
    assert FreshServer.of(own=True, in_process=False, launched=True).fresh is True
    assert FreshServer.of(own=True, in_process=True, launched=False).fresh is True
    assert FreshServer.of(own=True, in_process=False, launched=False).fresh is None  # attached: not known
    assert FreshServer.of(own=False, in_process=False, launched=True).fresh is None  # a sweep's shared server


def test_pages_show_the_drift_and_the_cautions(mock_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from speedbench.usecases.report import write_runs_page

    b = _slow_start(mock_run, tmp_path / "b")
    write_runs_page(open_runs([str(b)]), tmp_path / "run.html")
    page = (tmp_path / "run.html").read_text()
    assert '<div class="banner">DRIFT: TTFT first third' in page and "freshly started engine" in page
    write_runs_page(open_runs([str(mock_run), str(b)]), tmp_path / "compare.html")
    assert '<div class="banner">DRIFT in B (' in (tmp_path / "compare.html").read_text()


# ---- warm-up and drift together: the cold mock (issue 23) ------------------------------------------------------
def _cold_run(tmp_path: Path, cold_requests: int, warmup: int | None) -> object:
    """A mixed run on the cold mock's virtual clock (concurrency 4, 44 first turns): its first ``cold_requests``
    requests served take 5x as long, as does every batched step that holds one."""
    import asyncio

    from speedbench.config import EngineSpec, RunConfig
    from speedbench.usecases import run as uc

    options = {"cost": "batch", "clock": "virtual", "base_ms": "10", "ttft_ms": "4", "cold_factor": "5"}
    cfg = RunConfig(
        engine=EngineSpec(kind="mock", sd="none", options={**options, "cold_requests": str(cold_requests)}),
        dataset={"num_requests": 44, "max_turns": 1},  # type: ignore[arg-type]
        concurrency=4,
        output_len=24,
        warmup=warmup,
        per_category_windows="off",
        out=str(tmp_path / f"cold-{cold_requests}-{warmup}"),
    )
    return asyncio.run(uc.run(cfg)).result.summary


def test_the_default_warm_up_absorbs_a_cold_wave_and_drift_is_caught_without_warm_up(tmp_path: Path) -> None:
    # slow for one wave (4 requests): the default warm-up (one wave) takes it; every measured TTFT is the warm one
    warm = _cold_run(tmp_path, 4, None)
    assert warm.drift.tested and not warm.drift.drifted  # type: ignore[attr-defined]
    assert warm.overall.ttft_s.mean == pytest.approx(0.014) and warm.overall.ttft_s.p99 == pytest.approx(0.014)  # type: ignore[attr-defined]
    # slow for two waves and no warm-up: the second cold wave is in the measured first third (the first is the
    # closed loop's burst, left out of the test in any run): drifted, faster at the end, on TTFT and TPOT
    cold = _cold_run(tmp_path, 8, 0)
    d = cold.drift  # type: ignore[attr-defined]
    assert d.tested and d.drifted
    for name in ("ttft_s", "tpot_s"):
        f = _figure(d, name)
        assert f.drifted and f.ratio < 1 - DRIFT_THRESHOLD and f.ci_high < 1  # type: ignore[attr-defined]
    # the same cold mock with the default warm-up: half of the cold start is absorbed, the rest is the measured
    # burst, which the test leaves out (docs/metrics.md: a cold start shorter than a wave is the warm-up's job)
    assert not _cold_run(tmp_path, 8, None).drift.drifted  # type: ignore[attr-defined]
