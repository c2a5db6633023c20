"""`speedbench sweep --adaptive --slo` (issue 13; usecases/sweep/adaptive.py, docs/model.md "Adaptive sweep"): on the
mock with a known cost model (10 ms + 0.5 ms a token verified, acceptance 0.8/0.6/0.4, virtual clock) the adaptive
loop finds the configuration the full grid finds, with fewer cells."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from speedbench.analysis.model_summary import model_summary
from speedbench.cli import app

runner = CliRunner()
MOCK = ["--engine", "mock", "-E", "cost=batch", "-E", "clock=virtual", "-E", "base_ms=10", "-E", "per_token_ms=0.5"]
MOCK += ["-E", "noise=0.1", "-E", "ttft_ms=0", "--sd", "ngram", "-k", "1,2,3", "-c", "1,2,4,8,16,32", "-n", "44"]
MOCK += ["--output-len", "48", "--ignore-eos", "--warmup", "0", "--no-progress"]
SLO = "user_tps>=90"


def test_adaptive_finds_the_full_grids_answer_with_fewer_cells(tmp_path):
    full = tmp_path / "full"
    res = runner.invoke(app, ["sweep", *MOCK, "--out", str(full)])
    assert res.exit_code == 0, res.output
    truth = model_summary(full, slo=SLO)["slo"]
    assert truth["confirmed"] and (truth["answer"]["k"], truth["answer"]["concurrency"]) == (2, 8)
    full_cells = len(json.loads((full / "sweep.json").read_text())["cells"])
    assert full_cells == 24

    out = tmp_path / "adaptive"
    res = runner.invoke(app, ["sweep", *MOCK, "--out", str(out), "--adaptive", "--slo", SLO, "--max-cells", "20"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "adaptive.json").read_text())
    assert (data["answer"]["k"], data["answer"]["concurrency"]) == (2, 8) and data["answer"]["confirmed"]
    # the coarse grid (c 1, 8, 32 x k 1, 3, with their baselines: 9 cells), then the answer's own cell
    assert [r["cells"] for r in data["rounds"]] == [9, 1] and data["cells_run"] == 10 < full_cells
    assert data["rounds"][0]["concurrency"] == [1, 8, 32] and data["rounds"][0]["draft_length"] == [1, 3]
    assert "confirmed by measurement" in res.output and "10 cells run" in res.output
    assert (out / "round-0" / "sweep.json").is_file() and (out / "round-1" / "sweep.json").is_file()


def test_adaptive_refuses_what_it_cannot_do(tmp_path):
    out = str(tmp_path / "a")
    bad = runner.invoke(app, ["sweep", *MOCK, "--out", out, "--adaptive"])
    assert bad.exit_code == 2 and "--adaptive and --slo go together" in bad.output
    bad = runner.invoke(app, ["sweep", *MOCK, "--out", out, "--adaptive", "--slo", SLO, "--plan"])
    assert bad.exit_code == 2 and "--plan with --adaptive" in bad.output
    two = [*MOCK, "--sd", "ngram,draft"]
    bad = runner.invoke(app, ["sweep", *two, "--out", out, "--adaptive", "--slo", SLO])
    assert bad.exit_code == 2 and "searches one SD method" in bad.output
    bad = runner.invoke(app, ["sweep", *MOCK, "--out", out, "--adaptive", "--slo", "speed>=3"])
    assert bad.exit_code == 2 and "unknown metric" in bad.output
    bad = runner.invoke(app, ["sweep", *MOCK, "--out", out, "--adaptive", "--slo", SLO, "--max-cells", "2"])
    assert bad.exit_code == 2 and "--max-cells 2" in bad.output
