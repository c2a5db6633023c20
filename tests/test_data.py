"""Dataset readers, the one-line errors, the starter set and the stratified pick."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speedbench.data.readers import content_hash, load_dataset, pick_stratified, read_file
from speedbench.data.sample import CATEGORIES, PLACEHOLDER_PREFIX, DatasetError

OFFICIAL = [
    {"question_id": "q-001", "category": "coding", "sub_category": "debug", "turns": ["Fix this.", "Now test it."],
     "source": "livecodebench", "src_id": "lcb-1", "difficulty": "hard", "multiturn": True},
    {"question_id": "q-002", "category": "math", "sub_category": None, "turns": ["2+2?"],
     "source": "mmlu_pro", "src_id": "7", "difficulty": None, "multiturn": False},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_official_jsonl_and_parquet_read_identically(tmp_path):
    a = read_file(_write_jsonl(tmp_path / "a.jsonl", OFFICIAL))
    pq.write_table(pa.Table.from_pylist(OFFICIAL), tmp_path / "a.parquet")
    b = read_file(tmp_path / "a.parquet")
    assert a == b
    assert a[0].turns == ("Fix this.", "Now test it.") and a[0].multiturn is True
    assert a[0].source == "livecodebench" and a[1].sub_category is None


def test_nemo_skills_messages_form(tmp_path):
    rows = [{"question_id": "m1", "category": "qa", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Rayleigh."}, {"role": "user", "content": "And sunsets?"}]}]
    (s,) = read_file(_write_jsonl(tmp_path / "m.jsonl", rows))
    assert s.turns == ("Why is the sky blue?", "And sunsets?") and s.multiturn


def test_spec_bench_questions(spec_bench_path):
    samples = read_file(spec_bench_path)
    assert len(samples) == 480
    assert samples[0].question_id == "81"  # integer ids become strings
    assert Counter(s.category for s in samples)["translation"] == 80
    assert sum(s.multiturn for s in samples) == 80


@pytest.mark.parametrize("row, field, words", [
    ({"category": "qa", "turns": ["x"]}, "question_id", "missing"),
    ({"question_id": "a", "turns": ["x"]}, "category", "missing"),
    ({"question_id": "a", "category": "qa", "turns": "just a string"}, "turns", "non-empty list"),
    ({"question_id": "a", "category": "qa", "turns": ["ok", ""]}, "turns[1]", "non-empty string"),
    ({"question_id": "a", "category": "qa"}, "turns", "missing"),
    ({"question_id": "a", "category": "qa", "turns": ["x"], "multiturn": "yes"}, "multiturn", "true/false"),
    ({"question_id": "a", "category": "qa", "messages": [{"role": "user"}]}, "messages[0]", "role and content"),
])
def test_malformed_rows_give_file_line_field(tmp_path, row, field, words):
    path = _write_jsonl(tmp_path / "bad.jsonl", [OFFICIAL[1], row])
    with pytest.raises(DatasetError) as ei:
        read_file(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:2: field {field}: ")
    assert words in msg
    assert "\n" not in msg


def test_bad_json_and_duplicates_and_missing_file(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(OFFICIAL[0]) + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"x\.jsonl:2: not valid JSON"):
        read_file(p)
    dup = _write_jsonl(tmp_path / "d.jsonl", [OFFICIAL[0], OFFICIAL[1], OFFICIAL[0]])
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: field question_id: duplicate 'q-001' \(first on line 1\)"):
        read_file(dup)
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(str(tmp_path / "nope.jsonl"))


def test_placeholder_rows_are_refused(tmp_path):
    row = dict(OFFICIAL[1], question_id="ph-9",
               turns=[PLACEHOLDER_PREFIX + ". Please use the data preparation script."])
    path = _write_jsonl(tmp_path / "p.jsonl", [OFFICIAL[0], row])
    with pytest.raises(DatasetError) as ei:
        read_file(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:2: field turns[0]: question ph-9 is the SPEED-Bench placeholder")
    assert "speedbench data fetch" in msg


def test_starter_set_meets_its_contract():
    samples = load_dataset("starter")
    cats = Counter(s.category for s in samples)
    assert set(cats) == set(CATEGORIES)
    assert min(cats.values()) >= 8
    assert sum(s.multiturn for s in samples) / len(samples) >= 0.15
    for s in samples:
        assert s.multiturn == (len(s.turns) > 1)
        assert s.source == "speedbench-starter"
        if s.category in ("rag", "summarization"):
            assert len(s.turns[0].split()) >= 150, f"{s.question_id} carries no passage"
    langs = {s.sub_category.rsplit("_", 1)[-1] for s in samples if s.category == "multilingual"}
    assert len(langs) >= 5, langs
    assert content_hash(samples) == content_hash(load_dataset("starter"))


def test_pick_stratified_round_robin_and_deterministic():
    samples = load_dataset("starter")
    pick = pick_stratified(samples, 22, seed=1)
    assert Counter(s.category for s in pick) == {c: 2 for c in CATEGORIES}
    assert [s.category for s in pick[:11]] == sorted(CATEGORIES)
    assert pick == pick_stratified(samples, 22, seed=1)
    assert pick != pick_stratified(samples, 22, seed=2)
    assert len(pick_stratified(samples, None)) == len(samples)
    assert len(pick_stratified(samples, 10_000)) == len(samples)
