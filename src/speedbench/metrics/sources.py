"""Pick the acceptance figures for each request from the best source available, and count its decode steps.

Priority: the engine's per-request stats ("per_request") > Prometheus counter deltas around
the measured window ("counter_delta", run level only) > counting tokens per streamed chunk
("chunks", valid only for engines that stream one chunk per verification step).

Engines count steps differently (docs/metrics.md): the reference engine counts every target pass after
prefill, drafted or not (``SDStats.undrafted_steps`` says how many drafted nothing); vLLM, SGLang and the
mock count only the steps that verified a draft (``undrafted_steps`` None: the rest are outside ``steps``);
llama.cpp's and TensorRT-LLM's per-request steps are inferred from the token count (every decode step).
``decode_steps`` maps each request onto one account (tokens after the first, all decode steps, drafted
steps) so the figures built on it mean the same thing on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from speedbench.records import RequestRecord, SDStats


@dataclass(frozen=True, slots=True)
class DecodeBasis:
    """How a run's records map onto steps: its effective draft length ``k`` and whether one streamed chunk is one
    verification step (``chunks_are_steps``, the engine's capability).  One value per run, read from its manifest
    (``results.manifest.Manifest.basis``) and passed wherever figures are computed."""

    k: int
    chunks_are_steps: bool = True


def chunk_stats(r: RequestRecord, k: int) -> SDStats | None:
    """SD stats inferred from tokens per chunk.

    The first chunk carries the prefill token; every later chunk is one verification step
    that produced n tokens = (n - 1) accepted drafts + 1 bonus token.  Returns None when the
    per-chunk token counts are not exact or a chunk holds more than k+1 tokens (then chunks
    are not steps).
    """
    if not r.chunk_tokens_exact or len(r.chunk_tokens) < 1 or k < 1:
        return None
    steps_tokens = [n for n in r.chunk_tokens[1:] if n > 0]
    if any(n > k + 1 for n in steps_tokens):
        return None
    hist = [0] * (k + 1)
    for n in steps_tokens:
        hist[n - 1] += 1
    return SDStats.from_histogram(hist, source="chunks", k=k)


def request_stats(r: RequestRecord, basis: DecodeBasis) -> SDStats | None:
    """A request's SD stats from its best source: the engine's own, else its chunks when chunks are steps."""
    if r.sd is not None:
        return r.sd
    if basis.chunks_are_steps:
        return chunk_stats(r, basis.k)
    return None


@dataclass(frozen=True, slots=True)
class DecodeSteps:
    """One request's decode steps on one definition, whatever the engine counts as a step.

    ``tokens``: output tokens after the first (the first comes from prefill).  ``decode_steps``: every target
    pass after prefill, drafted or not.  ``drafted_steps``: the passes that verified a draft (vLLM's
    ``num_drafts``).  ``accepted``: the engine's accepted drafts.  ``cut``: accepted drafts the engine counted
    but never sent (its last step accepted them past the stop point; negative: chunks hold more accepted than
    the engine counted, i.e. merged chunks).  ``source``: where ``decode_steps`` came from (``per_request``:
    the engine reported its undrafted steps; ``chunks``: one chunk per step; ``per_request_inferred``: steps
    inferred from the token count; ``none``).  ``reason``: why a figure is None ("" when none is).
    """

    tokens: int
    decode_steps: int | None
    drafted_steps: int | None
    accepted: int
    cut: int | None
    source: str
    reason: str = ""

    @property
    def undrafted_steps(self) -> int | None:
        if self.decode_steps is None or self.drafted_steps is None:
            return None
        return self.decode_steps - self.drafted_steps


REASON_NO_STATS = "no SD stats"
REASON_CHUNKS_ONLY = (
    "drafted steps unknown: from chunks alone a 1-token step with no draft looks like one whose drafts were all "
    "rejected"
)
REASON_INFERRED = "drafted steps unknown: the engine reports no step count (steps inferred from the token count)"
REASON_DRAFTED_ONLY = (
    "decode steps unknown: the engine counts only the steps that drafted, and its chunks are not steps"
)


def decode_steps(r: RequestRecord, s: SDStats | None, basis: DecodeBasis) -> DecodeSteps:
    """Map a request's stats ``s`` (from its best source) onto the one account of ``DecodeSteps``.

    1. the engine reports ``undrafted_steps`` (the reference engine): its steps are every decode step;
    2. chunks are steps (vLLM, the mock): decode steps = chunks after the first; with per-request stats
       (steps = drafted steps) the difference is the undrafted steps (fewer chunks than drafted steps: the
       chunks were merged and count nothing);
    3. steps inferred from the token count (llama.cpp, TensorRT-LLM): every decode step, drafted ones unknown;
    4. per-request steps that count drafted steps only, no usable chunks: decode steps unknown.
    """
    tokens = max(r.tokens - 1, 0)
    if s is None:
        return DecodeSteps(tokens, None, None, 0, None, "none", REASON_NO_STATS)
    engine = s.source == "per_request"
    inferred = "steps" in s.inferred
    if engine and not inferred and s.undrafted_steps is not None:
        drafted = s.steps - s.undrafted_steps
        return DecodeSteps(tokens, s.steps, drafted, s.accepted, s.steps + s.accepted - tokens, "per_request")
    c = chunk_stats(r, basis.k) if basis.chunks_are_steps else None
    if c is not None and not (engine and inferred):
        chunk_tokens = c.steps + c.accepted
        if not engine:  # the chunks are the only source
            return DecodeSteps(chunk_tokens, c.steps, None, c.accepted, None, "chunks", REASON_CHUNKS_ONLY)
        if c.steps < s.steps:
            reason = f"fewer chunks ({c.steps}) than the engine's drafted steps ({s.steps}): chunks were merged"
            return DecodeSteps(chunk_tokens, None, s.steps, s.accepted, None, "none", reason)
        return DecodeSteps(chunk_tokens, c.steps, s.steps, s.accepted, s.accepted - c.accepted, "chunks")
    if engine and inferred:
        return DecodeSteps(tokens, s.steps, None, s.accepted, None, "per_request_inferred", REASON_INFERRED)
    if engine:
        return DecodeSteps(tokens, None, s.steps, s.accepted, None, "none", REASON_DRAFTED_ONLY)
    return DecodeSteps(tokens, None, None, s.accepted, None, "none", f"{s.source} stats count no decode steps")
