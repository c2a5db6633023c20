"""Typed results: the figures of one group of requests and of a whole run (summary.json).

Every model serialises (``to_dict``) to exactly the keys and order of summary.json as documented in
docs/results.md; ``schema_version`` is the one key added by the typed form.  Readers validate with
``RunSummary.model_validate`` and get typed fields all the way down.

Definitions (docs/metrics.md): AL = 1 + accepted/steps (bonus token counted), AR = accepted/drafted,
joint AR_i = P(L >= i+1), conditional AR_i = P(L >= i+1) / P(L >= i); timings from client timestamps.
``steps`` is what the source counts (engines differ); the figures that mean the same on every engine are
AL over drafted steps, tokens per decode step and the undrafted step share (metrics/sources.py).  Which figures
a group has, and where each is shown, is declared in metrics/figures.py (``FIGURES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from speedbench.metrics.figures import COMPUTED

# 1: the typed form (adds schema_version); summaries written before it have no such key and read as 0.
# Still 1 after the engine-independent step figures were added: keys are only added (docs/results.md), every
# old key keeps its meaning and value, and runs are always re-summarized from records, never read back.
SUMMARY_SCHEMA_VERSION = 1

AcceptanceSourceName = str  # per_request | counter_delta | chunks | none, or a "+"-join of request sources


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Distribution(_Model):
    """{mean, p50, p90, p99, n} of the values that exist (all None and n = 0 when there are none)."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    n: int = 0


class Invariant(_Model):
    """One check: ok True (holds), False (violated; the figures are in detail) or None (not applicable)."""

    name: str
    ok: bool | None
    detail: str


class CountStats(_Model):
    requests: int = Field(0, description="successful requests")
    errors: int = Field(0, description="failed requests")


class AcceptanceStats(_Model):
    """Acceptance of a group of requests (per-request SD stats, or a counter delta at run level)."""

    acceptance_length: float | None = Field(None, description="macro: mean over requests of 1 + accepted/steps")
    acceptance_length_token_weighted: float | None = Field(None, description="1 + sum(accepted)/sum(steps)")
    acceptance_rate: float | None = Field(None, description="sum(accepted)/sum(drafted)")
    conditional_acceptance_rate: list[float | None] = Field(default_factory=list, description="P(L>=i+1)/P(L>=i)")
    joint_acceptance_rate: list[float | None] = Field(default_factory=list, description="P(L>=i+1)")
    histogram: dict[str, int] = Field(default_factory=dict, description='{"L": steps that produced L tokens}')
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    # the same on every engine (docs/metrics.md "Figures that mean the same on every engine")
    acceptance_length_drafted_steps: float | None = Field(
        None, description="mean over requests of 1 + accepted/drafted steps (steps that verified a draft)"
    )
    acceptance_length_drafted_steps_token_weighted: float | None = Field(
        None, description="1 + sum(accepted)/sum(drafted steps): vLLM's (and vllm bench's) AL"
    )
    drafted_steps: int | None = Field(None, description="decode steps that verified a draft")
    drafted_steps_source: str = Field("none", description='per_request | counter_delta | "none: why"')
    tokens_per_decode_step: float | None = Field(
        None, description="sum(tokens after each request's first)/sum(all decode steps, drafted or not)"
    )
    decode_steps: int | None = Field(None, description="all decode steps (target passes after prefill)")
    decode_tokens: int | None = Field(None, description="tokens after each request's first, same requests")
    undrafted_steps: int | None = Field(None, description="decode steps that drafted nothing")
    undrafted_step_share: float | None = Field(None, description="undrafted_steps/decode_steps")
    decode_steps_source: str = Field(
        "none", description='per_request | chunks | per_request_inferred (or a "+"-join) | "none: why"'
    )
    # where this group's figures came from (one source per figure: docs/metrics.md "Sources")
    acceptance_source: str = Field(
        "none", description="source of AL tok-w, AR, steps, drafted, accepted: per_request | counter_delta | chunks"
    )
    acceptance_length_source: str = Field(
        "none", description='source of the macro AL (a mean over requests) | "none: why"'
    )
    per_position_source: str = Field("none", description="source of the per-position rates and the histogram")


class TimingStats(_Model):
    """Client-timestamp figures of a group of requests (seconds; tokens per second)."""

    ttft_s: Distribution = Field(default_factory=Distribution)
    tpot_s: Distribution = Field(default_factory=Distribution)
    itl_s: Distribution = Field(default_factory=Distribution)
    step_time_s: Distribution = Field(default_factory=Distribution)
    e2e_s: Distribution = Field(default_factory=Distribution)
    user_tps: Distribution = Field(default_factory=Distribution)
    output_tps: float | None = None
    output_tokens: int = 0


class GroupStats(TimingStats, AcceptanceStats, CountStats):
    """Counts, acceptance and timing of one group (overall, a category, a resample), in summary.json order, then
    the figures metrics/figures.py computes on their own (``COMPUTED``: None where a group has none; any other
    key is refused)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _computed_figures(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = [f.name for f in COMPUTED]
        unknown = sorted(set(data) - set(cls.model_fields) - set(names))
        if unknown:
            raise ValueError(f"not a figure of a group: {', '.join(unknown)} (metrics/figures.py FIGURES)")
        return {**data, **{n: data.get(n) for n in names}}

    @classmethod
    def combine(
        cls,
        counts: CountStats,
        acceptance: AcceptanceStats,
        timing: TimingStats,
        computed: Mapping[str, float | int | None] | None = None,
    ) -> GroupStats:
        return cls(**dict(counts), **dict(acceptance), **dict(timing), **(computed or {}))

    @property
    def acceptance(self) -> AcceptanceStats:
        return AcceptanceStats(**{f: getattr(self, f) for f in AcceptanceStats.model_fields})

    @property
    def timing(self) -> TimingStats:
        return TimingStats(**{f: getattr(self, f) for f in TimingStats.model_fields})


class Sources(_Model):
    """Where each figure came from."""

    acceptance: AcceptanceSourceName = "none"
    acceptance_per_category: AcceptanceSourceName = "none"
    acceptance_per_position: AcceptanceSourceName = "none"
    timing: str = "client perf_counter_ns timestamps"
    tokens: list[str] = Field(default_factory=list)


class SDTotals(_Model):
    """Summed SD counts (the ``counter_delta`` of summary.json; records.SDStats in typed form)."""

    drafted: int
    accepted: int
    steps: int
    per_position: list[int] = Field(default_factory=list)
    histogram: list[int] = Field(default_factory=list)
    source: Literal["per_request", "counter_delta", "chunks", "none"] = "counter_delta"
    inferred: list[str] = Field(default_factory=list)


class SDCheck(_Model):
    """The run's SD label checked against the server's counters (metrics/sd_label.py): ``ok`` True (agrees),
    False (the label is wrong: ``detail`` says how), None (no counters to check against)."""

    sd: str | None = None
    k: int = 0
    server_drafted: bool | None = None
    server_k: int | None = None
    ok: bool | None = None
    detail: str = ""


class DriftFigure(_Model):
    """One figure of the drift test (metrics/drift.py): its mean over the first and the last third of the
    measured window's successful requests (by start time), ``ratio`` = last / first with its 95% interval
    (None: no interval), and whether it ``drifted`` (the interval excludes 1 and |ratio - 1| >= the threshold)."""

    name: str
    first: float | None = None
    last: float | None = None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    drifted: bool = False


class Drift(_Model):
    """Did the server's speed drift during the measured window (a cold server getting faster, or one slowing
    down)?  ``tested`` False: no verdict, ``why`` says why (too few requests, categories run one after another);
    ``per_third``: requests in each third; ``threshold``: the smallest |ratio - 1| that counts."""

    tested: bool
    why: str | None = None
    per_third: int = 0
    threshold: float = 0.0
    figures: list[DriftFigure] = Field(default_factory=list)
    drifted: bool = False

    @property
    def drifted_figures(self) -> list[DriftFigure]:
        return [f for f in self.figures if f.drifted]


class RunSummary(_Model):
    """summary.json: every figure of a run, derived from records.jsonl + manifest.json."""

    schema_version: int = SUMMARY_SCHEMA_VERSION
    k: int
    overall: GroupStats
    per_category: dict[str, GroupStats]
    errors_by_cause: dict[str, int]
    sources: Sources
    counter_delta: SDTotals | None
    invariants: list[Invariant]
    sd_check: SDCheck | None = None
    drift: Drift | None = None

    @property
    def failed_invariants(self) -> list[Invariant]:
        return [i for i in self.invariants if i.ok is False]
