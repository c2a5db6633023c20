"""The Engine protocol, its declared Capabilities, and the Request an engine receives.

Every engine class is built from one typed argument, ``EngineClass(spec: EngineSpec)`` (config/run.py).  Its
static capabilities are declared once, in its registry entry (engines/registry.py: `speedbench engines`
and `--help` read them without importing the engine); the class refers to that entry, and an engine whose
``-E`` options change a capability computes its instance's capabilities once from the spec
(``capabilities_for``).  ``EngineBase`` gives the protocol's two members with a default (``clock_ns``,
``preconnect``); every built-in engine derives from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from speedbench.errors import InvalidInput
from speedbench.records import Event

# the SD method names speedbench knows; each engine declares the ones it takes (Capabilities.sd_methods)
SD_METHODS: tuple[str, ...] = ("none", "ngram", "draft", "eagle", "eagle3", "mtp")
DEFAULT_OUTPUT_LEN = 256


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do and report, as data.  ``sd_methods``: the ``--sd`` values it accepts (for an
    attached server, labels of what the server runs); ``sd_default``: what no ``--sd`` means."""

    streams_tokens: bool = True
    per_request_sd_stats: bool = False
    counters: bool = False
    in_process: bool = False  # runs in speedbench's process: SD is set per run from the spec, no server
    chunks_are_steps: bool = True  # one streamed chunk per verification step (vLLM does this)
    token_ids: bool = False  # chunks carry token ids (vLLM's return_token_ids)
    can_launch: bool = False  # --launch starts its server
    default_output_len: int = DEFAULT_OUTPUT_LEN
    sd_methods: tuple[str, ...] = ()
    sd_default: str | None = None


def check_sd(engine: str, caps: Capabilities, sd: str | None) -> str | None:
    """The spec's ``--sd`` value (or the engine's default), refused in one line when the engine does not take it."""
    method = caps.sd_default if sd is None else sd.lower()
    if method is not None and method not in caps.sd_methods:
        raise InvalidInput(
            f"--sd {method!r} is not supported by engine {engine!r} "
            f"(choose one of: {', '.join(caps.sd_methods) or 'none'})"
        )
    return method


@dataclass(slots=True)
class Request:
    """One turn sent to an engine.  ``messages`` is the whole conversation so far
    (earlier turns with the model's own replies) ending with the current user turn.  ``seed`` is the
    request's sampling seed (load/seeds.py); ``extra_body``: request-body fields for HTTP engines."""

    question_id: str
    category: str
    turn: int
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.0
    ignore_eos: bool = False
    seed: int = 0
    extra_body: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """Built as ``EngineClass(spec)``; ``start()`` once, then any number of runs (``stream`` and
    ``counters``), then ``close()``.  ``clock_ns`` and ``preconnect`` have defaults in ``EngineBase``."""

    name: str
    capabilities: Capabilities
    counter_error: str | None  # why the latest counters() returned None (None after one that did not)
    # the engine's own clock when it simulates time (the mock's -E clock=virtual); None: the wall clock
    # (time.perf_counter_ns).  Every timestamp of a run is read from it (load/generator.clock_of)
    clock_ns: Callable[[], int] | None

    async def start(self) -> None: ...

    async def preconnect(self, n: int) -> int:
        """Open up to ``n`` kept-alive connections before the measured window; how many opened (0: none kept)."""
        ...

    def stream(self, request: Request) -> AsyncIterator[Event]:
        """Yield chunk events then one final event; raise RequestError on failure."""
        ...

    async def counters(self) -> dict[str, Any] | None:
        """Prometheus-style SD totals (see metrics/counters.py), or None."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Engine facts for the manifest (versions, resolved options, ``sd`` and the effective ``k``)."""
        ...


class EngineBase:
    """The defaults of the Engine protocol's optional members: the wall clock, no connections kept to open."""

    clock_ns: Callable[[], int] | None = None

    async def preconnect(self, n: int) -> int:
        return 0
