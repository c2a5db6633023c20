"""`speedbench data fetch`: SPEED-Bench placeholder resolution, pinning, order independence, atomicity.

Everything runs on tiny fixture data sets built here in tmp dirs (the hub is never reached): a
SPEED-Bench copy laid out like the hub repo (README configs + <config>/test-*.parquet) and local copies
of the upstream sources under ``sources_dir/<repo_id>``. Expected prompts are written out by hand from
the fixture values.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from speedbench.data.builders import speed_bench as sb  # noqa: E402
from speedbench.data.builders.resolvers import prompts  # noqa: E402
from speedbench.data.fetched import resolve_name  # noqa: E402
from speedbench.data.readers import read_file  # noqa: E402
from speedbench.data.sample import DatasetError  # noqa: E402

P = "FULL BENCHMARK DATA SHOULD BE FETCHED FROM THE SOURCE USING SPECDEC_BENCH"
PAD = "Answer now please.\n"


class Chunks:
    """A reversible test tokenizer: one token per ``size`` characters."""

    def __init__(self, size: int) -> None:
        self.size, self.name = size, f"chunks{size}"
        self._ids: dict[str, int] = {}
        self._text: list[str] = []

    def encode(self, text: str) -> list[int]:
        out = []
        for i in range(0, len(text), self.size):
            piece = text[i : i + self.size]
            if piece not in self._ids:
                self._ids[piece] = len(self._text)
                self._text.append(piece)
            out.append(self._ids[piece])
        return out

    def decode(self, ids: list[int]) -> str:
        return "".join(self._text[i] for i in ids)


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-cache"))


# --- fixture builders ------------------------------------------------------------------------------


def row(
    qid: str,
    source: str,
    src_id: str | None,
    turns: list[str],
    *,
    category: str = "qa",
    sub_category: str | None = None,
) -> dict[str, Any]:
    return {
        "question_id": qid,
        "category": category,
        "sub_category": sub_category,
        "turns": turns,
        "source": source,
        "src_id": src_id,
        "difficulty": None,
        "multiturn": len(turns) > 1,
    }


BAMBOO_URL = "https://raw.githubusercontent.com/RUCAIBox/BAMBOO/main/datasets/senhallu_4k.jsonl"
MTB_URL = "https://raw.githubusercontent.com/mtbench101/mt-bench-101/main/data/subjective/mtbench101.jsonl"
STACK_URL = "http://opencompass.openxlab.space/utils/AdaLEval/stackselect_1k.json"
TEXTSORT_URL = "http://opencompass.openxlab.space/utils/AdaLEval/textsort_1k.json"
ROLE_URL = (
    "https://huggingface.co/datasets/ZenMoore/RoleBench/tree/a57ed54f9613921e4a5f1b63601a558cd5acf971/rolebench-eng"
)
COSER_URL = "https://github.com/Neph0s/CoSER/tree/main/data"

QUALITATIVE = [
    row("q-real", "somewhere/else", None, ["What is 1+1?"], category="math"),
    row("q-cnn", "abisee/cnn_dailymail", "cnn-b", [P + "\n\nSummarize:\n\n{article}"], category="summarization"),
    row("q-hle", "cais/hle", "h3", [P], category="stem"),
    row(
        "q-lcb",
        "livecodebench/code_generation_lite",
        "lcb-3",
        [P + "\n\n{question}\n\n```python\n{starter_code}\n```"],
        category="coding",
    ),
    row("q-cc", "deepmind/code_contests", "cc-2", [P + "\n\nSolve:\n\n{question}"], category="coding"),
    row("q-mtb", MTB_URL, "mtbench101_CM_1", [P, P], category="reasoning"),
    row(
        "q-opus",
        "Helsinki-NLP/opus-100",
        "opus100_de-en_1",
        [P + "\n\nTranslate into English:\n\n{question[de]}"],
        category="multilingual",
    ),
    row("q-rag", "nvidia/ChatRAG-Bench", "chatrag_3", [P, P], category="rag"),
    row("q-mmlu", "TIGER-Lab/MMLU-Pro", "mmlu_pro_(1, 2)", [P, P], category="stem", sub_category="physics"),
    row(
        "q-role",
        ROLE_URL,
        "rolebench_instruction-generalization_1_2",
        [P + "\n\nYou are {role_name}. {role_description_and_catchphrases}\nStay in character.", P],
        category="roleplay",
    ),
    row("q-coser", COSER_URL, "coser_1", [P], category="roleplay"),
]

THROUGHPUT = [
    row("t-real", "somewhere/else", None, ["Count to ten."], category="low_entropy"),
    row("t-bamboo", BAMBOO_URL, "bamboo_0_2", [P], category="high_entropy"),
    row("t-stack", STACK_URL, "stack-7", [P], category="mixed"),
    row("t-sort", TEXTSORT_URL, "textsort_1", [P], category="low_entropy"),
    row("t-hle", "cais/hle", "HLE_TEST_ID", [P], category="mixed"),
]

HLE_ROWS = [
    {
        "id": f"h{i}",
        "question": f"Q{i}?",
        "rationale": f"R{i}.",
        "category": "Math" if i < 7 else "Bio",
        "image": "data:image/png;base64,xx" if i == 5 else "",
    }
    for i in range(9)
]
STACK_ANSWERS = ["short one", "short two", "H" * 5000, "short four"]
TEXTSORT_PROMPT = "Intro." + prompts.TEXTSORT_ORIGINAL + "Before: b\n\nPart 1: x\n\nAfter: a"
COSER_ROWS = [
    {
        "book": "Book A",
        "scenario": "S0",
        "major_characters": ["Alice"],
        "character_profiles": {"Alice": "pa"},
        "key_characters": [{"name": "Alice", "motivation": "m0"}],
    },
    {
        "book": "Book B",
        "scenario": "A storm.",
        "major_characters": ["Carol"],
        "character_profiles": {"Carol": "Carol is brave.", "Dave": "Dave is shy."},
        "key_characters": [{"name": "Dave", "motivation": "hide"}, {"name": "Carol", "motivation": "find Dave"}],
    },
]


def hle_test_half_ids() -> list[str]:
    import datasets

    ds = datasets.Dataset.from_list(HLE_ROWS)
    return list(ds.train_test_split(test_size=0.5, shuffle=True, seed=42)["test"]["id"])


def hle_train_demos() -> set[str]:
    import datasets

    train = datasets.Dataset.from_list(HLE_ROWS).train_test_split(test_size=0.5, shuffle=True, seed=42)["train"]
    return {
        f"Question: {r['question']}\n\nAnswer: {r['rationale']}\n\n"
        for r in train
        if r["category"] == "Math" and not r["image"]
    }


def write_speed_bench(root: Path, configs: dict[str, list[dict[str, Any]]]) -> Path:
    """A local copy laid out like the hub repo: README ``configs:`` + ``<config>/test-*.parquet``."""
    import datasets

    lines = ["---", "configs:"]
    for name, rows in configs.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(root / name / "test-00000-of-00001.parquet"))
        lines += [f"- config_name: {name}", "  data_files:", "  - split: test", f"    path: {name}/test-*"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
    return root


def _parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(path))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_sources(root: Path) -> Path:
    _parquet(
        root / "abisee/cnn_dailymail/3.0.0/test.parquet",
        [{"id": "cnn-a", "article": "Article A."}, {"id": "cnn-b", "article": "Article {B} text."}],
    )
    _parquet(root / "cais/hle/test.parquet", HLE_ROWS)
    for i, name in enumerate(("test", "test2", "test3", "test4", "test5", "test6")):
        _jsonl(
            root / f"livecodebench/code_generation_lite/{name}.jsonl",
            [{"question_id": f"lcb-{i}", "question_content": f"Problem {i}.", "starter_code": f"def f{i}():"}],
        )
    _parquet(
        root / "deepmind/code_contests/test.parquet",
        [{"name": f"cc-{i}", "description": f"Description {i}."} for i in range(3)],
    )
    _jsonl(
        root / "mtbench101/mt-bench-101/data/subjective/mtbench101.jsonl",
        [
            {"history": [{"user": "x", "bot": "y"}]},
            {"history": [{"user": "First question?", "bot": "a"}, {"user": "Second question?", "bot": "b"}]},
        ],
    )
    _parquet(
        root / "Helsinki-NLP/opus-100/de-en/test.parquet",
        [{"translation": {"de": "eins", "en": "one"}}, {"translation": {"de": "hallo welt", "en": "hello world"}}],
    )
    _parquet(
        root / "nvidia/ChatRAG-Bench/hybridial/test.parquet",
        [
            {"ctxs": [{"title": "t", "text": f"h{i}"}], "messages": [{"role": "user", "content": f"hq{i}"}]}
            for i in range(2)
        ],
    )
    _parquet(
        root / "nvidia/ChatRAG-Bench/sqa/test.parquet",
        [
            {"ctxs": [{"title": "t", "text": "s0"}], "messages": [{"role": "user", "content": "sq0"}]},
            {
                "ctxs": [{"title": "a", "text": "Context one."}, {"title": "b", "text": "Context two."}],
                "messages": [
                    {"role": "user", "content": "What is it?"},
                    {"role": "assistant", "content": "It."},
                    {"role": "user", "content": "Why?"},
                ],
            },
        ],
    )
    _parquet(
        root / "TIGER-Lab/MMLU-Pro/test.parquet",
        [{"question": f"mq{i}", "options": [f"o{i}a", f"o{i}b"]} for i in range(4)],
    )
    _jsonl(
        root / "RUCAIBox/BAMBOO/datasets/senhallu_4k.jsonl",
        [{"content": "Dialogue zero."}, {"content": "Dialogue one."}, {"content": "Dialogue two."}],
    )
    _json(
        root / "AdaLEval/stackselect_1k.json",
        [
            {"question_id": "stack-1", "question": "x", "all_answers": ["a"], "answer": "A1"},
            {"question_id": "stack-7", "question": "How to sort?", "all_answers": STACK_ANSWERS, "answer": "A2"},
        ],
    )
    _json(root / "AdaLEval/textsort_1k.json", [{"prompt": "unused"}, {"prompt": TEXTSORT_PROMPT}])
    role_dir = root / "ZenMoore/RoleBench/rolebench-eng"
    _jsonl(
        role_dir / "instruction-generalization/role_specific/test.jsonl",
        [
            {"role": "Sherlock Holmes", "question": "unused"},
            {"role": "Sherlock Holmes", "question": "Sherlock Holmes, who are you?"},
            {"role": "Sherlock Holmes", "question": "Sherlock Holmes, what is 2+2?"},
        ],
    )
    _json(
        root / "ZenMoore/RoleBench/profiles-eng/desc.json",
        {"Sherlock Holmes": "A detective. Catchphrase: Elementary.", "Watson": "A doctor."},
    )
    _json(root / "Neph0s/CoSER/data/test/test_set.json", COSER_ROWS)
    return root


def throughput_rows() -> list[dict[str, Any]]:
    target = hle_test_half_ids()[0]
    return [dict(r, src_id=target) if r["question_id"] == "t-hle" else r for r in THROUGHPUT]


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    speed = write_speed_bench(tmp_path / "speed", {"qualitative": QUALITATIVE, "throughput_1k": throughput_rows()})
    return {"speed": speed, "sources": write_sources(tmp_path / "sources"), "out": tmp_path / "out", "tmp": tmp_path}


def run_fetch(w: dict[str, Path], configs: Any = ("qualitative",), **kw: Any) -> sb.FetchResult:
    kw.setdefault("tokenizer", Chunks(4))
    kw.setdefault("access_probe", lambda repo, token: pytest.fail("probe must not run with a local HLE copy"))
    return sb.fetch(configs, source=w["speed"], sources_dir=w["sources"], out_dir=w["out"], **kw)


def turns_by_id(path: Path) -> dict[str, list[str]]:
    return {s.question_id: list(s.turns) for s in read_file(path)}


def padded(prompt: str, size: int = 4, budget: int = 1000) -> str:
    """pad_or_truncate by hand for the Chunks(size) tokenizer (a short prompt here): the padding repeated
    after the prompt and cut to exactly ``budget`` tokens.  (The reference's one-shot step pads
    ceil(missing / tokens(padding)) copies, which falls short when the copies pack into fewer tokens
    together than apart, as they do here; speedbench pads until the count is exact.)"""
    have = math.ceil(len(prompt) / size)
    assert have < budget
    return (prompt + PAD * budget)[: budget * size]


# --- resolution per source -------------------------------------------------------------------------


def test_qualitative_sources_resolve_to_hand_written_prompts(world: dict[str, Path]) -> None:
    res = run_fetch(world)
    got = turns_by_id(res.configs["qualitative"].parquet)
    mmlu_head = (
        "The following are multiple choice questions (with answers) about physics. Think step by step and "
        'then finish your answer with "the answer is (X)" where X is the correct letter choice.\n\n'
    )
    coser = prompts.COSER_TEMPLATE.format(
        character="Carol",
        book_name="Book B",
        character_profile="Carol is brave.",
        scenario="A storm.",
        other_character_profiles_str="Dave: Dave is shy.",
        motivation="find Dave",
    )
    assert got == {
        "q-real": ["What is 1+1?"],
        "q-cnn": ["Summarize:\n\nArticle {B} text."],
        "q-hle": ["Q3?"],
        "q-lcb": ["Problem 3.\n\n```python\ndef f3():\n```"],
        "q-cc": ["Solve:\n\nDescription 2."],
        "q-mtb": ["First question?", "Second question?"],
        "q-opus": ["Translate into English:\n\nhallo welt"],
        "q-rag": [
            "Please give a full and complete answer for the questions. \n\nContext:\nContext one.\n\n"
            "Context two.\n\nQuestion:\nWhat is it?",
            "Why?",
        ],
        "q-mmlu": [
            mmlu_head + "Question: mq1\n\nOptions: (A) o1a\n(B) o1b\n\n",
            "Question: mq2\n\nOptions: (A) o2a\n(B) o2b\n\n",
        ],
        "q-role": [
            "You are Sherlock Holmes. A detective. Catchphrase: Elementary.\nStay in character.\n"
            "Sherlock Holmes, who are you?",
            "what is 2+2?",
        ],
        "q-coser": [coser],
    }
    assert "Alice" not in got["q-coser"][0]  # the other row's null profile is left out
    jsonl = [json.loads(x) for x in res.configs["qualitative"].jsonl.read_text().splitlines()]
    assert [r["question_id"] for r in jsonl] == sorted(got)
    assert {r["question_id"]: [m["content"] for m in r["messages"]] for r in jsonl} == got
    manifest = json.loads(res.configs["qualitative"].manifest.read_text())
    assert manifest["rows"] == len(QUALITATIVE) and manifest["placeholder_rows"] == len(QUALITATIVE) - 1
    assert manifest["resolved"] == {
        "chatrag_bench": 1,
        "cnn_dailymail": 1,
        "code_contests": 1,
        "coser": 1,
        "hle": 1,
        "livecodebench": 1,
        "mmlu_pro": 1,
        "mtbench101": 1,
        "opus100": 1,
        "rolebench": 1,
    }
    assert manifest["tokenizer"] is None  # qualitative rows count no tokens


def test_throughput_sources_fill_the_token_budget(world: dict[str, Path]) -> None:
    res = run_fetch(world, ["throughput_1k"])
    got = turns_by_id(res.configs["throughput_1k"].parquet)
    assert got["t-real"] == ["Count to ten."]

    bamboo = (
        prompts.WRITING_HEAD + "START CONTENT 1\n\nDialogue zero.\n\nEND CONTENT\n\n"
        "START CONTENT 2\n\nDialogue two.\n\nEND CONTENT\n"
    )
    assert prompts.WRITING_HEAD.startswith("\nI want you to act as a long dialogue completer. \n")
    assert got["t-bamboo"] == [padded(bamboo)]

    sort = TEXTSORT_PROMPT.replace(prompts.TEXTSORT_ORIGINAL, prompts.TEXTSORT_REPLACEMENT)
    assert got["t-sort"] == [padded(sort)] and "write the all the parts" in got["t-sort"][0]

    # StackSelect: "short one" fits, the huge 3rd answer stops the scan; the correct "short two" is kept.
    head = (
        prompts.STACKSELECT_INSTRUCTION
        + "The question is given below.\nHow to sort?\n\nPossible answers are given below.\n"
    )
    options = [
        padded(head + f"A1:\n\n{a}\n\nA2:\n\n{b}\n\n" + prompts.STACKSELECT_END)
        for a, b in itertools.permutations(["short one", "short two"])
    ]
    assert got["t-stack"][0] in options

    # HLE: header, then whole train-half text-only "Math" demonstrations (each tokenized on its own), cut so
    # that header + demonstrations keep budget - len(question) + 1 tokens, then the question.
    target = next(r for r in HLE_ROWS if r["id"] == hle_test_half_ids()[0])
    text = got["t-hle"][0]
    head = (
        "Please answer the question below.\n\nHere are some examples of question and answer pairs in the "
        f"category of {target['category']}:\n\n"
    )
    assert text.startswith(head) and text.endswith(target["question"])
    middle, demos = text[len(head) : -len(target["question"])], hle_train_demos()
    assert demos and all("Q5?" not in d and "Bio" not in d for d in demos)
    tokens = math.ceil(len(head) / 4)
    while any(middle.startswith(d) for d in demos):
        demo = next(d for d in demos if middle.startswith(d))
        middle, tokens = middle[len(demo) :], tokens + math.ceil(len(demo) / 4)
    assert middle and any(d.startswith(middle) for d in demos)  # only a cut demonstration is left
    assert tokens + math.ceil(len(middle) / 4) == 1000 - math.ceil(len(target["question"]) / 4) + 1
    manifest = json.loads(res.configs["throughput_1k"].manifest.read_text())
    assert manifest["tokenizer"] == "chunks4"
    assert manifest["resolved"] == {"adaleval_stackselect": 1, "adaleval_textsort": 1, "bamboo": 1, "hle": 1}


def test_progress_reports_rows_resolved_per_source(world: dict[str, Path]) -> None:
    seen: list[tuple[str, str, int, int]] = []
    run_fetch(world, progress=lambda *a: seen.append(a))
    assert sorted(seen) == sorted(
        ("qualitative", name, 1, 1)
        for name in (
            "cnn_dailymail",
            "hle",
            "livecodebench",
            "code_contests",
            "mtbench101",
            "opus100",
            "chatrag_bench",
            "mmlu_pro",
            "rolebench",
            "coser",
        )
    )


# --- pinning ---------------------------------------------------------------------------------------


def _capture_hub(monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    import datasets

    calls: list[tuple[Any, ...]] = []

    def fake(path: str, name: str | None = None, *, revision: str | None = None, split: str | None = None, **kw: Any):
        calls.append((path, name, revision, split))
        if path == sb.REPO_ID:
            return datasets.Dataset.from_list(rows)
        if path == "deepmind/code_contests":
            return datasets.Dataset.from_list([{"name": "cc-2", "description": "From the hub."}])
        raise AssertionError(f"unexpected load of {path}")

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


def test_default_revision_is_the_pinned_sha_and_is_recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert len(sb.DEFAULT_REVISION) == 40 and int(sb.DEFAULT_REVISION, 16) >= 0
    calls = _capture_hub(monkeypatch, [QUALITATIVE[0], QUALITATIVE[4]])
    res = sb.fetch("qualitative", out_dir=tmp_path, tokenizer=Chunks(1))
    assert calls[0] == (sb.REPO_ID, "qualitative", sb.DEFAULT_REVISION, "test")
    assert calls[1] == ("deepmind/code_contests", None, "802411c3010cb00d1b05bad57ca77365a3c699d6", "test")
    assert res.configs["qualitative"].parquet == tmp_path / sb.DEFAULT_REVISION / "qualitative.parquet"
    manifest = json.loads(res.configs["qualitative"].manifest.read_text())
    assert manifest["revision"] == sb.DEFAULT_REVISION and manifest["dataset"] == sb.REPO_ID
    assert manifest["sources"]["code_contests"]["revision"] == "802411c3010cb00d1b05bad57ca77365a3c699d6"
    assert manifest["sources"]["hle"]["revision"] == "021a3d71f516a7ac28ceb8d284969902edf1edeb"
    assert turns_by_id(res.configs["qualitative"].parquet)["q-cc"] == ["Solve:\n\nFrom the hub."]


def test_revision_overrides_are_loaded_and_recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _capture_hub(monkeypatch, [QUALITATIVE[0], QUALITATIVE[4]])
    res = sb.fetch(
        ["qualitative"], revision="refs/pr/8", source_revisions={"code_contests": "abc123"}, out_dir=tmp_path
    )
    assert calls == [
        (sb.REPO_ID, "qualitative", "refs/pr/8", "test"),
        ("deepmind/code_contests", None, "abc123", "test"),
    ]
    manifest = json.loads(res.configs["qualitative"].manifest.read_text())
    assert manifest["revision"] == "refs/pr/8" and manifest["sources"]["code_contests"]["revision"] == "abc123"
    assert res.configs["qualitative"].parquet.parent == tmp_path / "refs--pr--8"
    with pytest.raises(ValueError, match="unknown resolver"):
        sb.fetch(["qualitative"], source_revisions={"nope": "x"}, out_dir=tmp_path)


# --- order independence ----------------------------------------------------------------------------


def test_output_does_not_depend_on_row_or_config_order(world: dict[str, Path]) -> None:
    first = run_fetch(world, ["qualitative", "throughput_1k"])
    shuffled_q, shuffled_t = list(QUALITATIVE), throughput_rows()
    random.Random(7).shuffle(shuffled_q)
    shuffled_t.reverse()
    other = dict(
        world,
        speed=write_speed_bench(world["tmp"] / "speed2", {"throughput_1k": shuffled_t, "qualitative": shuffled_q}),
        out=world["tmp"] / "out2",
    )
    second = run_fetch(other, ["throughput_1k", "qualitative"])
    for config in ("qualitative", "throughput_1k"):
        a, b = first.configs[config], second.configs[config]
        for x, y in ((a.parquet, b.parquet), (a.jsonl, b.jsonl), (a.manifest, b.manifest)):
            assert x.read_bytes() == y.read_bytes(), x.name
    seeded = run_fetch(dict(world, out=world["tmp"] / "out3"), ["throughput_1k"], seed=1)
    assert json.loads(seeded.configs["throughput_1k"].manifest.read_text())["seed"] == 1


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_source_lists_question_ids_and_known_sources(world: dict[str, Path]) -> None:
    bad = QUALITATIVE + [row("q-x1", "mystery/source", "1", [P]), row("q-x2", "other/thing", "2", [P])]
    w = dict(world, speed=write_speed_bench(world["tmp"] / "bad", {"qualitative": bad}))
    with pytest.raises(DatasetError) as e:
        run_fetch(w)
    msg = str(e.value)
    assert "\n" not in msg and "q-x1, q-x2" in msg and "abisee/cnn_dailymail" in msg and "Neph0s/CoSER" in msg
    assert "q-cnn" not in msg and not w["out"].exists()


def test_leftover_placeholder_lists_question_ids(world: dict[str, Path]) -> None:
    # templated rows that lost their template: filling leaves the placeholder text in place
    bare = [row(q, "abisee/cnn_dailymail", "cnn-a", [P]) for q in ("q-bare2", "q-bare1")]
    w = dict(world, speed=write_speed_bench(world["tmp"] / "left", {"qualitative": [QUALITATIVE[0], *bare]}))
    with pytest.raises(DatasetError) as e:
        run_fetch(w)
    msg = str(e.value)
    assert "\n" not in msg and "still hold the placeholder" in msg and "(question_id: q-bare1, q-bare2)" in msg
    assert not w["out"].exists()


def test_missing_source_row_names_the_question(world: dict[str, Path]) -> None:
    w = dict(
        world,
        speed=write_speed_bench(
            world["tmp"] / "miss",
            {"qualitative": [row("q-gone", "deepmind/code_contests", "cc-99", [P + "\n\n{question}"])]},
        ),
    )
    with pytest.raises(DatasetError, match=r"question q-gone \(code_contests\): no row with name == 'cc-99'"):
        run_fetch(w)


# --- gated HLE preflight ---------------------------------------------------------------------------


def test_hle_preflight_denied_stops_before_any_work(world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    calls: list[tuple[str, str | None]] = []

    def denied(repo: str, token: str | None) -> None:
        calls.append((repo, token))
        raise PermissionError("403 Client Error: gated\nmore detail")

    empty = world["tmp"] / "no-sources"
    empty.mkdir()
    with pytest.raises(DatasetError) as e:
        sb.fetch(["qualitative"], source=world["speed"], sources_dir=empty, out_dir=world["out"], access_probe=denied)
    msg = str(e.value)
    assert calls == [("cais/hle", "hf_test_token")]
    assert "\n" not in msg and msg.startswith("cais/hle: ")
    assert "request access at https://huggingface.co/datasets/cais/hle" in msg
    assert "`huggingface-cli login`" in msg and "HF_TOKEN" in msg and "PermissionError" in msg
    assert not world["out"].exists()


def test_preflight_probes_only_when_hle_rows_need_the_hub(world: dict[str, Path]) -> None:
    from speedbench.data.builders.resolvers import build_registry

    reg, calls = build_registry(), []
    probe = lambda repo, token: calls.append(repo)  # noqa: E731
    assert sb.preflight({"qualitative": QUALITATIVE}, reg, probe=probe) == ["cais/hle"] and calls == ["cais/hle"]
    no_hle = [r for r in QUALITATIVE if r["source"] != "cais/hle"]
    assert sb.preflight({"qualitative": no_hle}, reg, probe=probe) == [] and calls == ["cais/hle"]
    assert sb.preflight({"q": QUALITATIVE}, reg, sources_dir=world["sources"], probe=probe) == []
    resolved_hle = [row("q-done", "cais/hle", "h1", ["Already text."])]
    assert sb.preflight({"q": resolved_hle}, reg, probe=probe) == [] and calls == ["cais/hle"]


# --- atomic output ---------------------------------------------------------------------------------


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_failure_mid_fetch_keeps_previous_output_and_leaves_no_temp_files(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_fetch(world)
    before = _listing(world["out"])
    assert sorted(before) == [
        f"{sb.DEFAULT_REVISION}/qualitative.{ext}" for ext in ("jsonl", "manifest.json", "parquet")
    ]

    # 1) a resolver fails after others resolved
    from speedbench.data.builders.resolvers.roleplay import CoSER

    def boom(self: Any, row: dict[str, Any], ctx: Any) -> list[str]:
        raise RuntimeError("network down")

    monkeypatch.setattr(CoSER, "resolve", boom)
    with pytest.raises(DatasetError, match=r"question q-coser \(coser\): loading its source failed: RuntimeError"):
        run_fetch(world, seed=5)
    assert _listing(world["out"]) == before
    monkeypatch.undo()

    # 2) writing fails after the parquet was written
    def broken(samples: Any, dest: Any) -> None:
        Path(dest).write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(sb, "write_messages_jsonl", broken)
    with pytest.raises(OSError, match="disk full"):
        run_fetch(world, seed=5)
    assert _listing(world["out"]) == before
    assert [p.name for p in (world["out"] / sb.DEFAULT_REVISION).iterdir() if p.name.startswith(".")] == []


# --- speed:<config> names --------------------------------------------------------------------------


def test_resolve_name(world: dict[str, Path]) -> None:
    with pytest.raises(DatasetError) as e:
        resolve_name("speed:qualitative", out_dir=world["out"])
    msg = str(e.value)
    assert "\n" not in msg and "run `speedbench data fetch --config qualitative`" in msg
    res = run_fetch(world)
    assert resolve_name("speed:qualitative", out_dir=world["out"]) == res.configs["qualitative"].parquet
    with pytest.raises(DatasetError, match="--config throughput_1k --revision abc`"):
        resolve_name("speed:throughput_1k@abc", out_dir=world["out"])
    with pytest.raises(DatasetError, match="unknown SPEED-Bench config 'nope'"):
        resolve_name("speed:nope", out_dir=world["out"])


def test_resolve_name_defaults_to_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPEEDBENCH_CACHE", str(tmp_path))
    folder = tmp_path / "datasets" / "speed-bench" / sb.DEFAULT_REVISION
    folder.mkdir(parents=True)
    (folder / "throughput_2k.parquet").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not fetched yet"):  # no manifest: not a finished fetch
        resolve_name("speed:throughput_2k")
    (folder / "throughput_2k.manifest.json").write_text("{}")
    assert resolve_name("speed:throughput_2k") == folder / "throughput_2k.parquet"


def test_config_names_expand_and_are_checked() -> None:
    assert sb.expand_configs("all") == list(sb.CONFIGS)
    assert sb.expand_configs(["throughput_8k", "qualitative", "throughput_8k"]) == ["throughput_8k", "qualitative"]
    with pytest.raises(DatasetError, match="unknown config 'throughput_4k'"):
        sb.expand_configs(["throughput_4k"])


def test_cli_fetch_then_run_on_speed_name(world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """`speedbench data fetch` into the cache, then `speedbench run --dataset speed:qualitative` reads it."""
    from typer.testing import CliRunner

    from speedbench.cli import app

    monkeypatch.setenv("SPEEDBENCH_CACHE", str(world["tmp"] / "cache"))
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "data",
            "fetch",
            "--config",
            "qualitative",
            "--source",
            str(world["speed"]),
            "--sources-dir",
            str(world["sources"]),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    parquet = resolve_name("speed:qualitative")
    assert str(parquet) in res.output.replace("\n", "")
    fetched = read_file(parquet)
    out = world["tmp"] / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "-e",
            "mock",
            "--dataset",
            "speed:qualitative",
            "--out",
            str(out),
            "--warmup",
            "0",
            "--no-progress",
            "-c",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "speed:qualitative"
    assert sorted(manifest["dataset"]["question_ids"]) == sorted(s.question_id for s in fetched)
    res = runner.invoke(app, ["data", "fetch", "--config", "qualitative", "--source-revision", "nope"])
    assert res.exit_code == 2 and "expected NAME=REV" in res.output


def test_revision_override_of_a_row_url_source_is_refused() -> None:
    from speedbench.data.builders.resolvers import RESOLVER_CLASSES, build_registry

    url_sources = [cls.name for cls in RESOLVER_CLASSES if cls.default_pin.from_row]
    assert url_sources  # BAMBOO, MT-Bench-101, ... name their file (and revision) in each row
    with pytest.raises(ValueError, match="comes from each row's source URL"):
        build_registry({url_sources[0]: "abc"})
    pinned = next(cls.name for cls in RESOLVER_CLASSES if not cls.default_pin.from_row)
    assert build_registry({pinned: "abc"}).by_name(pinned).pin.revision == "abc"


def test_fetch_without_datasets_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from speedbench.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    res = CliRunner().invoke(
        app, ["data", "fetch", "--config", "qualitative", "--out-dir", str(tmp_path), "--no-progress"]
    )
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == ["error: data fetch needs datasets: pip install 'speedbench[data]'"]
