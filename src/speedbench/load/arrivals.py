"""Traffic shapes besides the closed loop (docs/load.md): open-loop arrivals and ramp-up.

- **Open loop** (``--request-rate R``): conversations *arrive* at R a second, whatever is in flight; the gaps
  between arrivals are gamma distributed with shape ``burstiness`` and mean 1/R (shape 1: a Poisson process;
  below 1 burstier, above 1 more regular; vLLM's ``--burstiness`` is the same parameter), drawn from the run's
  seed, so a schedule is reproducible.  An arrival starts its conversation's first turn; later turns follow their
  predecessors, as in the closed loop.  ``--concurrency`` given with it caps the conversations in flight (an
  arrival then waits for a free slot); without it there is no cap.
- **Ramp-up** (``--ramp-up S``, closed loop): the first wave's conversations start spread evenly over S seconds
  instead of all at once.
- **Duration** (``--duration S``): no turn is sent after S seconds of the measured window (in-flight requests
  finish); conversations cut short leave their remaining turns unsent.

:class:`ArrivalStats` says what happened: arrivals scheduled and started, the achieved rate next to the requested
one, how late the client dispatched (its lag behind the schedule, measured on the wall clock: a client that cannot
keep up says so), and how many arrivals waited for a slot under the cap.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# the client is behind the schedule when its p99 dispatch lag exceeds this share of the mean gap (or LAG_FLOOR_S)
LAG_SHARE = 0.1
LAG_FLOOR_S = 0.010


def arrival_offsets(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """The seconds after the start at which each of ``n`` arrivals is due: the first at 0, then cumulative gamma
    gaps (shape ``burstiness``, scale 1 / (rate × burstiness): mean 1 / rate, coefficient of variation
    1 / sqrt(burstiness)).  Seeded with its own stream, so the schedule does not depend on anything else the run
    draws."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"request rate {rate} and burstiness {burstiness} must be positive")
    rng = random.Random(f"speedbench-arrivals-{seed}")
    out, t = [], 0.0
    for i in range(n):
        if i:
            t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        out.append(t)
    return out


def ramp_offsets(workers: int, ramp_up_s: float) -> list[float]:
    """Closed loop: when each worker starts its first conversation, spread evenly over ``ramp_up_s``
    (worker i at i × S / workers; S = 0: all at once)."""
    return [i * ramp_up_s / workers for i in range(workers)] if workers else []


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


@dataclass
class ArrivalStats:
    """How one segment's conversations were started (manifest.json ``arrivals``, one entry per segment)."""

    mode: str  # "closed" or "open"
    segment: int = 0
    requested_rate: float | None = None  # conversations per second (open loop)
    burstiness: float | None = None
    cap: int | None = None  # most conversations in flight (None: no cap)
    ramp_up_s: float | None = None
    duration_s: float | None = None
    conversations: int = 0  # to start in this segment
    started: int = 0
    ended_by: str = "every conversation started"
    achieved_rate: float | None = None  # (started - 1) / (last start - first start), open loop
    lag_p50_s: float | None = None  # dispatch time - scheduled time (the client's own lateness; a slot wait apart)
    lag_p99_s: float | None = None
    lag_max_s: float | None = None
    slot_waits: int = 0  # arrivals that found the cap full
    slot_wait_max_s: float | None = None
    preconnected: int = 0  # kept-alive connections opened before the window (engine.preconnect)
    client_procs: int = 1  # the client processes that sent it (--client-procs)
    client_procs_why: str = ""  # --client-procs auto: the chunk rate that decided it
    # run --ray: each client worker's host, its clock's offset from the parent's (0: the same host's clock) and
    # the largest bound on those offsets (half the shortest round trip that measured them)
    client_hosts: list[str] = field(default_factory=list)
    clock_offsets_ms: list[float] = field(default_factory=list)
    clock_bound_ms: float | None = None
    # each conversation's start (open loop: its arrival, dispatched), seconds after the window opened
    starts_s: list[float] = field(default_factory=list, repr=False)
    category: str | None = None  # per-category windows: the window's category (None: every category at once)

    def finish(self, lags: Sequence[float], waits: Sequence[float]) -> ArrivalStats:
        self.started = len(self.starts_s)
        if self.mode == "open" and self.started > 1:
            span = self.starts_s[-1] - self.starts_s[0]
            self.achieved_rate = (self.started - 1) / span if span > 0 else None
        self.lag_p50_s, self.lag_p99_s = percentile(lags, 50), percentile(lags, 99)
        self.lag_max_s = max(lags) if lags else None
        self.slot_waits = sum(1 for w in waits if w > 0)
        self.slot_wait_max_s = max(waits) if waits else None
        return self

    def behind(self) -> str | None:
        """Why the client did not keep up with the schedule (None: it did, or the loop is closed)."""
        if self.mode != "open" or self.requested_rate is None or self.lag_p99_s is None:
            return None
        limit = max(LAG_FLOOR_S, LAG_SHARE / self.requested_rate)
        if self.lag_p99_s <= limit:
            return None
        return (
            f"the client fell behind the arrival schedule: p99 dispatch lag {self.lag_p99_s * 1000:.0f} ms "
            f"(max {self.lag_max_s * 1000 if self.lag_max_s else 0:.0f} ms) against {limit * 1000:.0f} ms allowed "
            f"(10% of the mean gap); achieved {self.achieved_rate or 0:.2f}/s of {self.requested_rate:g}/s requested"
        )

    def line(self) -> str:
        """One line for the console and the report."""
        window = f"{self.category} window: " if self.category is not None else ""
        procs = f"; {self.client_procs} client processes" if self.client_procs > 1 else ""
        if self.client_procs_why:
            procs += f" (--client-procs auto: {self.client_procs_why})"
        return window + self._line() + procs

    def _line(self) -> str:
        if self.mode == "closed":
            ramp = f", first wave ramped over {self.ramp_up_s:g} s" if self.ramp_up_s else ""
            return f"closed loop: {self.started} of {self.conversations} conversations started{ramp} ({self.ended_by})"
        cap = f", at most {self.cap} in flight" if self.cap else ", no cap on conversations in flight"
        rate = f"{self.achieved_rate:.2f}/s" if self.achieved_rate is not None else "n/a"
        lag = f"; dispatch lag p99 {self.lag_p99_s * 1000:.1f} ms" if self.lag_p99_s is not None else ""
        waits = f"; {self.slot_waits} arrivals waited for a slot" if self.slot_waits else ""
        return (
            f"open loop: {self.started} of {self.conversations} conversations arrived at {rate} "
            f"(requested {self.requested_rate:g}/s, burstiness {self.burstiness:g}{cap}){lag}{waits} ({self.ended_by})"
        )

    def to_dict(self) -> dict[str, Any]:
        """manifest.json's entry: the fields, plus ``summary`` (``line()``) and ``behind`` (``behind()``) as text,
        so that readers need not recompute them."""
        d = asdict(self)
        if d["category"] is None:
            del d["category"]
        d["starts_s"] = [round(x, 6) for x in self.starts_s]
        d["summary"] = self.line()
        d["behind"] = self.behind()
        return d
