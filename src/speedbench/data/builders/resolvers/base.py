"""What every SPEED-Bench source resolver shares: the placeholder, pins, the per-row context.

Behaviour follows NVIDIA's reference client (Model-Optimizer ``examples/specdec_bench``,
``specdec_bench/datasets/speed.py``, ``SPEEDBench._fetch_all_turns_data``): a row whose first turn starts
with the placeholder is rebuilt from its upstream source, chosen by a substring of the row's ``source``
field; templated rows keep their prompt after ``PLACEHOLDER + "\\n\\n"`` and fill it with ``str.format``.
One deliberate difference: every random choice uses an RNG seeded from (seed, resolver, question_id), so
the output never depends on row or config order (the reference seeds some choices globally).
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from speedbench.data.builders.resolvers.errors import ResolveError
from speedbench.data.sample import PLACEHOLDER_PREFIX, is_placeholder

if TYPE_CHECKING:
    from speedbench.data.builders.resolvers.loading import SourceLoader
    from speedbench.data.builders.resolvers.tokens import Tokenizer

# The full placeholder text of the official dataset (speed.py: TURNS_PLACEHOLDER).
PLACEHOLDER = PLACEHOLDER_PREFIX + " USING SPECDEC_BENCH"


def row_turns(row: dict[str, Any]) -> list[Any]:
    """A row's ``turns`` as a list (a parquet-backed row may hold a numpy array), empty when absent."""
    turns: Any = row.get("turns")
    if hasattr(turns, "tolist"):
        turns = turns.tolist()
    return list(turns or [])


def row_is_placeholder(row: dict[str, Any]) -> bool:
    """The reference checks the first turn only; any turn holding the placeholder counts here."""
    return any(is_placeholder(t) for t in row_turns(row))


def template_of(turn: str) -> str:
    """The prompt template after the placeholder line (reference: ``removeprefix(PLACEHOLDER + "\\n\\n")``)."""
    text = turn.lstrip()
    for head in (PLACEHOLDER + "\n\n", PLACEHOLDER_PREFIX + "\n\n"):
        if text.startswith(head):
            return text[len(head) :]
    return text


def fill(template: str, **fields: Any) -> str:
    """``str.format`` as the reference does (so ``{question[en]}`` indexes a dict field)."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ResolveError(f"prompt template does not fit the source row ({type(e).__name__}: {e})") from None


def ints_after_underscores(src_id: str) -> list[int]:
    """All ``_<digits>`` numbers of a src_id (reference: ``re.findall(r"_(\\d+)", src_id)``)."""
    return [int(m) for m in re.findall(r"_(\d+)", src_id)]


def index_part(src_id: str, how: str) -> int:
    """The row index inside a src_id: ``last`` = after the last ``_``; ``second`` = the 2nd ``_`` field."""
    try:
        part = src_id.rsplit("_", 1)[1] if how == "last" else src_id.split("_")[1]
        return int(part)
    except (IndexError, ValueError):
        raise ResolveError(f"src_id {src_id!r} has no row index") from None


def num_tokens_for(config: str) -> int:
    """``throughput_<N>k`` -> N*1000 (reference: ``_get_num_tokens_from_config``)."""
    m = re.search(r"throughput_(\d+)k", config)
    if not m:
        raise ResolveError(f"config {config!r} has no token budget (only throughput_<N>k configs do)")
    return int(m.group(1)) * 1000


@dataclass(frozen=True)
class SourcePin:
    """Where a resolver's source lives. ``revision=None`` means unpinned (the hub's default branch) or,
    with ``from_row=True``, whatever revision the row's ``source`` URL names."""

    repo_id: str
    revision: str | None
    from_row: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo_id,
            "revision": self.revision,
            "pinned": self.revision is not None,
            "revision_from_row_url": self.from_row,
            "note": self.note,
        }


@dataclass
class ResolveContext:
    """What a resolver may use: the config being fetched, the seed, sources, and a tokenizer on demand."""

    config: str
    seed: int
    sources: SourceLoader
    tokenizer_factory: Callable[[], Tokenizer]
    _tokenizer: Tokenizer | None = field(default=None, repr=False)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = self.tokenizer_factory()
        return self._tokenizer

    @property
    def tokenizer_used(self) -> str | None:
        """The tokenizer's name if any resolver needed one (for the manifest), else None."""
        return self._tokenizer.name if self._tokenizer is not None else None

    def rng(self, resolver: str, question_id: str) -> random.Random:
        """The row's own RNG: depends only on (seed, resolver, question_id), never on order."""
        return random.Random(f"{self.seed}:{resolver}:{question_id}")

    @property
    def num_tokens(self) -> int:
        return num_tokens_for(self.config)


class Resolver(ABC):
    """One upstream source. Subclasses set ``name``, ``match`` (a substring of the row's ``source``,
    as in the reference's ``BenchmarkDataset`` enum) and ``default_pin``; ``gated`` sources get an
    access preflight."""

    name: ClassVar[str]
    match: ClassVar[str]
    default_pin: ClassVar[SourcePin]
    gated: ClassVar[bool] = False

    def __init__(self, revision: str | None = None) -> None:
        self.pin = replace(self.default_pin, revision=revision) if revision else self.default_pin

    def matches(self, source: str) -> bool:
        return self.match in source

    @abstractmethod
    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        """The row's real user turns."""


def field_of(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise ResolveError(f"source row has no field {name!r} (fields: {', '.join(sorted(row))})")
    return row[name]


def src_id_of(row: dict[str, Any]) -> str:
    src_id = row.get("src_id")
    if not isinstance(src_id, str) or not src_id:
        raise ResolveError("placeholder row has no src_id")
    return src_id


def first_turn(row: dict[str, Any]) -> str:
    turns = row_turns(row)
    if not turns or not isinstance(turns[0], str):
        raise ResolveError("placeholder row has no turns")
    return turns[0]


def n_turns(row: dict[str, Any]) -> int:
    return len(row_turns(row))
