"""Answers under a service-level objective (``speedbench model SWEEP_DIR --slo ...``, docs/model.md "SLO"): the
configuration (draft length, SD on or off, concurrency) with the highest output tok/s that meets every term,
from the fitted model where it can predict the term and from the measured cells where it cannot, and the cells to
measure next to confirm it.

Terms: ``METRIC OP VALUE`` joined by commas, e.g. ``user_tps>=30,ttft_p99<=2s``.

- predicted by the model (any batch and k in range): ``user_tps`` (per-user decode tok/s) and ``output_tps``;
- where a configuration was measured, its cell decides every term (user_tps = its per-user decode tok/s,
  output_tps = its run's output tok/s): a prediction never overrules a measurement;
- measured only (a step-time model holds no prefill or queueing): ``ttft_mean``, ``ttft_p50``, ``ttft_p90``,
  ``ttft_p99``, ``e2e_*`` and ``tpot_*`` in seconds (``2s``, ``250ms``, or a bare number of seconds): checked on
  the cell measured at that (k, concurrency), unknown elsewhere, and the answer says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from speedbench.analysis.speedup_model import BASELINE, CellObs, ModelError, SpeedupModel

PREDICTED = ("user_tps", "output_tps")
MEASURED_PREFIXES = ("ttft_", "e2e_", "tpot_")
STATS = ("mean", "p50", "p90", "p99")
_TERM = re.compile(r"^(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=)\s*(?P<value>[0-9.]+)\s*(?P<unit>ms|s)?$")


@dataclass(frozen=True)
class Term:
    metric: str
    op: str  # ">=" or "<="
    value: float  # tok/s, or seconds

    @property
    def predicted(self) -> bool:
        return self.metric in PREDICTED

    def ok(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        unit = "s" if not self.predicted else ""
        return f"{self.metric}{self.op}{self.value:g}{unit}"


def parse_slo(text: str) -> list[Term]:
    """``user_tps>=30,ttft_p99<=2s`` -> terms; one line naming the bad term and the accepted metrics."""
    terms = []
    accepted = ", ".join([*PREDICTED, *(f"{p}{s}" for p in MEASURED_PREFIXES for s in STATS)])
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = _TERM.match(part.replace(" ", ""))
        if m is None:
            raise ModelError(
                f"--slo {part!r}: expected METRIC>=VALUE or METRIC<=VALUE (e.g. user_tps>=30, ttft_p99<=2s)"
            )
        metric, unit = m["metric"], m["unit"]
        value = float(m["value"])
        timed = metric.startswith(MEASURED_PREFIXES) and metric.split("_", 1)[1] in STATS
        if metric not in PREDICTED and not timed:
            raise ModelError(f"--slo {part!r}: unknown metric {metric!r} (accepted: {accepted})")
        if metric in PREDICTED and unit:
            raise ModelError(f"--slo {part!r}: {metric} is in tok/s, it takes no time unit")
        if timed and unit == "ms":
            value /= 1000.0
        terms.append(Term(metric, m["op"], value))
    if not terms:
        raise ModelError("--slo: no term (e.g. --slo 'user_tps>=30,ttft_p99<=2s')")
    return terms


@dataclass(frozen=True)
class Candidate:
    """One configuration: draft length k (0 = SD off) at nominal concurrency c (its batch b: the mean the measured
    cell held, else c), the predictions, and per term: met (True/False) or unknown (None)."""

    k: int
    concurrency: int
    batch: float
    user_tps: tuple[float, float, float]
    output_tps: tuple[float, float, float]
    measured_cell: str | None
    checks: dict[str, bool | None]  # str(term) -> met
    sure: bool  # every predicted term met by the conservative end of its interval

    @property
    def meets(self) -> bool | None:
        """False when some term fails; None when none fails but some is unknown; True when all are met."""
        values = list(self.checks.values())
        if any(v is False for v in values):
            return False
        return None if any(v is None for v in values) else True


def _measured(c: CellObs | None, metric: str) -> float | None:
    if c is None or c.run_summary is None:
        return None
    group, stat = metric.split("_", 1)
    dist = c.run_summary.get(f"{group}_s") or {}
    v = dist.get(stat)
    return float(v) if isinstance(v, (int, float)) else None


def candidates(
    model: SpeedupModel, cells: Sequence[CellObs], terms: Sequence[Term], concurrencies: Sequence[int]
) -> list[Candidate]:
    """Every (k, concurrency) the model covers: k 0 (SD off) to its largest measured k, at each concurrency."""
    out = []
    for c in concurrencies:
        for k in range(model.k_max + 1):
            sd = BASELINE if k == 0 else model.sd
            cell = next((x for x in cells if x.sd == sd and x.k == k and x.concurrency == c), None)
            b = cell.batch if cell is not None else float(c)
            p = model.predict(b, k)
            checks: dict[str, bool | None] = {}
            sure = True
            for t in terms:
                if t.predicted and cell is not None:  # measured: the measurement decides, not the prediction
                    v = cell.decode_tps if t.metric == "user_tps" else cell.output_tps
                    checks[str(t)] = None if v is None else t.ok(v)
                elif t.predicted:
                    band = p.user_tps if t.metric == "user_tps" else p.output_tps
                    checks[str(t)] = t.ok(band[0])
                    sure = sure and t.ok(band[1] if t.op == ">=" else band[2])
                else:
                    v = _measured(cell, t.metric)
                    checks[str(t)] = None if v is None else t.ok(v)
            out.append(Candidate(k, c, b, p.user_tps, p.output_tps, cell.id if cell else None, checks, sure))
    return out


@dataclass(frozen=True)
class SloAnswer:
    terms: tuple[Term, ...]
    answer: Candidate | None
    confirmed: bool  # the answer was measured and every term holds on the measurement (predicted ones too)
    next_cells: tuple[Candidate, ...]
    candidates: tuple[Candidate, ...]
    note: str


def answer_slo(
    model: SpeedupModel, cells: Sequence[CellObs], terms: Sequence[Term], concurrencies: Sequence[int]
) -> SloAnswer:
    """The configuration with the highest predicted output tok/s that fails no term (an unknown measured-only
    term does not disqualify it, but is said), whether a measurement confirms it, and the cells to measure next:
    the answer itself when it was not measured, then the unmeasured candidates nearest the SLO boundary (the
    smallest relative margin on a predicted term) and those whose measured-only terms are unknown."""
    cands = candidates(model, cells, terms, concurrencies)
    ok = [c for c in cands if c.meets is not False]
    best = max(ok, key=lambda c: c.output_tps[0]) if ok else None
    # a measured configuration's checks are its measurements: it is confirmed when all of them hold
    confirmed = best is not None and best.measured_cell is not None and best.meets is True
    predicted_terms = [t for t in terms if t.predicted]

    def margin(c: Candidate) -> float:
        out = float("inf")
        for t in predicted_terms:
            x = c.user_tps[0] if t.metric == "user_tps" else c.output_tps[0]
            out = min(out, abs(x - t.value) / max(t.value, 1e-12))
        return out

    # the answer first when it is unmeasured (it fails no term, so it is among these), then the nearest boundary
    unmeasured = [c for c in cands if c.measured_cell is None and c.meets is not False]
    order = sorted(unmeasured, key=lambda c: (c is not best, margin(c), -c.output_tps[0]))
    note = ""
    if any(not t.predicted for t in terms):
        note = (
            "terms on TTFT, TPOT or E2E are checked on measured cells only (the model holds no prefill or queueing): "
            "'?' = not measured at that configuration"
        )
    return SloAnswer(tuple(terms), best, confirmed, tuple(order[:3]), tuple(cands), note)
