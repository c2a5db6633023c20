"""Draft-vocabulary coverage (issue 13; analysis/vocab.py, `speedbench analyze vocab`): coverage, window coverage
and the AL bound on hand-built token-id sets, the vocabulary sources (ids file, EAGLE-3 d2t, top K of another
source), and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from speedbench.analysis.vocab import VocabError, count_ids, coverage, d2t_vocab, read_ids, top_k
from speedbench.cli import app
from speedbench.engines.mock import VOCAB
from speedbench.records import RequestRecord

runner = CliRunner()


def rec(qid: str, category: str, ids: list[int] | None) -> RequestRecord:
    n = len(ids or [1])
    return RequestRecord(qid, category, 0, 0, 10, [1, 2], [1, n - 1], output_token_ids=ids, completion_tokens=n)


def test_coverage_windows_and_al_bound_by_hand():
    vocab = {1, 2, 3}
    # code: 1 2 9 3 1 -> inside: T T F T T
    # windows of 1 token: 4 of 5 inside; of 2: (1,2) yes (2,9) no (9,3) no (3,1) yes -> 2 of 4;
    # of 3: (1,2,9) (2,9,3) (9,3,1) -> 0 of 3
    # chat: 5 6 1 -> F F T: 1 of 3; 0 of 2; 0 of 1
    records = [rec("a", "code", [1, 2, 9, 3, 1]), rec("b", "chat", [5, 6, 1]), rec("c", "chat", None)]
    cov = coverage(records, vocab, k=3)
    assert cov["code"].coverage == pytest.approx(4 / 5)
    assert cov["code"].windows == pytest.approx((4 / 5, 2 / 4, 0 / 3))
    assert cov["code"].al_bound() == pytest.approx(1 + 0.8 + 0.5 + 0.0)
    assert cov["chat"].requests == 1 and cov["chat"].windows == pytest.approx((1 / 3, 0.0, 0.0))
    # overall pools the windows (not a mean of the categories): 5 of 8, 2 of 6, 0 of 4
    assert cov["overall"].windows == pytest.approx((5 / 8, 2 / 6, 0.0)) and cov["overall"].tokens == 8
    assert cov["overall"].al_bound(1) == pytest.approx(1.625)
    # the whole vocabulary: every window inside, the bound is k + 1
    full = coverage(records, set(range(10)), k=3)["overall"]
    assert full.coverage == 1.0 and full.al_bound() == pytest.approx(4.0)
    with pytest.raises(VocabError, match="no request has output token ids"):
        coverage([rec("c", "chat", None)], vocab)


def test_vocabulary_sources(tmp_path):
    (tmp_path / "ids.json").write_text(json.dumps([5, 7, 9]))
    (tmp_path / "ids.txt").write_text("5\n7, 9\n")
    np.save(tmp_path / "ids.npy", np.array([5, 7, 9]))
    assert read_ids(tmp_path / "ids.json") == read_ids(tmp_path / "ids.txt") == read_ids(tmp_path / "ids.npy")
    (tmp_path / "bad.txt").write_text("five")
    with pytest.raises(VocabError, match="not a list of token ids"):
        read_ids(tmp_path / "bad.txt")
    with pytest.raises(VocabError, match="not found"):
        read_ids(tmp_path / "missing.json")
    # EAGLE-3: draft id d stands for target id d + d2t[d]
    assert d2t_vocab([0, 0, 5, 10]) == {0, 1, 7, 13}
    counts = count_ids([[3, 3, 3, 1, 1, 2], [4]])
    assert top_k(counts, 2) == {3, 1}
    assert top_k(counts, 3) == {3, 1, 2}  # ties (2 and 4 once each) broken by the smaller id
    assert top_k(counts, 6, vocab_size=8) == {0, 1, 2, 3, 4, 5}  # past the ids seen: unseen ids in id order
    with pytest.raises(VocabError):
        top_k(counts, 0)


def test_analyze_vocab_cli(tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((out_a, "0"), (out_b, "1")):
        res = runner.invoke(
            app,
            ["run", "--engine", "mock", "-E", "step_ms=0", "-E", "ttft_ms=0", "-n", "11", "--output-len", "24"]
            + ["--seed", seed, "--out", str(out), "--no-progress", "--warmup", "0"],
        )
        assert res.exit_code == 0, res.output
    # the in-process mock returns its output token ids (uniform over its vocabulary): another mock run's top K
    # covers little of it, and K = the whole vocabulary covers all of it (the AL bound is then k + 1)
    res = runner.invoke(
        app, ["analyze", "vocab", str(out_a), "--top-k-from", str(out_b), "--vocab-size", str(VOCAB), "-k", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "Coverage curve" in res.output and f"top {VOCAB:,}" in res.output
    last_row = next(
        line for line in res.output.splitlines() if line.startswith("│ overall") and "100.0% (4.00)" in line
    )
    assert last_row
    ids = tmp_path / "vocab.json"
    ids.write_text(json.dumps(list(range(VOCAB // 2))))
    half = runner.invoke(app, ["analyze", "vocab", str(out_a), "--vocab", str(ids)])
    assert half.exit_code == 0 and "Draft-vocabulary coverage" in half.output
    from speedbench.results.loader import load_run

    c = coverage(load_run(out_a).records, set(range(VOCAB // 2)), k=2)["overall"]
    # uniform ids: about half inside, a window of 2 about a quarter
    assert 0.4 < c.coverage < 0.6 and 0.15 < c.windows[1] < 0.35 and c.tokens > 300
    # the run measured cannot rank its own vocabulary
    same = runner.invoke(app, ["analyze", "vocab", str(out_a), "--top-k-from", str(out_a)])
    assert same.exit_code == 2 and "a run being measured" in same.output
    none = runner.invoke(app, ["analyze", "vocab", str(out_a)])
    assert none.exit_code == 2 and "give one draft vocabulary" in none.output
