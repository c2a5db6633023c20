"""The HTML pages of a sweep (speedup against concurrency per draft length, best k, the Pareto front, synthetic
vs real, the fitted model when there is one) and of the fitted model itself (docs/report.md).  The sweep's
figures are ``results.sweep_figures``' (the report ``analysis.sweep_report`` builds), the model's model.json's
(``results.model_file``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speedbench.report.figures import Band, Point, Series, forest, lines, predicted_vs_measured, scatter
from speedbench.report.html import Cell, Chart, Page
from speedbench.report.sweep import interval_text
from speedbench.results.estimates import Estimate
from speedbench.results.model_file import ModelFile
from speedbench.results.sweep_figures import SweepReport
from speedbench.results.sweep_manifest import SweepManifest

CELLS = "each cell's run directory (records.jsonl), paired with its SD-off cell by (question_id, turn)"
MARKERS = ("o", "s", "^", "D", "v", "P")
MARKER_NAMES = {"o": "circle", "s": "square", "^": "triangle", "D": "diamond", "v": "down triangle", "P": "plus"}


def _b(e: Estimate | None) -> Band:
    return Band(None) if e is None else Band(e.point, e.lo, e.hi)


def sweep_facts(m: SweepManifest, path: Path) -> list[tuple[str, str]]:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(m.counts().items()))
    g, e = m.grid, m.base.engine
    versions = "; ".join(f"{k} {v}" for k, v in sorted(m.engine_versions.items())) or "not reported"
    opts = "; ".join(f"{k} = {', '.join(v)}" for k, v in g.engine_options.items())
    return [
        ("sweep directory", str(path)),
        ("status", m.status + (f" ({m.stop_cause})" if m.stop_cause else "")),
        ("cells", f"{len(m.cells)}: {counts}"),
        ("engine", f"{e.kind} ({versions})" + (", launched by speedbench" if e.launch else "")),
        ("model", str(e.model or "the engine's default")),
        (
            "grid",
            f"SD {', '.join(g.sd)}; k {', '.join(map(str, g.draft_length))}; concurrency "
            f"{', '.join(map(str, g.concurrency))}; repeats {g.repeats}" + (f"; options {opts}" if opts else ""),
        ),
        ("datasets", ", ".join(g.dataset)),
        (
            "load",
            f"output length {m.base.output_len or 'engine default'}, temperature {m.base.temperature}, "
            f"seed {m.base.seed}",
        ),
        ("speedbench", m.speedbench_version),
        ("date (UTC)", f"{m.created_utc} → {m.updated_utc or 'not finished'}"),
    ]


def sweep_page(report: SweepReport, model: ModelFile | None = None, figures_dir: Path | None = None) -> Page:
    manifest = report.manifest
    page = Page(f"speedbench sweep: {report.path.name}", f"{manifest.base.engine.kind}", figures_dir)
    page.facts(sweep_facts(manifest, report.path))
    if manifest.status != "complete":
        page.banner(f"the sweep is {manifest.status}: cells that are not complete have no figures")
    intervals = f"paired bootstrap over conversations, {report.resamples} resamples, seed {report.seed}"
    if report.repeats > 1:
        intervals += f", crossed with {report.repeats} repeats"
    for i, t in enumerate(report.tables):
        page.section(t.title)
        many = len(t.concurrencies) > 1 and max(t.concurrencies) / max(1, min(t.concurrencies)) >= 4
        series = [
            Series(
                f"k = {k}",
                list(t.concurrencies),
                [_b(t.cells[(c, k)].speedup if (c, k) in t.cells else None) for c in t.concurrencies],
            )
            for k in t.ks
        ]
        page.chart(
            Chart(
                f"t{i}-speedup-vs-concurrency",
                f"Speedup against concurrency, {t.title}",
                "One line per draft length k, each point a cell's speedup over its SD-off cell at the same "
                "concurrency with the 95% interval; the dotted line is 1 (SD neither helps nor hurts).",
                "speedup",
                f"{CELLS}; {intervals}",
                lines(
                    series,
                    "concurrency (requests in flight)",
                    "speedup (SD / SD off, user tok/s)",
                    ref=1.0,
                    logx=many,
                    dodge=0.04 if many else 0.01 * (max(t.concurrencies) - min(t.concurrencies)),
                ),
            )
        )
        if len(t.ks) > 1:
            al = [
                Series(f"c = {c}", list(t.ks), [_b(t.cells[(c, k)].al if (c, k) in t.cells else None) for k in t.ks])
                for c in t.concurrencies
            ]
            page.chart(
                Chart(
                    f"t{i}-al-vs-k",
                    f"Acceptance length against draft length, {t.title}",
                    "One line per concurrency (drawn slightly apart): acceptance depends on the data and k, not on "
                    "the batch, so the lines should lie on each other.",
                    "al",
                    f"{CELLS}; per-request SD stats",
                    lines(al, "draft length k", "acceptance length (tokens per step)", integer_x=True, dodge=0.05),
                )
            )
        rows: list[list[Any]] = []
        for c in t.concurrencies:
            best = t.best_k.get(c)
            row: list[Any] = [Cell(str(c), "num")]
            for k in t.ks:
                cell = t.cells.get((c, k))
                text = interval_text(cell.speedup) if cell is not None else "–"
                row.append(Cell(text, "ok" if best == k else ""))
            row.append(Cell("SD off" if best is None else str(best), "ok" if best is not None else "bad"))
            rows.append(row)
        page.table(
            ["concurrency", *[f"k = {k}" for k in t.ks], "best k"],
            rows,
            "Speedup [95% interval] per cell; the best k (green) is the highest speedup among those significantly "
            "above 1, else the highest point; 'SD off' when no k has a speedup.",
        )
    _pareto(page, report)
    _bias(page, report, intervals)
    if model is not None:
        page.section("Fitted model", "From model.json (speedbench model); its own page is model.html.")
        model_figures(page, model, "m-")
    return page


def _pareto(page: Page, report: SweepReport) -> None:
    datasets = list(dict.fromkeys(c.dataset for c in report.cells))
    points = [
        Point(
            c.user_tps_mean,
            c.output_tps,
            "SD off" if c.sd == "none" else f"{c.sd} k={c.k}",
            report.on_front.get(c.id, False),
            MARKERS[datasets.index(c.dataset) % len(MARKERS)],
        )
        for c in report.cells
        if c.user_tps_mean is not None and c.output_tps is not None
    ]
    if not points:
        return
    page.section("Throughput against latency")
    shapes = ", ".join(f"{MARKER_NAMES[MARKERS[i % len(MARKERS)]]} = {d}" for i, d in enumerate(datasets))
    page.chart(
        Chart(
            "pareto",
            "Pareto front: output tok/s against per-user tok/s",
            "Every cell (colour: SD setting"
            + (f"; marker: dataset, {shapes}" if len(datasets) > 1 else "")
            + "); ringed and "
            "joined: the cells no other beats in both.",
            "pareto",
            CELLS,
            scatter(
                points,
                "mean per-user tok/s",
                "output tok/s (whole run)",
                "Pareto front",
                connect_marked=True,
                wide=True,
            ),
            wide=True,
        )
    )


def _bias(page: Page, report: SweepReport, intervals: str) -> None:
    if not report.bias:
        return
    page.section("Synthetic against real prompts")
    labels = [f"{b.sd} k={b.k} c={b.concurrency} ISL {b.isl}" for b in report.bias]
    for key, what in (("al", "acceptance length"), ("speedup", "speedup")):
        page.chart(
            Chart(
                f"bias-{key}",
                f"Random-token over real prompts: {what}",
                f"The {what} measured on random-token prompts over the same on real prompts of the same input length, "
                "per SD configuration, with the unpaired 95% interval; > 1: random tokens overstate it.",
                "bias",
                f"{CELLS}; unpaired bootstrap of each side ({intervals})",
                forest(labels, [_b(getattr(b, f"{key}_ratio")) for b in report.bias], f"{what}: random / real"),
            )
        )
    page.table(
        ["configuration", "real", "random", "AL real", "AL random", "speedup real", "speedup random"],
        [
            [
                lab,
                b.real,
                b.synthetic,
                interval_text(b.al_real),
                interval_text(b.al_synthetic),
                interval_text(b.speedup_real),
                interval_text(b.speedup_synthetic),
            ]
            for lab, b in zip(labels, report.bias, strict=True)
        ],
    )


# ---- the model --------------------------------------------------------------------------------------------


def _tri_text(v: Sequence[float]) -> str:
    return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"


def _tri(v: Sequence[float] | None) -> Band:
    return Band(None) if not v else Band(v[0], v[1], v[2])


def model_figures(page: Page, s: ModelFile, prefix: str = "") -> None:
    """The model's figures: measured against predicted (held-out cells marked), step time, predicted speedup per
    batch and k, acceptance per position and tau against Leviathan's closed form."""
    v = s.validation
    if v is not None:
        rows = [(c.id, c.measured_user_tps, _tri(c.predicted_user_tps), True) for c in v.cells]
        rows += [(c.id, c.measured_user_tps, _tri(c.predicted_user_tps), False) for c in v.fitted]
        mape = v.mape
        page.chart(
            Chart(
                f"{prefix}validation",
                f"Measured against predicted per-user tok/s (held out: {v.holdout})",
                f"Each cell's mean per-user decode tok/s against the model fitted without the held-out cells (red), "
                f"with the 95% prediction interval; held-out MAPE {mape * 100:.1f}%, "
                f"{v.inside_interval} of {len(v.cells)} inside their interval."
                if mape is not None
                else "Each cell against the model fitted without the held-out cells.",
                "model",
                "the sweep's cells (records.jsonl) and the model fitted on the others",
                predicted_vs_measured(rows, "tok/s per user"),
            )
        )
    cost = s.cost
    measured = cost.measured
    if measured:
        pts = [Point(c.step_s * 1000, c.predicted_step_s * 1000, f"k = {c.k}", False) for c in measured]
        page.chart(
            Chart(
                f"{prefix}step-time",
                "Step time: fitted against measured",
                f"Each cell's mean decode step time against the fitted {cost.form} at the batch it held "
                f"(relative residual {cost.residual_rel * 100:.1f}%).",
                "model",
                "chunk timestamps of every request (records.jsonl)",
                scatter(pts, "measured step time (ms)", "fitted step time (ms)", "", diagonal=True),
            )
        )
    preds = s.predictions
    ks = sorted({int(k) for p in preds for k in p.k})
    series = [
        Series(f"k = {k}", [p.b for p in preds], [_tri(p.k[str(k)].speedup) for p in preds], filled=True)
        for k in ks
        if k > 0
    ]
    pays = s.sd_pays_until_batch
    page.chart(
        Chart(
            f"{prefix}predicted-speedup",
            "Predicted speedup against batch size",
            "The model's speedup over SD off per draft length with its 95% prediction band; "
            + (f"SD stops paying past batch {pays:g}." if pays is not None else "SD pays over the whole range.")
            + " Batches past the measured ones are extrapolation.",
            "model",
            "the model fitted on the sweep's cells",
            lines(series, "batch (requests decoding together)", "predicted speedup", ref=1.0, logx=True),
        )
    )
    acc = s.acceptance
    kmax = s.k_max
    rate_series = [
        Series(cat, list(range(1, kmax + 1)), [Band(x) for x in a.rates], bold=cat == "overall")
        for cat, a in sorted(acc.items(), key=lambda kv: (kv[0] == "overall", kv[0]))
    ]
    page.chart(
        Chart(
            f"{prefix}model-rates",
            "Conditional acceptance per position",
            f"Per category, from the k = {kmax} cells' records; a constant rate would be a flat line (Leviathan's "
            "i.i.d. assumption).",
            "position",
            "per-request per-position acceptance counts (records.jsonl)",
            lines(rate_series, "draft position i", "conditional acceptance rate", integer_x=True, ylim=(0, 1.02)),
        )
    )
    lev = s.leviathan
    tks = list(range(1, kmax + 1))
    tau = [
        Series("per-position rates", tks, [Band(lev.per_position_tau.get(str(k))) for k in tks], bold=True),
        Series(f"Leviathan, α = {lev.alpha:.3f}", tks, [Band(lev.tau.get(str(k))) for k in tks], dashed=True),
        Series("measured at that k", tks, [Band(lev.measured_tau.get(str(k))) for k in tks]),
    ]
    page.chart(
        Chart(
            f"{prefix}tau",
            "Tokens per drafted step: per-position rates against Leviathan's closed form",
            "tau(k) from the per-position rates, from one i.i.d. α fitted at the largest k, and measured in the "
            "cells run at each k.",
            "model",
            "per-request per-position acceptance counts (records.jsonl)",
            lines(tau, "draft length k", "tokens per drafted step, tau(k)", integer_x=True),
        )
    )


def model_page(s: ModelFile, figures_dir: Path | None = None) -> Page:
    page = Page(f"speedbench model: {Path(s.sweep).name}", f"{s.sd} on {s.dataset}", figures_dir)
    cost = s.cost
    terms = ", ".join(f"{name} = {val:.4g} ± {cost.stderr[name]:.2g}" for name, val in cost.coef.items())
    pays = s.sd_pays_until_batch
    page.facts(
        [
            ("sweep", s.sweep),
            ("SD method, dataset", f"{s.sd} on {s.dataset}, draft lengths up to {s.k_max}"),
            ("cells fitted", str(len(s.cells))),
            (
                "step cost",
                f"{cost.form}: {terms}" + (f"; knee at {cost.knee_tokens} tokens" if cost.knee_tokens else ""),
            ),
            ("SD pays until batch", "the whole range" if pays is None else f"{pays:g}"),
            ("seed", str(s.seed)),
        ]
    )
    page.section("Model against measurement")
    model_figures(page, s)
    page.section("Best draft length")
    by_cat = s.best_k_by_category
    batches = list(next(iter(by_cat.values())).keys()) if by_cat else []
    page.table(
        ["category", *[f"b = {b}" for b in batches]],
        [[cat, *[Cell("off" if row[b] == 0 else str(row[b]), "num") for b in batches]] for cat, row in by_cat.items()],
        "The k with the highest predicted per-user tok/s at each batch (off = SD off is best).",
    )
    slo = s.slo
    if slo is not None:
        page.section("Service-level objective")
        a = slo.answer
        if a is not None:
            # each configuration to measure next as its JSON object, as the page has always shown it
            nxt = ", ".join(str(x.model_dump(mode="json")) for x in slo.next)
            page.facts(
                [
                    ("objective", ", ".join(slo.terms)),
                    ("answer", f"k = {a.k}, concurrency {a.concurrency} (batch {a.batch:g})"),
                    ("output tok/s", _tri_text(a.output_tps)),
                    ("confirmed by a measured cell", "yes" if slo.confirmed else "no"),
                    ("measure next", nxt or "nothing"),
                ]
            )
        if slo.note:
            page.note(slo.note)
    v = s.validation
    if v is not None:
        page.section("Held-out cells")
        page.table(
            ["cell", "batch", "measured tok/s", "predicted [95%]", "error", "inside"],
            [
                [
                    c.id,
                    c.batch,
                    f"{c.measured_user_tps:.2f}",
                    _tri_text(c.predicted_user_tps),
                    f"{c.ape * 100:.1f}%",
                    Cell("yes", "ok") if c.inside else Cell("no", "bad"),
                ]
                for c in v.cells
            ],
        )
    return page
