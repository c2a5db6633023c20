"""A fitted speedup model of a sweep (``speedbench model SWEEP_DIR``, docs/model.md): acceptance from per-position
rates, step cost from the batch each cell really held, and from the two the per-user and output tok/s and the
speedup at any (batch, draft length) in range, with intervals, validated on held-out cells.

The model, per (engine, model, SD method) of one dataset:

- **acceptance**: the conditional acceptance rate of each draft position, r_i = P(position i accepted | every
  earlier one was), from the per-position counts of the cells at the method's largest draft length (every
  concurrency and repeat pooled: greedy acceptance does not depend on the batch).  Tokens per drafted step with
  k' <= k drafts: tau(k') = 1 + sum_{i<=k'} prod_{j<=i} r_j (SPEED-Bench Eq. 1).  A share u of decode steps had
  no draft (n-gram lookup found nothing; docs/metrics.md), so tokens per decode step = 1 + (1 - u)(tau(k') - 1).
- **cost**: the decode step time t(b, k) = c0 + cb b + c1 x, x = b (k + 1) the tokens verified in a step: a fixed
  cost per step, a cost per request held (its KV cache, its attention) and a cost per token verified, with a knee
  (c2 per token past x = knee, where the step turns compute-bound); the per-request term and the knee only when
  they fit better (Bayesian information criterion); b is the mean number of
  requests decoding at the moments the cell's chunks arrived (measured from the records' timestamps, not the
  nominal concurrency) and t the cell's mean time between chunks per decode step.  Weighted least squares
  over cells (weight: decode steps), parameter uncertainties from the residual variance (numpy).
- **prediction**: per-user tok/s = tokens per step / t(b, k); output tok/s = b x that; speedup over SD off =
  tokens per step x t(b, 0) / t(b, k).  Its interval: 1,000 draws of the cost parameters (normal, their
  covariance) and of the acceptance rates (conversations of the largest-k cells resampled), plus the cells'
  residual spread for a measured value (a prediction interval, not only a confidence interval).

Validation: fit without the held-out cells (``holdout``), predict their per-user tok/s, report the absolute
percentage errors (MAPE, worst cell).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from speedbench.analysis.stats import draw_counts
from speedbench.errors import UserError
from speedbench.metrics.sources import DecodeBasis, decode_steps, request_stats
from speedbench.records import RequestRecord
from speedbench.results.loader import RunResult, load_run
from speedbench.results.rundir import RunDirError
from speedbench.results.sweep_manifest import SweepCell, read_sweep

BASELINE = "none"
DRAWS = 1000
PARSIMONY = 0.1  # a richer cost form must cut the leave-one-out error by 10% to be chosen
OVERALL = "overall"


class ModelError(UserError, ValueError):
    """The sweep cannot be modelled (one line saying what is missing)."""


# ---- what each cell measured ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellObs:
    """One complete cell's observations: ``batch`` the mean requests decoding at its chunk arrivals, ``step_s`` its
    mean decode step time (Σ first-to-last chunk time / Σ decode steps), ``tokens_per_step`` (Σ tokens after the
    first / Σ decode steps), ``user_tps`` its mean per-user tok/s (run summary), ``steps`` Σ decode steps."""

    id: str
    sd: str
    k: int
    concurrency: int
    dataset: str
    batch: float
    step_s: float
    steps: int
    tokens_per_step: float
    user_tps: float | None
    output_tps: float | None
    records: tuple[RequestRecord, ...] = field(repr=False, default=())
    chunks_are_steps: bool = True  # with k: the cell's DecodeBasis (``basis``)
    # the run summary's latency distributions ({"ttft_s": {"mean", "p50", "p90", "p99"}, "tpot_s", "e2e_s"}): what
    # SLO terms the model cannot predict are checked on
    run_summary: dict[str, Any] | None = field(repr=False, default=None)

    @property
    def basis(self) -> DecodeBasis:
        return DecodeBasis(self.k, self.chunks_are_steps)

    @property
    def decode_tps(self) -> float:
        """Per-user decode speed: Σ tokens after the first / Σ first-to-last chunk time = tokens per step / step
        time, the quantity the model predicts (the run summary's mean user tok/s averages per-request ratios)."""
        return self.tokens_per_step / self.step_s


def _decode_span(r: RequestRecord) -> tuple[int, int] | None:
    if not r.ok or len(r.chunk_ns) < 2:
        return None
    return r.chunk_ns[0], r.chunk_ns[-1]


def _steps(r: RequestRecord, basis: DecodeBasis) -> int | None:
    """A request's decode steps: every target pass after prefill (SD off: one token each)."""
    if basis.k == 0:
        return max(r.tokens - 1, 0)
    return decode_steps(r, request_stats(r, basis), basis).decode_steps


def mean_batch(records: Sequence[RequestRecord]) -> float:
    """The mean number of requests decoding (between their first and last chunk) at the moments the records'
    chunks after the first arrived: each engine step is seen once per request it holds, so this is the
    chunk-weighted mean batch, the one that pairs with the chunk-weighted mean step time in a cost linear in b."""
    spans = [s for s in (_decode_span(r) for r in records) if s is not None]
    if not spans:
        return math.nan
    starts = np.sort(np.array([s[0] for s in spans]))
    ends = np.sort(np.array([s[1] for s in spans]))
    times = np.concatenate([np.asarray(r.chunk_ns[1:], dtype=np.int64) for r in records if _decode_span(r)])
    # the step that ends at t produced a token for every request whose first chunk is at or before t and whose
    # last chunk is not before t: the batch it held, a request it prefilled (first token at t) included (a real
    # engine's prefill costs more than one token: docs/model.md, where the model breaks)
    held = np.searchsorted(starts, times, side="right") - np.searchsorted(ends, times, side="left")
    return float(np.mean(held)) if held.size else math.nan


def observe(cell_id: str, run: RunResult) -> CellObs | None:
    """A cell's observations (None when no request decoded: nothing to fit)."""
    m = run.manifest
    settings = m.config
    k = m.k
    duration = steps = tokens = 0
    for r in run.records:
        span = _decode_span(r)
        n = _steps(r, m.basis) if span else None
        if span is None or not n:
            continue
        duration += span[1] - span[0]
        steps += n
        tokens += max(r.tokens - 1, 0)
    if steps == 0:
        return None
    o = run.summary.overall
    return CellObs(
        cell_id,
        settings.engine.sd or BASELINE,
        k,
        settings.concurrency,
        settings.dataset.name,
        mean_batch(run.records),
        duration / 1e9 / steps,
        steps,
        tokens / steps,
        o.user_tps.mean,
        o.output_tps,
        tuple(r for r in run.records if r.ok),
        m.basis.chunks_are_steps,
        {name: getattr(o, name).model_dump() for name in ("ttft_s", "tpot_s", "e2e_s")},
    )


def sweep_observations(sweep_dir: str | Path) -> list[CellObs]:
    """Every complete cell of a sweep, observed (cells not complete, or whose run does not load, are left out)."""
    path = Path(sweep_dir)
    manifest = read_sweep(path)
    out = []
    for c in manifest.cells:
        obs = _observe_cell(path, c)
        if obs is not None:
            out.append(obs)
    return out


def _observe_cell(path: Path, cell: SweepCell) -> CellObs | None:
    if cell.status != "complete":
        return None
    try:
        run = load_run(path / cell.dir)
    except (RunDirError, OSError):
        return None
    if run.manifest.status != "complete":
        return None
    obs = observe(cell.id, run)
    # the sweep's name of the method (a manifest records the engine's, e.g. the mock's)
    return None if obs is None else replace(obs, sd=cell.settings.sd)


# ---- acceptance ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acceptance:
    """Per-position conditional acceptance of one group of requests (a category or overall) at draft length k:
    ``rates[i]`` = r_{i+1}; ``undrafted`` the share of decode steps that had no draft; ``drafted_steps``."""

    rates: tuple[float, ...]
    undrafted: float
    drafted_steps: int
    requests: int

    def tau(self, k: int) -> float:
        """Tokens per drafted step with k drafts: 1 + Σ_{i<=k} Π_{j<=i} r_j.  Past the measured draft length the
        last measured rate is assumed for every further position (an extrapolation: ``extrapolated(k)``)."""
        return tau_of(self.rates, k)

    def extrapolated(self, k: int) -> bool:
        return k > len(self.rates)

    def tokens_per_step(self, k: int) -> float:
        """Tokens per decode step, drafted or not: 1 + (1 - u)(tau(k) - 1)."""
        return tokens_per_step(self.rates, self.undrafted, k)


def tau_of(rates: Sequence[float] | np.ndarray, k: int) -> float:
    """1 + Σ_{i<=k} Π_{j<=i} r_j, the last rate repeated past the end of ``rates``."""
    total, p = 1.0, 1.0
    n = len(rates)
    for i in range(k):
        p *= float(rates[min(i, n - 1)]) if n else 0.0
        total += p
    return total


def tokens_per_step(rates: Sequence[float] | np.ndarray, undrafted: float, k: int) -> float:
    """Tokens per decode step with k drafts when a share ``undrafted`` of the steps had none: 1 + (1 - u)(tau - 1)."""
    return 1.0 + (1.0 - undrafted) * (tau_of(rates, k) - 1.0)


def _request_counts(r: RequestRecord, basis: DecodeBasis) -> tuple[np.ndarray, int, int, int] | None:
    """One request's per-position accepted counts (k of them), drafted steps, decode steps and undrafted steps
    (the last two 0 when its engine does not say); None when it has no SD stats or no drafted step."""
    k = basis.k
    s = request_stats(r, basis)
    if s is None:
        return None
    d = decode_steps(r, s, basis)
    if not d.drafted_steps:
        return None
    per = np.zeros(k)
    pp = list(s.per_position)[:k]
    per[: len(pp)] = pp
    decode = d.decode_steps or 0
    return per, d.drafted_steps, decode, decode - d.drafted_steps if d.decode_steps is not None else 0


def conditional_rates(per: np.ndarray, drafted: np.ndarray) -> np.ndarray:
    """r_1 = accepted at position 1 / drafted steps, r_i = accepted at i / accepted at i - 1 (0 where nothing was
    reached); ``per`` (..., k), ``drafted`` (...)."""
    prev = np.concatenate([np.asarray(drafted, dtype=float)[..., None], per[..., :-1]], axis=-1)
    return np.where(prev > 0, per / np.where(prev > 0, prev, 1.0), 0.0)


def acceptance_of(records: Sequence[RequestRecord], basis: DecodeBasis) -> Acceptance | None:
    """The per-position conditional rates of requests run at draft length ``basis.k`` (None: no SD stats, no
    drafted step)."""
    counts = [c for c in (_request_counts(r, basis) for r in records) if c is not None]
    if not counts:
        return None
    per = np.sum([c[0] for c in counts], axis=0)
    drafted = sum(c[1] for c in counts)
    decode = sum(c[2] for c in counts)
    undrafted = sum(c[3] for c in counts)
    rates = tuple(float(x) for x in conditional_rates(per, np.asarray(drafted)))
    return Acceptance(rates, undrafted / decode if decode else 0.0, drafted, len(counts))


def leviathan_alpha(tau_k: float, k: int) -> float:
    """The i.i.d. acceptance alpha whose closed form (1 - alpha^(k+1)) / (1 - alpha) equals tau_k (bisection)."""
    if tau_k <= 1.0:
        return 0.0
    if tau_k >= k + 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if leviathan_tau(mid, k) < tau_k:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def leviathan_tau(alpha: float, k: int) -> float:
    """Leviathan et al.: expected tokens per step with i.i.d. acceptance alpha, (1 - alpha^(k+1)) / (1 - alpha)."""
    return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


# ---- cost ---------------------------------------------------------------------------------------------------


COEF_NAMES = {"c0": "c0_s", "cb": "cb_s_per_request", "c1": "c1_s_per_token", "c2": "c2_s_per_token_past_knee"}


@dataclass(frozen=True)
class CostFit:
    """t(b, k) = c0 [+ cb b] + c1 min(x, knee) [+ c2 max(0, x - knee)], x = b (k + 1): a fixed cost per step, a
    cost per request in the batch (its KV cache read, its attention: present when it fits better), a cost per
    token verified, and past the knee another per-token cost.  ``terms`` names the coefficients of ``coef``;
    ``cov`` their covariance (conditional on the knee); ``sigma_rel`` the cells' leave-one-out relative error
    (root mean square: the spread a new cell shows around the fit, for prediction intervals)."""

    coef: tuple[float, ...]
    cov: np.ndarray = field(repr=False)
    knee: float | None
    sigma_rel: float
    cells: int
    x_range: tuple[float, float]
    terms: tuple[str, ...] = ("c0", "c1")

    @staticmethod
    def design(b: np.ndarray, k: np.ndarray, per_request: bool, knee: float | None) -> np.ndarray:
        b = np.atleast_1d(np.asarray(b, dtype=float))
        x = b * (np.atleast_1d(np.asarray(k, dtype=float)) + 1.0)
        cols = [np.ones_like(x)]
        if per_request:
            cols.append(b)
        if knee is None:
            cols.append(x)
        else:
            cols += [np.minimum(x, knee), np.maximum(0.0, x - knee)]
        return np.column_stack(cols)

    def time(self, b: float | np.ndarray, k: int | np.ndarray, coef: np.ndarray | None = None) -> np.ndarray:
        """The step time (s) at (b, k): shape (1,) for the fitted coefficients, (draws,) for rows of draws."""
        c = np.asarray(self.coef if coef is None else coef)
        d = self.design(np.asarray(b), np.asarray(k), "cb" in self.terms, self.knee)
        return d @ c.T

    def errors(self) -> tuple[float, ...]:
        return tuple(float(math.sqrt(max(v, 0.0))) for v in np.diag(self.cov))

    @property
    def form(self) -> str:
        per = " + cb * b" if "cb" in self.terms else ""
        tok = " + c1 * min(x, knee) + c2 * max(0, x - knee)" if self.knee is not None else " + c1 * x"
        return f"t = c0{per}{tok}, x = b * (k + 1)"


def _wls(d: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(d * sw[:, None], t * sw, rcond=None)
    resid = t - d @ coef
    dof = max(len(t) - d.shape[1], 1)
    s2 = float((w * resid**2).sum() / dof)
    cov = s2 * np.linalg.pinv((d * w[:, None]).T @ d)
    return coef, cov, float((w * resid**2).sum())


def _physical(coef: np.ndarray, knee: float | None) -> bool:
    """Every cost non-negative, and past a knee (where the step turns compute-bound) a token costs more, not less."""
    return bool((coef >= 0).all()) and (knee is None or coef[-1] >= coef[-2])


def fit_cost(cells: Sequence[CellObs], knee: bool | None = None, per_request: bool | None = None) -> CostFit:
    """Weighted least squares of the cells' mean step time.  The form is chosen by leave-one-out prediction
    error (each cell predicted by the fit of the others; a richer form must cut it by ``PARSIMONY``): ``knee``
    None = a knee only when it predicts better (each candidate between two measured x, at least 2 cells each
    side, is tried), True = always, False = never; ``per_request`` None = the per-request term only when it
    predicts better, True / False = always / never.
    Weights: each cell's engine steps (decode steps / batch) over its squared step time, so a fast cell's error
    counts as much in percent as a slow one's."""
    if len(cells) < 2:
        raise ModelError(f"the cost fit needs at least 2 cells, got {len(cells)}")
    b = np.array([c.batch for c in cells])
    k = np.array([c.k for c in cells], dtype=float)
    x = b * (k + 1)
    t = np.array([c.step_s for c in cells])
    # a cell's mean step time averages its engine steps (request steps / batch: b requests share a step, and its
    # noise), and the error that matters is relative
    w = np.array([c.steps / max(c.batch, 1.0) for c in cells], dtype=float) / t**2
    w = w / w.mean()
    n = len(cells)
    knees: list[float | None] = [] if knee is True else [None]
    xs = np.unique(np.round(x, 9))
    if knee is not False and len(xs) >= 4:
        for lo, hi in zip(xs[1:-2], xs[2:-1], strict=True):
            knees += [float(v) for v in np.linspace(lo, hi, 5)]
    if not knees:
        raise ModelError(f"--knee on needs cells at 4 or more distinct b (k + 1), got {len(xs)}")
    pers = [per_request] if per_request is not None else [False, True]

    def loo_rms(d: np.ndarray) -> float | None:
        """Leave-one-out relative error (root mean square): each cell predicted by the fit of the others."""
        errs = []
        for i in range(n):
            keep = np.arange(n) != i
            if keep.sum() <= d.shape[1]:
                return None
            c_i, _, _ = _wls(d[keep], t[keep], w[keep])
            pred = float(d[i] @ c_i)
            errs.append((t[i] - pred) / pred)
        return max(float(math.sqrt(np.mean(np.square(errs)))), 1e-9)  # below: exact to rounding, all alike

    # the form that predicts cells it was not fitted on best (leave-one-out), a richer one only when it does so
    # clearly better (by PARSIMONY): the per-request term and the knee must earn their place out of sample
    best: tuple[float, int, bool, float | None] | None = None
    for pr in pers:
        if pr and len(set(np.round(k, 9))) < 2:
            continue  # one draft length: b and x are the same column up to a factor
        for kn in knees:
            d = CostFit.design(b, k, pr, kn)
            if knee is None and (pr or kn is not None) and not _physical(_wls(d, t, w)[0], kn):
                continue  # an optional term that makes a cost negative, or a knee past which tokens cost less
            score = loo_rms(d)
            if score is None:
                continue
            params = d.shape[1] + (1 if kn is not None else 0)
            if best is None:
                best = (score, params, pr, kn)
                continue
            new = (score, params, pr, kn)
            if params == best[1]:
                best = min(best, new, key=lambda f: f[0])
                continue
            simpler, richer = (best, new) if best[1] < params else (new, best)
            best = richer if richer[0] < simpler[0] * (1 - PARSIMONY) else simpler
    if best is None:
        raise ModelError(f"the cost fit needs more cells than parameters ({n} cells)")
    sigma_rel, _, pr, kn = best
    d = CostFit.design(b, k, pr, kn)
    coef, cov, _ = _wls(d, t, w)
    terms = ("c0",) + (("cb",) if pr else ()) + (("c1", "c2") if kn is not None else ("c1",))
    return CostFit(tuple(float(c) for c in coef), cov, kn, sigma_rel, n, (float(x.min()), float(x.max())), terms)


# ---- the model ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    b: float
    k: int
    user_tps: tuple[float, float, float]  # point, lo, hi (95% prediction interval)
    output_tps: tuple[float, float, float]
    speedup: tuple[float, float, float]


@dataclass(frozen=True)
class SpeedupModel:
    """One SD method's model: its acceptance per category (and ``overall``) at its largest k, the cost fit over
    the baseline and its cells, and the acceptance resamples behind the intervals."""

    sd: str
    dataset: str
    k_max: int
    acceptance: Mapping[str, Acceptance]
    cost: CostFit
    cells: tuple[str, ...]
    rate_draws: np.ndarray = field(repr=False)  # (draws, k_max): overall conditional rates, conversations resampled
    undrafted_draws: np.ndarray = field(repr=False)  # (draws,)
    seed: int = 0

    def tokens_per_step(self, k: int, category: str = OVERALL) -> float:
        return 1.0 if k == 0 else self.acceptance[category].tokens_per_step(k)

    def predict(
        self, b: float, k: int, category: str = OVERALL, draws: int = DRAWS, requests: int | None = None
    ) -> Prediction:
        """Per-user tok/s, output tok/s and speedup at batch b and draft length k (k <= k_max), each with a
        95% prediction interval (cost parameters, acceptance rates and the cells' residual spread drawn).
        ``requests``: the size of the run the prediction is for: its own acceptance varies as a sample of that
        many requests would (a second resample, scaled by sqrt(requests measured / requests)); None: the mean."""
        rng = np.random.default_rng(self.seed)
        coef = rng.multivariate_normal(np.asarray(self.cost.coef), self.cost.cov, size=draws, method="svd")
        t_k = self.cost.time(b, k, coef).ravel()
        t_0 = self.cost.time(b, 0, coef).ravel()
        # a draw whose step time is not positive is no step time: left out of the percentiles (nan)
        t_k = np.where(t_k > 0, t_k, np.nan)
        t_0 = np.where(t_0 > 0, t_0, np.nan)
        # a new cell's spread around the fit, multiplicative (a step time stays positive however wide it is)
        noise = np.exp(rng.normal(0.0, self.cost.sigma_rel, size=draws))
        tps_step = np.array([self._draw_tokens(i, k, category) for i in range(draws)])
        if requests and k > 0:
            pooled = self.acceptance[OVERALL].requests
            other = np.array([self._draw_tokens(int(j), k, category) for j in rng.integers(0, draws, draws)])
            tps_step = tps_step + (other - other.mean()) * math.sqrt(max(pooled / requests - 1.0, 0.0))
        user = tps_step / (t_k * noise)
        speed = tps_step * t_0 / t_k
        if k > 0:  # two measured step times in a ratio: each with the cells' residual spread
            speed = speed * np.exp(rng.normal(0.0, self.cost.sigma_rel * math.sqrt(2), size=draws))
        point_user = self.tokens_per_step(k, category) / float(self.cost.time(b, k)[0])
        point_speed = self.tokens_per_step(k, category) * float(self.cost.time(b, 0)[0] / self.cost.time(b, k)[0])

        def band(values: np.ndarray, point: float) -> tuple[float, float, float]:
            ok = values[np.isfinite(values)]
            lo, hi = np.percentile(ok, [2.5, 97.5]) if ok.size else (math.nan, math.nan)
            return point, float(lo), float(hi)

        return Prediction(b, k, band(user, point_user), band(user * b, point_user * b), band(speed, point_speed))

    def _draw_tokens(self, i: int, k: int, category: str) -> float:
        if k == 0:
            return 1.0
        base = self.acceptance[OVERALL]
        scale = self.tokens_per_step(k, category) / base.tokens_per_step(k)  # a category's shift, kept per draw
        j = i % len(self.rate_draws)
        return tokens_per_step(self.rate_draws[j], float(self.undrafted_draws[j]), k) * scale

    def best_k(self, b: float, category: str = OVERALL) -> tuple[int, float]:
        """The draft length (0 = SD off) with the highest predicted per-user tok/s at batch b."""
        scores = {k: self.tokens_per_step(k, category) / float(self.cost.time(b, k)[0]) for k in range(self.k_max + 1)}
        k = max(scores, key=lambda kk: scores[kk])
        return k, scores[k] / scores[0]

    def pays_until(self, k: int | None = None, b_max: float = 1024.0) -> float | None:
        """The largest batch at which SD (draft length k, or the best k) still beats SD off by the point
        prediction (None: it pays up to b_max; 0: it never pays)."""
        grid = np.unique(np.concatenate([np.arange(1, 65, 0.25), np.geomspace(64, b_max, 200)]))
        last = 0.0
        for b in grid:
            ok = (
                (self.best_k(float(b))[0] > 0)
                if k is None
                else (self.tokens_per_step(k) * float(self.cost.time(b, 0)[0] / self.cost.time(b, k)[0]) > 1.0)
            )
            if ok:
                last = float(b)
            else:
                return last
        return None


def _conversation_draws(
    records: Sequence[RequestRecord], basis: DecodeBasis, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Overall conditional rates and undrafted share with the conversations resampled (for the intervals)."""
    by_conv: dict[str, list[RequestRecord]] = {}
    for r in records:
        by_conv.setdefault(r.question_id, []).append(r)
    convs = list(by_conv.values())
    # per-conversation sums (per position, drafted, decode, undrafted), then weighted sums per draw
    per = np.zeros((len(convs), basis.k))
    sums = np.zeros((len(convs), 3))
    for i, conv in enumerate(convs):
        for r in conv:
            c = _request_counts(r, basis)
            if c is not None:
                per[i] += c[0]
                sums[i] += c[1:]
    w = draw_counts(np.random.default_rng(seed), len(convs), draws)
    drafted, decode, und = (w @ sums).T
    rates = conditional_rates(w @ per, drafted)
    undrafted = np.where(decode > 0, und / np.where(decode > 0, decode, 1.0), 0.0)
    return rates, undrafted


def fit(
    cells: Sequence[CellObs],
    sd: str,
    knee: bool | None = None,
    seed: int = 0,
    draws: int = DRAWS,
    per_request: bool | None = None,
) -> SpeedupModel:
    """The model of SD method ``sd`` from its cells and the SD-off cells (one dataset)."""
    mine = [c for c in cells if c.sd == sd]
    base = [c for c in cells if c.sd == BASELINE]
    if not mine:
        raise ModelError(f"no complete cell of SD method {sd!r}")
    k_max = max(c.k for c in mine)
    top = [c for c in mine if c.k == k_max]
    records = [r for c in top for r in c.records]
    basis = DecodeBasis(k_max, all(c.chunks_are_steps for c in top))
    overall = acceptance_of(records, basis)
    if overall is None:
        raise ModelError(f"{sd} at k {k_max}: no per-position acceptance in the records (no drafted step)")
    acc: dict[str, Acceptance] = {OVERALL: overall}
    for cat in sorted({r.category for r in records}):
        a = acceptance_of([r for r in records if r.category == cat], basis)
        if a is not None:
            acc[cat] = a
    cost = fit_cost([*base, *mine], knee, per_request)
    rate_draws, und_draws = _conversation_draws(records, basis, draws, seed)
    return SpeedupModel(
        sd, mine[0].dataset, k_max, acc, cost, tuple(c.id for c in [*base, *mine]), rate_draws, und_draws, seed
    )


# ---- held-out validation ------------------------------------------------------------------------------------

_HOLDOUT = re.compile(r"^(?P<key>c|k|concurrency|draft_length)\s*(?P<op>>=|<=|=|>|<)\s*(?P<value>\d+)$")


_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


@dataclass(frozen=True)
class _Rule:
    attr: str | None  # "concurrency" or "k"; None: a cell id
    op: str
    value: int | str

    def __call__(self, c: CellObs) -> bool:
        if self.attr is None:
            return c.id == self.value
        return _OPS[self.op](int(getattr(c, self.attr)), int(self.value))


def holdout_rule(spec: str) -> Callable[[CellObs], bool]:
    """``c=32``, ``c>=16``, ``k=3``, ``k>2`` (comma-separated: any of them), or cell ids: which cells to hold
    out.  One line for anything else."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ModelError("--holdout: empty (e.g. c=32, k=3, c>=16, or cell ids)")
    rules: list[_Rule] = []
    for p in parts:
        m = _HOLDOUT.match(p)
        if m is None:
            if "=" in p or "<" in p or ">" in p:
                raise ModelError(f"--holdout {p!r}: expected c=N, c>=N, k=N, k>N ... or a cell id")
            rules.append(_Rule(None, "=", p))
        else:
            rules.append(_Rule("concurrency" if m["key"] in ("c", "concurrency") else "k", m["op"], int(m["value"])))
    return lambda c: any(r(c) for r in rules)


@dataclass(frozen=True)
class HeldOut:
    id: str
    sd: str
    k: int
    concurrency: int
    batch: float
    measured: float  # per-user tok/s
    predicted: tuple[float, float, float]
    inside: bool  # the measured value is inside the prediction interval

    @property
    def ape(self) -> float:
        return abs(self.predicted[0] - self.measured) / self.measured


@dataclass(frozen=True)
class Validation:
    held_out: tuple[HeldOut, ...]
    fitted: tuple[HeldOut, ...] = ()  # the cells the fit used, predicted by the same fit (for the measured-vs-
    # predicted figure; the errors above count the held-out cells only)

    @property
    def mape(self) -> float | None:
        return float(np.mean([h.ape for h in self.held_out])) if self.held_out else None

    @property
    def worst(self) -> HeldOut | None:
        return max(self.held_out, key=lambda h: h.ape) if self.held_out else None


def validate(
    cells: Sequence[CellObs],
    sd: str,
    held: Callable[[CellObs], bool],
    knee: bool | None = None,
    seed: int = 0,
    per_request: bool | None = None,
) -> tuple[SpeedupModel, Validation]:
    """Fit on the cells ``held`` leaves in, predict the held-out cells of ``sd`` and the baseline (their mean
    per-user tok/s at their measured batch)."""
    train = [c for c in cells if not held(c)]
    test = [c for c in cells if held(c) and c.sd in (sd, BASELINE)]
    if not test:
        raise ModelError("--holdout matches no complete cell of this method and dataset: nothing to validate on")
    model = fit(train, sd, knee, seed, per_request=per_request)

    def judged(c: CellObs) -> HeldOut:
        p = model.predict(c.batch, c.k, requests=len(c.records))
        measured = c.decode_tps
        inside = p.user_tps[1] <= measured <= p.user_tps[2]
        return HeldOut(c.id, c.sd, c.k, c.concurrency, c.batch, measured, p.user_tps, inside)

    fitted = tuple(judged(c) for c in train if c.sd in (sd, BASELINE))
    return model, Validation(tuple(judged(c) for c in test), fitted)
