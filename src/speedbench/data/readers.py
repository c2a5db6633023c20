"""One way in: a dataset name -> ``Sample``s, for ``speedbench run --dataset`` and every ``speedbench data`` command.

:func:`load_dataset` understands every name form (:data:`NAME_FORMS`):

- ``starter``: the embedded set (``speedbench/data/starter.jsonl``);
- a file path (``.jsonl`` / ``.parquet``): official SPEED-Bench rows, the NeMo-Skills ``messages`` form or
  Spec-Bench's question.jsonl (:mod:`speedbench.data.files`);
- ``speed:<config>[@<revision>]``: a config fetched by ``speedbench data fetch`` (:mod:`speedbench.data.fetched`);
- ``mtbench``, ``humaneval``, ``specbench:PATH``: other benchmarks' questions with SPEED-Bench's categories
  (:mod:`speedbench.data.question_sets`).

Also here: the content hash a run records and the stratified pick of a run's prompts.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from speedbench.data.fetched import NAME_PREFIX, resolve_name
from speedbench.data.files import read_file, row_to_sample
from speedbench.data.question_sets import read_humaneval, read_mtbench, read_specbench
from speedbench.data.sample import DatasetError, Sample

__all__ = [
    "EMBEDDED",
    "NAME_FORMS",
    "content_hash",
    "embedded_path",
    "load_dataset",
    "pick_stratified",
    "read_file",
    "row_to_sample",
]

EMBEDDED = {"starter": "starter.jsonl"}
SPECBENCH_PREFIX = "specbench:"
NAMED: dict[str, Callable[[], list[Sample]]] = {"mtbench": read_mtbench, "humaneval": read_humaneval}
NAME_FORMS = (
    "a .jsonl/.parquet file",
    *(f"{name} (embedded)" for name in EMBEDDED),
    f"{NAME_PREFIX}<config>[@rev]",
    *NAMED,
    f"{SPECBENCH_PREFIX}PATH",
)


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("speedbench.data").joinpath(EMBEDDED[name])))


def load_dataset(name: str) -> list[Sample]:
    """The samples a dataset name stands for (see the module docstring for the forms).

    Anything else: a one-line :class:`DatasetError` listing the accepted forms."""
    if name in EMBEDDED:
        return read_file(embedded_path(name))
    if name in NAMED:
        return NAMED[name]()
    if name.startswith(NAME_PREFIX):
        return read_file(resolve_name(name))
    if name.startswith(SPECBENCH_PREFIX):
        path = name[len(SPECBENCH_PREFIX) :]
        if not path:
            raise DatasetError(name, None, None, f"give the file: {SPECBENCH_PREFIX}PATH/question.jsonl")
        return read_specbench(path)
    if name == SPECBENCH_PREFIX.rstrip(":"):
        raise DatasetError(name, None, None, f"give the file: {SPECBENCH_PREFIX}PATH/question.jsonl")
    if not Path(name).exists():
        raise DatasetError(
            name, None, None, "file not found, and not a dataset name (accepted: " + ", ".join(NAME_FORMS) + ")"
        )
    return read_file(name)


def content_hash(samples: list[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps(s.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def pick_stratified(samples: list[Sample], n: int | None, seed: int = 0) -> list[Sample]:
    """Pick n samples round-robin across categories (sorted), each category shuffled by seed.

    Deterministic for a seed.  n=None or n >= len(samples) returns all samples (still in
    round-robin order so a partial run covers every category).
    """
    by_cat: dict[str, list[Sample]] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    rng = random.Random(seed)
    queues = []
    for cat in sorted(by_cat):
        items = list(by_cat[cat])
        rng.shuffle(items)
        queues.append(items)
    limit = len(samples) if n is None else min(n, len(samples))
    out: list[Sample] = []
    i = 0
    while len(out) < limit:
        q = queues[i % len(queues)]
        if q:
            out.append(q.pop(0))
        i += 1
    return out
