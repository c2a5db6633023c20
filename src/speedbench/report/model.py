"""Console tables of a fitted speedup model (``speedbench model SWEEP_DIR``), drawn from model.json
(``results.model_file.ModelFile``): the acceptance per category with Leviathan's closed form beside it, the cost fit
with its uncertainties, predicted speedups per batch x draft length with the best k, the best k per category, where
SD stops paying, the SLO answer and the held-out validation."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from speedbench.results.model_file import ModelFile, SloAnswer, SloCandidate

OVERALL = "overall"


def _band(v: Sequence[float], digits: int = 2) -> str:
    point, lo, hi = v
    return f"{point:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def acceptance_table(s: ModelFile) -> Table:
    k_max = s.k_max
    t = Table(title=escape(f"Acceptance of {s.sd} on {s.dataset} at k {k_max}: conditional rate per position"))
    t.add_column("category")
    t.add_column("requests", justify="right")
    for i in range(1, k_max + 1):
        t.add_column(f"r{i}", justify="right")
    for k in range(1, k_max + 1):
        t.add_column(f"tau({k})", justify="right")
    t.add_column("undrafted", justify="right")
    acc = s.acceptance
    for cat in [OVERALL, *sorted(c for c in acc if c != OVERALL)]:
        a = acc[cat]
        t.add_row(
            escape(cat),
            str(a.requests),
            *(f"{r:.3f}" for r in a.rates),
            *(f"{a.tau[str(k)]:.3f}" for k in range(1, k_max + 1)),
            f"{a.undrafted_share:.1%}",
        )
    return t


def leviathan_table(s: ModelFile) -> Table:
    lev = s.leviathan
    t = Table(
        title=escape(
            f"Tokens per drafted step: per-position rates vs Leviathan's i.i.d. closed form (alpha {lev.alpha:.3f}, "
            f"fitted to tau({s.k_max})), and tau measured by the cells run at each k"
        )
    )
    for name in ("k", "per-position tau(k)", "i.i.d. tau(k)", "measured at k"):
        t.add_column(name, justify="right")
    for k, v in lev.per_position_tau.items():
        measured = lev.measured_tau.get(k)
        t.add_row(k, f"{v:.3f}", f"{lev.tau[k]:.3f}", "-" if measured is None else f"{measured:.3f}")
    return t


def cost_lines(s: ModelFile) -> list[str]:
    c = s.cost
    parts = [f"{name} = {value * 1000:.4f} ms ± {c.stderr[name] * 1000:.4f}" for name, value in c.coef.items()]
    knee = f"; knee at {c.knee_tokens:.1f} tokens per step" if c.knee_tokens is not None else "; no knee"
    return [
        f"cost: {c.form} (b = requests a step produced tokens for, at each chunk arrival, from the records' "
        "timestamps)",
        "  " + "; ".join(parts) + knee + " (± = 1 standard error)",
        f"  fitted on {c.cells} cells, x from {c.x_range[0]:.1f} to {c.x_range[1]:.1f} tokens per step; "
        f"residual spread {c.residual_rel:.1%} of the step time",
    ]


def prediction_table(s: ModelFile) -> Table:
    k_max = s.k_max
    t = Table(title=escape(f"Predicted speedup over SD off [95% prediction interval]: {s.sd} on {s.dataset}"))
    t.add_column("batch", justify="right")
    for k in range(1, k_max + 1):
        t.add_column(f"k={k}", justify="right")
    t.add_column("best k", justify="right")
    t.add_column("user tok/s at best k", justify="right")
    for row in s.predictions:
        best = row.best_k
        cells = []
        for k in range(1, k_max + 1):
            text = _band(row.k[str(k)].speedup)
            cells.append(f"[bold]{escape(text)} *[/bold]" if k == best else escape(text))
        t.add_row(f"{row.b:g}", *cells, "SD off" if best == 0 else str(best), _band(row.k[str(best)].user_tps, 1))
    return t


def category_table(s: ModelFile) -> Table:
    by = s.best_k_by_category
    batches = list(next(iter(by.values())).keys()) if by else []
    t = Table(title="Best draft length per category and batch (0 = SD off)")
    t.add_column("category")
    for b in batches:
        t.add_column(f"b={float(b):g}", justify="right")
    for cat in [OVERALL, *sorted(c for c in by if c != OVERALL)]:
        t.add_row(escape(cat), *(str(by[cat][b]) for b in batches))
    return t


def validation_table(s: ModelFile) -> Table | None:
    v = s.validation
    if v is None:
        return None
    t = Table(title=escape(f"Held-out cells ({v.holdout}): fitted without them, predicted per-user decode tok/s"))
    for name in ("cell", "k", "c", "batch", "measured", "predicted [95% PI]", "error", "inside"):
        t.add_column(name, justify="left" if name == "cell" else "right")
    for h in v.cells:
        t.add_row(
            escape(h.id),
            str(h.k),
            str(h.concurrency),
            f"{h.batch:.2f}",
            f"{h.measured_user_tps:.1f}",
            _band(h.predicted_user_tps, 1),
            f"{h.ape:.1%}",
            "yes" if h.inside else "no",
        )
    return t


def _config(c: SloCandidate, sd: str) -> str:
    what = "SD off" if c.k == 0 else f"{sd} k {c.k}"
    return f"{what}, concurrency {c.concurrency}"


def _mark(v: bool | None) -> str:
    return "?" if v is None else "yes" if v else "no"


def slo_table(slo: SloAnswer, sd: str) -> Table:
    t = Table(title=escape(f"Configurations against the SLO {', '.join(slo.terms)} (predicted; '?' = not measured)"))
    for name in ("configuration", "batch", "user tok/s [95% PI]", "output tok/s [95% PI]", *slo.terms, "measured"):
        t.add_column(escape(name), justify="left" if name == "configuration" else "right")
    for c in sorted(slo.candidates, key=lambda c: -c.output_tps[0]):
        t.add_row(
            escape(_config(c, sd)),
            f"{c.batch:.2f}",
            _band(c.user_tps, 1),
            _band(c.output_tps, 1),
            *(_mark(c.checks[term]) for term in slo.terms),
            "yes" if c.measured_cell else "",
        )
    return t


def slo_lines(slo: SloAnswer, sd: str) -> list[str]:
    a = slo.answer
    if a is None:
        lines = [f"SLO {', '.join(slo.terms)}: no configuration in range meets it (predicted)"]
    else:
        unknown = [term for term, v in a.checks.items() if v is None]
        status = (
            "confirmed by its measured cell"
            if slo.confirmed
            else f"measured cell {a.measured_cell} does not confirm every term"
            if a.measured_cell
            else "predicted only: not measured"
        )
        lines = [
            f"SLO answer: {_config(a, sd)}: output {_band(a.output_tps, 1)} tok/s, per user "
            f"{_band(a.user_tps, 1)} tok/s; {status}"
            + ("" if a.sure else "; the interval crosses the SLO boundary")
            + (f"; unknown: {', '.join(unknown)} (measure it)" if unknown else "")
        ]
    if slo.next:
        lines.append("measure next: " + "; ".join(_config(c, sd) for c in slo.next))
    if slo.note:
        lines.append(slo.note)
    return lines


def print_model(s: ModelFile, console: Console, written: str | None = None) -> None:
    console.print(acceptance_table(s))
    console.print(leviathan_table(s))
    for line in cost_lines(s):
        console.print(escape(line), soft_wrap=True, highlight=False)
    console.print(prediction_table(s))
    console.print(category_table(s))
    pays = s.sd_pays_until_batch
    console.print(
        escape(
            "SD pays (best k beats SD off, point prediction) up to batch "
            + (
                "1,024 and beyond (the grid searched)"
                if pays is None
                else f"{pays:g}"
                if pays
                else "none: it never pays"
            )
            + "; past the measured batches the figures are extrapolations of the cost fit"
        ),
        soft_wrap=True,
    )
    if s.slo is not None:
        console.print(slo_table(s.slo, s.sd))
        for line in slo_lines(s.slo, s.sd):
            console.print(escape(line), soft_wrap=True)
    table = validation_table(s)
    if table is not None and s.validation is not None:
        v = s.validation
        console.print(table)
        console.print(
            escape(
                f"held-out MAPE {v.mape:.1%}, worst {v.worst}; {v.inside_interval} of {len(v.cells)} "
                "measured values inside their prediction interval"
            ),
            soft_wrap=True,
        )
    console.print(
        escape(
            "tau(k) = 1 + Σ_{i<=k} Π_{j<=i} r_j (AL per drafted step, the bonus token counted); tokens per decode step "
            "= 1 + (1 - undrafted)(tau - 1); speedup = tokens per step x t(b, 0) / t(b, k). Past the measured k the "
            "last rate is assumed for further positions. docs/model.md."
        ),
        soft_wrap=True,
    )
    if written:
        console.print(escape(f"wrote {written}"), soft_wrap=True)
