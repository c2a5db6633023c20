"""Diversity audit and the select/audit commands (TF-IDF embeddings: no model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.data.builders.audit import audit, plot
from speedbench.data.readers import read_file
from speedbench.data.sample import Sample
from speedbench.embed import get_embedder

SPEC_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench_questions.jsonl"
runner = CliRunner()


class Table:
    """An embedder that looks vectors up by text: audit figures can be computed by hand."""

    id = "table"
    dim = 2

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.asarray([self.vectors[t] for t in texts], dtype=np.float32)


def _s(qid: str, cat: str, text: str) -> Sample:
    return Sample(qid, cat, None, (text,), None, None, None, False)


def test_audit_figures_by_hand() -> None:
    c, s = 0.6, 0.8
    emb = Table({"a": [1, 0], "b": [c, s], "c": [0, 1], "d": [1, 0]})
    files = {"f": [_s("1", "x", "a"), _s("2", "x", "b"), _s("3", "y", "c"), _s("4", "y", "d")]}
    res = audit(files, emb, draws=10)
    rows = {r.category: r for r in res.rows}
    assert rows["x"].mean_cos == pytest.approx(0.6)  # a.b
    assert rows["y"].mean_cos == pytest.approx(0.0)  # c.d
    # all six pairs: ab .6, ac 0, ad 1, bc .8, bd .6, cd 0 -> 3.0 / 6
    assert rows["all"].mean_cos == pytest.approx(0.5)
    assert rows["all"].random_mean is None and rows["all"].reference.startswith("n/a")
    # per category: random pairs from the whole file (6 pairs, each equally likely over many draws)
    assert rows["x"].reference == "whole file (4)"
    assert 0.0 <= rows["x"].random_mean <= 1.0 and rows["x"].random_sd > 0
    # a and d are identical: one near-duplicate pair, found once
    assert res.near_duplicates["f"] == [("1", "4", pytest.approx(1.0))]
    assert emb.calls == 1


def test_pool_reference_no_choice_and_stratified_all() -> None:
    """A category the pool holds no more of has no baseline; 'all' draws the set's count per category."""
    emb = Table({"a": [1, 0], "b": [0.6, 0.8], "c": [0, 1], "d": [0.8, 0.6], "e": [-1, 0]})
    pool = [_s("1", "x", "a"), _s("2", "x", "b"), _s("3", "y", "c"), _s("4", "y", "d"), _s("5", "y", "e")]
    chosen = [pool[0], pool[1], pool[2], pool[4]]  # all of x; c and e of y
    res = audit({"sel": chosen}, emb, pool=pool, pool_name="P", draws=10)
    rows = {r.category: r for r in res.rows}
    assert rows["x"].random_mean is None and rows["x"].reference == "n/a (P[x] has 2: no choice)"
    assert rows["y"].reference == "P[y] (3)"
    assert rows["y"].mean_cos == pytest.approx(-0.0)  # c.e = 0
    # y pairs from {c, d, e}: cd .6, ce 0, de -.8 -> mean over draws lies in [-.8, .6]
    assert -0.8 <= rows["y"].random_mean <= 0.6
    assert rows["all"].reference == "P, same count per category"
    # every stratified draw holds a, b and two of {c, d, e}: the draws' values are from three sets
    ab = {"a", "b"}
    values = []
    for pair in (("c", "d"), ("c", "e"), ("d", "e")):
        X = np.asarray([emb.vectors[t] for t in sorted(ab | set(pair))])
        G = X @ X.T
        values.append((G.sum() - np.trace(G)) / 12)
    assert min(values) - 1e-9 <= rows["all"].random_mean <= max(values) + 1e-9
    assert rows["all"].random_sd > 0


def test_audit_against_a_pool_and_plot(tmp_path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((40, 2)) + [3, 0]
    vecs = {f"t{i}": list(v / np.linalg.norm(v)) for i, v in enumerate(raw)}
    pool = [_s(f"p{i}", "x", f"t{i}") for i in range(40)]
    chosen = pool[:5]
    res = audit({"sel": chosen}, Table(vecs), pool=pool, pool_name="pool.jsonl", draws=12, seed=1)
    row = next(r for r in res.rows if r.category == "x")
    assert row.reference == "pool.jsonl[x] (40)"
    again = audit({"sel": chosen}, Table(vecs), pool=pool, pool_name="pool.jsonl", draws=12, seed=1)
    assert next(r for r in again.rows if r.category == "x").random_mean == row.random_mean
    png = plot(res, tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="draws"):
        audit({"sel": chosen}, Table(vecs), draws=5)


@pytest.mark.skipif(not SPEC_BENCH.exists(), reason="../shared/data/spec_bench_questions.jsonl is not here")
def test_audit_spec_bench_questions(tmp_path) -> None:
    """Spec-Bench's 480 questions: the templated 80-question categories (translation, summarization, rag,
    math_reasoning share instructions) are tighter than random picks from the file.  (qa, short trivia
    questions, is not: under TF-IDF it measured as diverse as random, z +1.3, so it is not asserted.)"""
    samples = read_file(SPEC_BENCH)
    res = audit({"spec": samples}, get_embedder("tfidf", cache=False), draws=10)
    rows = {r.category: r for r in res.rows}
    assert rows["all"].n == 480
    assert {c: rows[c].n for c in ("translation", "summarization", "qa", "math_reasoning", "rag")} == dict.fromkeys(
        ("translation", "summarization", "qa", "math_reasoning", "rag"), 80
    )
    for cat in ("translation", "summarization", "math_reasoning", "rag"):
        assert rows[cat].z < -3, (cat, rows[cat])
    out = tmp_path / "a.png"
    res_cli = runner.invoke(
        app,
        [
            "data",
            "audit",
            f"specbench:{SPEC_BENCH}",
            "--embedder",
            "tfidf",
            "--plot",
            str(out),
            "--json",
            str(tmp_path / "a.json"),
            "--draws",
            "10",
        ],
    )
    assert res_cli.exit_code == 0, res_cli.output
    assert out.exists()
    figures = json.loads((tmp_path / "a.json").read_text())
    assert figures["embedder"].startswith("tfidf")
    assert {r["category"] for r in figures["rows"]} >= {"multilingual", "summarization", "all"}


def test_cli_select_then_audit(tmp_path) -> None:
    pool = tmp_path / "pool.jsonl"
    res = runner.invoke(app, ["data", "build", "--from", "mtbench,humaneval", "--out", str(pool)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "sel.jsonl"
    res = runner.invoke(app, ["data", "select", str(pool), "--k", "5", "--embedder", "tfidf", "--out", str(out)])
    assert res.exit_code == 0, res.output
    chosen = read_file(out)
    rec = json.loads((tmp_path / "sel.jsonl.selection.json").read_text())
    assert len(chosen) == 5 * 8
    assert sorted(rec["categories"][0]) and rec["embedder"].startswith("tfidf")
    assert sorted(s.question_id for s in chosen) == sorted(q for c in rec["categories"] for q in c["selected"])
    res = runner.invoke(
        app,
        [
            "data",
            "audit",
            str(out),
            "--pool",
            str(pool),
            "--embedder",
            "tfidf",
            "--plot",
            str(tmp_path / "p.png"),
            "--json",
            str(tmp_path / "a.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {r["category"]: r for r in json.loads((tmp_path / "a.json").read_text())["rows"]}
    assert rows["coding"]["reference"] == f"{pool}[coding] (174)"  # 10 MT-Bench + 164 HumanEval
    assert rows["writing"]["reference"] == f"{pool}[writing] (10)"
    assert rows["all"]["reference"] == f"{pool}, same count per category"
    assert rows["coding"]["mean_cos"] < rows["coding"]["random_mean"]  # the selection beats chance
    res = runner.invoke(
        app, ["data", "select", str(pool), "--k", "50", "--embedder", "tfidf", "--out", str(tmp_path / "x.jsonl")]
    )
    assert res.exit_code == 2 and "fewer than k=50" in res.output
    res = runner.invoke(app, ["data", "select", str(pool), "--embedder", "nope", "--out", str(tmp_path / "y.jsonl")])
    assert res.exit_code == 2 and "nope" in res.output


# --------------------------------------------------------------------------- only the extras a command uses

AUDIT_IN_A_FRESH_PROCESS = """
import json, sys
from typer.testing import CliRunner
from speedbench.cli import app
res = CliRunner().invoke(app, ["data", "audit", "starter", "--embedder", "tfidf", "--draws", "10"] + sys.argv[1:])
print(json.dumps({"code": res.exit_code, "output": res.output, "matplotlib": "matplotlib" in sys.modules}))
"""


def _audit_in_a_fresh_process(*args: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", AUDIT_IN_A_FRESH_PROCESS, *args], capture_output=True, text=True, check=True
    )
    return json.loads(p.stdout.splitlines()[-1])


def test_audit_without_plot_never_imports_matplotlib(tmp_path) -> None:
    pytest.importorskip("sklearn")
    plain = _audit_in_a_fresh_process()
    assert plain["code"] == 0, plain["output"]
    assert plain["matplotlib"] is False and "plot:" not in plain["output"]
    pytest.importorskip("matplotlib")
    png = tmp_path / "a.png"
    drawn = _audit_in_a_fresh_process("--plot", str(png))  # the control: asked for, the plot is drawn
    assert drawn["code"] == 0, drawn["output"]
    assert drawn["matplotlib"] is True and png.read_bytes()[:4] == b"\x89PNG"


def test_a_missing_plotting_library_is_one_line(tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    res = runner.invoke(app, ["data", "audit", "starter", "--embedder", "tfidf", "--plot", str(tmp_path / "a.png")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == ["error: data audit --plot needs matplotlib: pip install 'speedbench[report]'"]
    assert not (tmp_path / "a.png").exists()
    with pytest.raises(ImportError, match=r"the audit plot needs matplotlib: pip install 'speedbench\[report\]'"):
        plot(
            audit({"x": [_s("a", "c", "t1"), _s("b", "c", "t2")]}, Table({"t1": [1, 0], "t2": [0, 1]}), draws=10),
            tmp_path / "b.png",
        )
