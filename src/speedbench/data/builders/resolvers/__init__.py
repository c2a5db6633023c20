"""Resolvers that rebuild SPEED-Bench placeholder rows from their upstream sources.

The registry keeps the reference client's order (speed.py ``_fetch_all_turns_data`` tests the row's
``source`` against each upstream id in this order and takes the first that is a substring of it).
Modules are small and import nothing heavy; ``datasets`` and ``tiktoken`` load inside functions.
"""

from __future__ import annotations

from collections.abc import Mapping

from speedbench.data.builders.resolvers.base import (
    PLACEHOLDER,
    ResolveContext,
    ResolveError,
    Resolver,
    SourcePin,
    row_is_placeholder,
)
from speedbench.data.builders.resolvers.conversations import ChatRAGBench, MMLUPro, MTBench101
from speedbench.data.builders.resolvers.hle import HLE, HLE_PAGE
from speedbench.data.builders.resolvers.loading import SourceLoader, load_source
from speedbench.data.builders.resolvers.long_context import AdaLEvalStackSelect, AdaLEvalTextSort, Bamboo
from speedbench.data.builders.resolvers.roleplay import CoSER, RoleBench
from speedbench.data.builders.resolvers.templated import CnnDailyMail, CodeContests, LiveCodeBench, Opus100
from speedbench.data.builders.resolvers.tokens import Tokenizer, o200k_tokenizer, pad_or_truncate
from speedbench.errors import InvalidInput

RESOLVER_CLASSES: tuple[type[Resolver], ...] = (
    Bamboo,
    CnnDailyMail,
    HLE,
    LiveCodeBench,
    CodeContests,
    MTBench101,
    Opus100,
    ChatRAGBench,
    MMLUPro,
    AdaLEvalStackSelect,
    AdaLEvalTextSort,
    RoleBench,
    CoSER,
)

__all__ = [
    "HLE_PAGE",
    "PLACEHOLDER",
    "RESOLVER_CLASSES",
    "Registry",
    "ResolveContext",
    "ResolveError",
    "Resolver",
    "SourceLoader",
    "SourcePin",
    "Tokenizer",
    "o200k_tokenizer",
    "build_registry",
    "load_source",
    "pad_or_truncate",
    "row_is_placeholder",
]


class Registry:
    """Resolvers in reference order; ``for_source`` maps a row's ``source`` to its resolver."""

    def __init__(self, resolvers: list[Resolver]) -> None:
        self.resolvers = resolvers

    def for_source(self, source: object) -> Resolver | None:
        if not isinstance(source, str):
            return None
        return next((r for r in self.resolvers if r.matches(source)), None)

    def known(self) -> list[str]:
        return [r.match for r in self.resolvers]

    def by_name(self, name: str) -> Resolver:
        for r in self.resolvers:
            if r.name == name:
                return r
        raise KeyError(name)


def build_registry(revisions: Mapping[str, str] | None = None) -> Registry:
    """One fresh resolver per source; ``revisions`` overrides a pin by resolver name (e.g. ``{"hle": sha}``)."""
    revisions = dict(revisions or {})
    names = {cls.name for cls in RESOLVER_CLASSES}
    unknown = sorted(set(revisions) - names)
    if unknown:
        raise InvalidInput(f"unknown resolver(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    from_row = sorted(cls.name for cls in RESOLVER_CLASSES if cls.name in revisions and cls.default_pin.from_row)
    if from_row:
        raise InvalidInput(
            f"{', '.join(from_row)}: the revision comes from each row's source URL; a revision override does not apply"
        )
    return Registry([cls(revisions.get(cls.name)) for cls in RESOLVER_CLASSES])
