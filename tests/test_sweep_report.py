"""`speedbench report SWEEP_DIR`: the sweep report's tables, best draft length, Pareto front and files
(docs/sweep.md "Report").  One small mock sweep (baseline + ngram k 1,2 at concurrency 1,2) is shared."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speedbench.analysis.pairing import compare_paired
from speedbench.analysis.sweep_report import best_draft_length, pareto_front, sweep_tables
from speedbench.cli import app
from speedbench.results.estimates import Estimate
from speedbench.results.loader import load_run
from speedbench.results.sweep_files import PARETO_COLUMNS

runner = CliRunner()
FAST = ["--engine", "mock", "-E", "step_ms=1", "-E", "ttft_ms=1", "-n", "4", "--output-len", "16"]
GRID = ["--sd", "ngram", "-k", "1,2", "-c", "1,2"]
RESAMPLES = ["--resamples", "1000", "--seed", "3"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep_report") / "sweep"
    res = runner.invoke(app, ["sweep", *FAST, *GRID, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


def _table_rows(output: str, title: str) -> list[list[str]]:
    """The body rows of the rich table titled ``title`` (each row's cells, stripped)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([c.strip() for c in line.strip("│").split("│")])
    return rows


def _header(output: str, title: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line)
    head = next(line for line in lines[start + 1 :] if line.startswith("┃"))
    return [c.strip() for c in head.strip("┃").split("┃")]


def test_report_sweep_tables_match_compare_paired(sweep_dir: Path):
    res = runner.invoke(app, ["report", str(sweep_dir), *RESAMPLES])
    assert res.exit_code == 0, res.output
    title = "Speedup over the baseline: ngram on starter"
    assert _header(res.output, title) == ["concurrency", "k=1", "k=2"]
    rows = _table_rows(res.output, title)
    assert [r[0] for r in rows] == ["1", "2"]  # one row per concurrency
    for name in ("AL: ngram on starter", "Output tok/s: ngram on starter"):
        assert [r[0] for r in _table_rows(res.output, name)] == ["1", "2"]
        assert _header(res.output, name) == ["concurrency", "k=1", "k=2"]

    report = sweep_tables(sweep_dir, resamples=1000, seed=3)
    (table,) = report.tables
    assert (table.sd, table.dataset, table.concurrencies, table.ks) == ("ngram", "starter", (1, 2), (1, 2))
    for (c, k), cell in table.cells.items():
        base = load_run(sweep_dir / "cells" / f"sd-none_k-0_c-{c}_ds-starter")
        sd = load_run(sweep_dir / "cells" / f"sd-ngram_k-{k}_c-{c}_ds-starter")
        direct = compare_paired(base, sd, None, 1000, 3).overall.stats["speedup"]
        assert cell.speedup is not None
        assert cell.speedup.point == pytest.approx(direct.point)
        assert (cell.speedup.lo, cell.speedup.hi) == pytest.approx((direct.lo, direct.hi))
        assert cell.baseline == f"sd-none_k-0_c-{c}_ds-starter"
        assert cell.output_tps == pytest.approx(sd.summary.overall.output_tps)
        # the console shows the same point and interval
        shown = rows[table.concurrencies.index(c)][1 + table.ks.index(k)]
        assert shown.startswith(f"{direct.point:.2f} [{direct.lo:.2f}, {direct.hi:.2f}]")

    # the best draft length mark sits in the right column of each row
    for c, row in zip(table.concurrencies, rows, strict=True):
        expected = best_draft_length({k: table.cells[(c, k)].speedup for k in table.ks})
        assert table.best_k[c] == expected is not None
        marked = [k for k, text in zip(table.ks, row[1:], strict=True) if text.endswith("*")]
        assert marked == [expected]


def test_pareto_and_speedups_csv(sweep_dir: Path):
    assert runner.invoke(app, ["report", str(sweep_dir), *RESAMPLES]).exit_code == 0
    cells = json.loads((sweep_dir / "sweep.json").read_text())["cells"]
    with (sweep_dir / "pareto.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == PARETO_COLUMNS
    assert [r["cell_id"] for r in rows] == [c["id"] for c in cells]  # one row per cell, baselines included
    points = [(float(r["output_tps"]), float(r["user_tps_mean"])) for r in rows]
    assert [r["on_front"] == "true" for r in rows] == pareto_front(points)
    assert any(r["on_front"] == "true" for r in rows)
    assert all(r["speedup"] == "" for r in rows if r["sd"] == "none")
    with (sweep_dir / "speedups.csv").open() as f:
        sp = list(csv.DictReader(f))
    assert sorted(r["cell_id"] for r in sp) == sorted(c["id"] for c in cells if c["settings"]["sd"] != "none")
    assert all(float(r["speedup_lo"]) <= float(r["speedup"]) <= float(r["speedup_hi"]) for r in sp)


def test_pareto_front_by_hand():
    points = [(10.0, 1.0), (5.0, 5.0), (1.0, 10.0), (4.0, 4.0), (5.0, 5.0), (10.0, 0.5), (None, 20.0), (2.0, None)]
    assert pareto_front(points) == [True, True, True, False, True, False, False, False]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [True]


def test_best_draft_length_by_hand():
    sig = {1: Estimate(1.3, 1.2, 1.4, 1.0), 2: Estimate(1.5, 0.9, 2.1, 1.0), 3: Estimate(1.25, 1.1, 1.4, 1.0)}
    assert best_draft_length(sig) == 1  # the n.s. k=2 has a higher point, but k=1 is the best significant one
    ns = {1: Estimate(1.1, 0.9, 1.3, 1.0), 2: Estimate(1.2, 0.8, 1.6, 1.0), 3: None}
    assert best_draft_length(ns) == 2  # none significant: the highest point
    slower = {1: Estimate(0.8, 0.7, 0.9, 1.0), 2: Estimate(0.95, 0.8, 1.1, 1.0)}
    assert best_draft_length(slower) == 2  # significantly slower is not "best"
    assert best_draft_length({1: None}) is None


def test_incomplete_cells_show_dash(sweep_dir: Path, tmp_path: Path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    manifest = json.loads((copy / "sweep.json").read_text())
    for cell in manifest["cells"]:
        if cell["id"] == "sd-ngram_k-2_c-2_ds-starter":
            cell["status"], cell["cause"] = "interrupted", "SIGINT"
        if cell["id"] == "sd-none_k-0_c-1_ds-starter":
            cell["status"], cell["cause"] = "failed", "engine did not start"
    (copy / "sweep.json").write_text(json.dumps(manifest))

    res = runner.invoke(app, ["report", str(copy), *RESAMPLES])
    assert res.exit_code == 0, res.output
    rows = _table_rows(res.output, "Speedup over the baseline: ngram on starter")
    assert rows[0][1].startswith("- (") and rows[0][2].startswith("- (")  # c=1: no baseline
    assert rows[1][1][0].isdigit() and rows[1][2].startswith("- (")  # c=2 k=2 interrupted
    assert "baseline sd-none_k-0_c-1_ds-starter failed: engine did not start" in res.output
    assert "interrupted: SIGINT" in res.output
    report = sweep_tables(copy, resamples=1000, seed=3)
    (table,) = report.tables
    assert table.best_k == {1: None, 2: 1}
    assert report.notes["sd-ngram_k-2_c-2_ds-starter"] == "interrupted: SIGINT"
    with (copy / "pareto.csv").open() as f:
        rows_csv = {r["cell_id"]: r for r in csv.DictReader(f)}
    assert rows_csv["sd-ngram_k-2_c-2_ds-starter"]["output_tps"] == ""
    assert rows_csv["sd-ngram_k-2_c-2_ds-starter"]["on_front"] == "false"


def test_report_refuses_a_broken_sweep_json(tmp_path: Path):
    (tmp_path / "sweep.json").write_text("{not json")
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "sweep.json: not valid JSON" in res.output
