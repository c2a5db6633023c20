"""The Sample type: one benchmark prompt with SPEED-Bench's eight official fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from speedbench.errors import UserError

CATEGORIES = (
    "coding",
    "humanities",
    "math",
    "multilingual",
    "qa",
    "rag",
    "reasoning",
    "roleplay",
    "stem",
    "summarization",
    "writing",
)

PLACEHOLDER_PREFIX = "FULL BENCHMARK DATA SHOULD BE FETCHED FROM THE SOURCE"


def is_placeholder(text: Any) -> bool:
    """The SPEED-Bench placeholder instead of a prompt (the official rows start with this text)."""
    return isinstance(text, str) and text.lstrip().startswith(PLACEHOLDER_PREFIX)


class DatasetError(UserError, ValueError):
    """Bad dataset input; the message is one line: FILE:LINE: field X: what is wrong."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str) -> None:
        where = f"{file}:{line}" if line is not None else file
        text = f"{where}: field {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)
        self.file, self.line, self.field = file, line, field


@dataclass(frozen=True, slots=True)
class Sample:
    question_id: str
    category: str
    sub_category: str | None
    turns: tuple[str, ...]
    source: str | None
    src_id: str | None
    difficulty: str | None
    multiturn: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["turns"] = list(self.turns)
        return d


def category_indices(samples: list[Sample]) -> dict[str, list[int]]:
    """Positions of the samples of each category, categories in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        out.setdefault(s.category, []).append(i)
    return out
