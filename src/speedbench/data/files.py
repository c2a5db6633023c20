"""Reading one dataset file into ``Sample``s.

- official SPEED-Bench rows (jsonl or parquet) with ``turns`` (list of user turns)
- the NeMo-Skills form with ``messages`` ([{role, content}, ...]; the user turns are taken)
- Spec-Bench's question.jsonl (integer ``question_id``, ``turns``, ``category``)

Every malformed row fails with ``FILE:LINE: field X: what is wrong``; rows whose text is the
SPEED-Bench placeholder are refused (fetch the real data with ``speedbench data fetch``).
Names (``starter``, ``speed:<config>``, ``mtbench``, ...) are resolved by :mod:`speedbench.data.readers`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speedbench.data.sample import DatasetError, Sample, is_placeholder

__all__ = ["read_file", "row_to_sample"]


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def row_to_sample(row: Any, file: str, line: int) -> Sample:
    if not isinstance(row, dict):
        raise DatasetError(file, line, None, f"row is a {type(row).__name__}, expected a JSON object")
    qid = row.get("question_id", row.get("id"))
    if qid is None or (isinstance(qid, str) and not qid.strip()):
        raise DatasetError(file, line, "question_id", "missing or empty")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise DatasetError(file, line, "question_id", f"must be a string or integer, got {type(qid).__name__}")
    category = row.get("category")
    if not isinstance(category, str) or not category.strip():
        raise DatasetError(file, line, "category", "missing or not a non-empty string")

    if "turns" in row and row["turns"] is not None:
        turns = row["turns"]
        field = "turns"
        if hasattr(turns, "tolist"):
            turns = turns.tolist()
        if not isinstance(turns, list) or not turns:
            raise DatasetError(file, line, field, "must be a non-empty list of strings")
        for i, t in enumerate(turns):
            if not isinstance(t, str) or not t.strip():
                raise DatasetError(file, line, f"{field}[{i}]", "must be a non-empty string")
    elif "messages" in row and row["messages"] is not None:
        field = "messages"
        msgs = row["messages"]
        if hasattr(msgs, "tolist"):
            msgs = msgs.tolist()
        if not isinstance(msgs, list) or not msgs:
            raise DatasetError(file, line, field, "must be a non-empty list of {role, content}")
        turns = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DatasetError(file, line, f"{field}[{i}]", "must be an object with role and content")
            if m["role"] == "user":
                if not isinstance(m["content"], str) or not m["content"].strip():
                    raise DatasetError(file, line, f"{field}[{i}].content", "must be a non-empty string")
                turns.append(m["content"])
        if not turns:
            raise DatasetError(file, line, field, "has no user message")
    else:
        raise DatasetError(file, line, "turns", "missing (expected 'turns' or 'messages')")

    for i, t in enumerate(turns):
        if is_placeholder(t):
            raise DatasetError(
                file,
                line,
                f"{field}[{i}]",
                f"question {qid} is the SPEED-Bench placeholder text, not a prompt; "
                "resolve it from its source with `speedbench data fetch`",
            )
    multiturn = row.get("multiturn")
    if multiturn is not None and not isinstance(multiturn, bool):
        raise DatasetError(file, line, "multiturn", f"must be true/false, got {multiturn!r}")
    return Sample(
        question_id=str(qid),
        category=category.strip(),
        sub_category=_str_or_none(row.get("sub_category")),
        turns=tuple(turns),
        source=_str_or_none(row.get("source")),
        src_id=_str_or_none(row.get("src_id")),
        difficulty=_str_or_none(row.get("difficulty")),
        multiturn=bool(multiturn) if multiturn is not None else len(turns) > 1,
    )


def _iter_jsonl(path: Path, display: str) -> Iterator[tuple[int, Any]]:
    with path.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(display, n, None, f"not valid JSON ({e.msg} at column {e.colno})") from None


def _iter_parquet(path: Path, display: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for bad files
        raise DatasetError(display, None, None, f"cannot read parquet: {e}") from None
    yield from enumerate(table.to_pylist(), start=1)


def read_file(path: str | Path) -> list[Sample]:
    p = Path(path)
    display = str(path)
    if not p.exists():
        raise DatasetError(display, None, None, "file not found")
    rows = _iter_parquet(p, display) if p.suffix == ".parquet" else _iter_jsonl(p, display)
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for n, row in rows:
        s = row_to_sample(row, display, n)
        if s.question_id in seen:
            raise DatasetError(
                display, n, "question_id", f"duplicate {s.question_id!r} (first on line {seen[s.question_id]})"
            )
        seen[s.question_id] = n
        samples.append(s)
    if not samples:
        raise DatasetError(display, None, None, "no rows")
    return samples
