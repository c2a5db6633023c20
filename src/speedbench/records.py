"""Plain data types that flow between the layers: Event, SDStats, RequestRecord.

Definitions used everywhere (see docs/metrics.md):
- step: one target verification pass.  A step produces 1..k+1 tokens: the accepted
  draft tokens plus one token from the target (the "bonus" or correction token).
- The first output token comes from prefill, not from a verification step, so for a
  request that drafted on every decode step: tokens = 1 + steps + accepted.
- AL (acceptance length) = 1 + accepted / steps (counts the bonus token).
- AR (acceptance rate) = accepted / drafted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from speedbench.errors import SpeedbenchError

AcceptanceSource = Literal["per_request", "counter_delta", "chunks", "none"]


def per_position_from_histogram(histogram: list[int] | tuple[int, ...]) -> list[int]:
    """per_position[i] = #steps with >= i+1 accepted drafts = sum(histogram[i+1:])."""
    return [sum(histogram[i + 1 :]) for i in range(len(histogram) - 1)]


@dataclass(slots=True)
class SDStats:
    """Speculative-decoding counts for one request (or one counter window).

    ``per_position[i]`` = number of steps whose draft token at position i+1 was accepted
    (accepted positions are a prefix, so this equals #steps with >= i+1 accepted).
    ``histogram[j]`` = number of steps that produced j+1 tokens (j accepted drafts).
    """

    drafted: int
    accepted: int
    steps: int
    per_position: list[int] = field(default_factory=list)
    histogram: list[int] = field(default_factory=list)
    source: AcceptanceSource = "per_request"
    # fields the engine did not report but speedbench derived (e.g. llama.cpp gives no step count:
    # steps = completion_tokens - 1 - accepted); named here so reports can label them
    inferred: list[str] = field(default_factory=list)
    # how many of ``steps`` had no draft at all (n-gram lookup found nothing, or no room left for a draft);
    # None: the engine does not say (vLLM's counters count only drafted steps, so there it is 0 by definition)
    undrafted_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["undrafted_steps"] is None:
            del d["undrafted_steps"]  # unknown: absent, as in records written before the field existed
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SDStats:
        return cls(
            drafted=int(d["drafted"]),
            accepted=int(d["accepted"]),
            steps=int(d["steps"]),
            per_position=[int(x) for x in d.get("per_position") or []],
            histogram=[int(x) for x in d.get("histogram") or []],
            source=d.get("source", "per_request"),
            inferred=[str(x) for x in d.get("inferred") or []],
            undrafted_steps=None if d.get("undrafted_steps") is None else int(d["undrafted_steps"]),
        )

    @classmethod
    def from_histogram(cls, histogram: list[int], source: AcceptanceSource, k: int | None = None) -> SDStats:
        """Build stats from a step histogram (index j = steps that accepted j drafts).

        ``k`` is the draft length; drafted = steps * k (every step drafted k tokens).
        """
        k = len(histogram) - 1 if k is None else k
        hist = list(histogram) + [0] * max(0, k + 1 - len(histogram))
        steps = sum(hist)
        accepted = sum(j * n for j, n in enumerate(hist))
        per_pos = per_position_from_histogram(hist)[:k]
        return cls(
            drafted=steps * k, accepted=accepted, steps=steps, per_position=per_pos, histogram=hist, source=source
        )


class SDCounterTotals:
    """An engine's running SD totals, read as a counter snapshot (the shape metrics/counters.py takes:
    num_drafts = steps, num_draft_tokens, num_accepted_tokens, per_position {"0": n, ...})."""

    def __init__(self, k: int) -> None:
        self.num_drafts = 0
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.per_position = [0] * k

    def add(self, sd: SDStats) -> None:
        self.num_drafts += sd.steps
        self.num_draft_tokens += sd.drafted
        self.num_accepted_tokens += sd.accepted
        for i, v in enumerate(sd.per_position):
            if i >= len(self.per_position):
                self.per_position.append(0)
            self.per_position[i] += v

    def snapshot(self) -> dict[str, Any]:
        return {
            "num_drafts": float(self.num_drafts),
            "num_draft_tokens": float(self.num_draft_tokens),
            "num_accepted_tokens": float(self.num_accepted_tokens),
            "per_position": {str(i): float(v) for i, v in enumerate(self.per_position)},
        }


@dataclass(slots=True)
class Event:
    """What an engine yields while streaming one request.

    kind "chunk": ``n_tokens`` output tokens arrived together (one verification step in
    engines that stream per step).  kind "final": end of stream, with the server's usage
    and, when it reports them, its per-request SD stats.  A chunk's tokens are either answer
    (``text``) or a reasoning model's thinking (``reasoning_text``: vLLM/SGLang stream it as
    ``delta.reasoning_content`` or ``delta.reasoning``); both are output tokens, timed alike.
    """

    kind: Literal["chunk", "final"]
    n_tokens: int = 0
    text: str = ""
    reasoning_text: str = ""
    token_ids: list[int] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    sd: SDStats | None = None


class RequestError(SpeedbenchError):
    """A request failed; ``cause`` is one of the short causes counted in errors_by_cause."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


@dataclass(slots=True)
class RequestRecord:
    """One request (one turn of one conversation) as measured by the load generator.

    Timestamps are ``time.perf_counter_ns()`` values taken by the load generator:
    ``start_ns`` just before the request is sent, ``chunk_ns[i]`` when chunk i arrived,
    ``end_ns`` when the stream ended.  ``chunk_tokens[i]`` is the token count of chunk i.
    ``output_text`` is the answer (what the next turn sends back as history); ``reasoning_text`` a reasoning
    model's thinking, counted and timed as output but never sent back (as chat templates drop it).
    ``attempt``: 0 for the first try of (question_id, turn); ``--resume`` retries a transport failure as
    attempt n+1 and keeps the failed line as history (the summary counts the last attempt only).
    """

    question_id: str
    category: str
    turn: int
    start_ns: int
    end_ns: int
    chunk_ns: list[int] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    chunk_tokens_exact: bool = True
    output_text: str = ""
    output_token_ids: list[int] | None = None
    completion_tokens: int | None = None
    completion_tokens_source: str = "client_count"
    prompt_tokens: int | None = None
    sd: SDStats | None = None
    error: dict[str, str] | None = None
    segment: int = 0
    finish_reason: str | None = None
    reasoning_text: str = ""
    attempt: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens(self) -> int:
        if self.completion_tokens is not None:
            return self.completion_tokens
        return sum(self.chunk_tokens)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sd"] = self.sd.to_dict() if self.sd else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        d = dict(d)
        sd = d.pop("sd", None)
        rec = cls(**d)
        rec.sd = SDStats.from_dict(sd) if sd else None
        return rec


def final_attempts(records: Iterable[RequestRecord]) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """Split a run's records (in file order) into the final attempt of each (question_id, turn), which every
    figure counts, and the earlier attempts it superseded (``--resume`` retried them), kept as history.  The
    final attempt is the one with the highest ``attempt``, the later line on a tie; order is kept."""
    last: dict[tuple[str, int], int] = {}
    for i, r in enumerate(records := list(records)):
        key = (r.question_id, r.turn)
        j = last.get(key)
        if j is None or r.attempt >= records[j].attempt:
            last[key] = i
    keep = set(last.values())
    return [r for i, r in enumerate(records) if i in keep], [r for i, r in enumerate(records) if i not in keep]
