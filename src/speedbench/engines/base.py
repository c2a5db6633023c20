"""The Engine protocol and the Request an engine receives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from speedbench.records import Event


@dataclass(frozen=True, slots=True)
class Capabilities:
    streams_tokens: bool = True
    per_request_sd_stats: bool = False
    counters: bool = False
    in_process: bool = False
    chunks_are_steps: bool = True  # one streamed chunk per verification step (vLLM does this)
    token_ids: bool = False


@dataclass(slots=True)
class Request:
    """One turn sent to an engine.  ``messages`` is the whole conversation so far
    (earlier turns with the model's own replies) ending with the current user turn."""

    question_id: str
    category: str
    turn: int
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.0
    ignore_eos: bool = False
    draft_length: int | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    name: str
    capabilities: Capabilities

    async def start(self) -> None: ...

    def stream(self, request: Request) -> AsyncIterator[Event]:
        """Yield chunk events then one final event; raise RequestError on failure."""
        ...

    async def counters(self) -> dict[str, Any] | None:
        """Prometheus-style SD totals (see metrics/counters.py), or None."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Engine facts for the manifest (versions, resolved options)."""
        ...
