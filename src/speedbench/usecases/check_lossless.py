"""``speedbench check-lossless``: the same prompts with SD off and on, outputs compared.

Two runs go into ``<out>/baseline`` and ``<out>/sd`` (ordinary run directories: report works on
them), first turns only (a later turn's prompt holds the model's own earlier reply, so one early
divergence would make every later turn differ).  The verdict goes to ``<out>/lossless.json``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from speedbench.analysis.lossless import TargetScorer, compare_outputs, compare_scores
from speedbench.atomic import atomic_write
from speedbench.config import RunConfig
from speedbench.data.sample import Sample
from speedbench.engines import registry
from speedbench.errors import InvalidInput
from speedbench.metrics.models import RunSummary
from speedbench.records import RequestRecord
from speedbench.usecases.run import run


def pair_configs(cfg: RunConfig, baseline_url: str | None) -> tuple[RunConfig, RunConfig]:
    """(baseline, sd) configs: the same everything, SD off in the baseline.  Attaching needs two
    servers (``baseline_url`` serves the target without SD); launching starts each in turn; an in-process
    engine runs the baseline with ``--sd none``."""
    e = cfg.engine
    if e.sd in (None, "none"):
        raise InvalidInput("check-lossless needs --sd METHOD (the run to check; the baseline runs with SD off)")
    out = Path(cfg.out or "runs/lossless")
    ds = cfg.dataset.model_copy(update={"max_turns": 1})
    if e.launch or registry.capabilities(e.kind).in_process:  # speedbench sets the engine's SD itself
        base_engine = e.model_copy(update={"sd": "none", "draft_model": None})
    else:
        if not baseline_url:
            raise InvalidInput(
                "attached to a server: pass --baseline-url (the same target with SD off), or use --launch to start both"
            )
        base_engine = e.model_copy(update={"base_url": baseline_url, "sd": "none", "metrics_url": None})
    base = cfg.model_copy(update={"engine": base_engine, "dataset": ds, "out": str(out / "baseline")})
    sd = cfg.model_copy(update={"dataset": ds, "out": str(out / "sd")})
    return base, sd


def run_one(cfg: RunConfig) -> tuple[RunSummary, list[RequestRecord], list[Sample]]:
    end = asyncio.run(run(cfg))
    return end.result.summary, end.result.records, end.started.samples


# The verdicts and the exit status of `speedbench check-lossless` for each (docs/engines.md).
LOSSLESS, NOT_LOSSLESS, INCONCLUSIVE = "lossless", "not_lossless", "inconclusive"
EXIT_STATUS = {LOSSLESS: 0, NOT_LOSSLESS: 1, INCONCLUSIVE: 3}


def deterministic_setting(base_cfg: RunConfig, cfg: RunConfig) -> str:
    """The engine was not deterministic without SD: run the baseline twice more at concurrency 1 (batch
    composition is the usual cause) and say whether that setting makes it deterministic."""
    if base_cfg.concurrency == 1:
        return "it is not deterministic at --concurrency 1 either: the engine cannot be checked this way"
    out = Path(cfg.out or "runs/lossless")
    one = base_cfg.model_copy(update={"concurrency": 1, "out": str(out / "control-c1-a")})
    _, first, _ = run_one(one)
    _, second, _ = run_one(one.model_copy(update={"out": str(out / "control-c1-b")}))
    again = compare_outputs(first, second)
    if again["identical_share"] == 1.0 and not again["errors"]:
        return (
            f"at --concurrency 1 it is deterministic ({again['identical']}/{again['pairs']} identical in two "
            "baseline runs): rerun check-lossless with --concurrency 1"
        )
    return (
        f"at --concurrency 1 it is not deterministic either ({again['identical']}/{again['pairs']} identical): the "
        "engine cannot be checked this way"
    )


def check(
    cfg: RunConfig, baseline_url: str | None = None, score_model: str | None = None, control: bool = False
) -> dict[str, Any]:
    """``control``: run the baseline a second time (``<out>/control``) to measure the engine's own
    run-to-run nondeterminism (batch composition, kernel choice), so SD mismatches can be told apart
    from it."""
    base_cfg, sd_cfg = pair_configs(cfg, baseline_url)
    base_summary, base_recs, samples = run_one(base_cfg)
    control_recs = None
    if control:
        ctl_cfg = base_cfg.model_copy(update={"out": str(Path(cfg.out or "runs/lossless") / "control")})
        _, control_recs, _ = run_one(ctl_cfg)
    sd_summary, sd_recs, _ = run_one(sd_cfg)
    result: dict[str, Any] = {
        "engine": cfg.engine.kind,
        "sd": cfg.engine.sd,
        "k": cfg.draft_length,
        "temperature": cfg.temperature,
        "baseline_dir": base_cfg.out,
        "sd_dir": sd_cfg.out,
        "sd_acceptance_length": sd_summary.overall.acceptance_length_token_weighted,
        "sd_acceptance_rate": sd_summary.overall.acceptance_rate,
        "outputs": compare_outputs(base_recs, sd_recs),
    }
    if control_recs is not None:
        result["control"] = compare_outputs(base_recs, control_recs)
    if cfg.temperature == 0:
        share = result["outputs"]["identical_share"]
        result["mode"] = "greedy: outputs must be identical"
        result["lossless"] = share == 1.0 and not result["outputs"]["errors"]
        ctl = result.get("control")
        if not result["lossless"] and ctl is not None and ctl["identical_share"] != 1.0:
            result["verdict"] = INCONCLUSIVE
            result["note"] = (
                f"inconclusive: the engine is not deterministic without SD either (control: "
                f"{ctl['identical']}/{ctl['pairs']} identical); " + deterministic_setting(base_cfg, cfg)
            )
    else:
        model = score_model or cfg.engine.model
        scorer = TargetScorer(model, cfg.temperature)
        messages = {s.question_id: [{"role": "user", "content": s.turns[0]}] for s in samples}

        def scores(recs: list[Any]) -> dict[str, dict[str, float]]:
            vals = {r.question_id: scorer.score(messages[r.question_id], r) for r in recs if r.ok and r.turn == 0}
            return {q: v for q, v in vals.items() if v is not None}

        result["mode"] = (
            f"sampling: tokens must look sampled from the target ({scorer.folder}, T={cfg.temperature}): "
            "surprise z within +-3, baseline as control"
        )
        sc = compare_scores(scores(base_recs), scores(sd_recs))
        result["scores"] = sc
        result["lossless"] = bool(sc["consistent"])
        if not sc["control_ok"]:
            result["verdict"] = INCONCLUSIVE
            result["note"] = (
                f"inconclusive: the baseline (SD off) fails the test too (z {sc['baseline_surprise_z']}); "
                "the scorer does not reproduce the server's sampling (top_p/top_k/min_p defaults? "
                "another model? pass --score-model)"
            )
    result.setdefault("verdict", LOSSLESS if result["lossless"] else NOT_LOSSLESS)
    out = Path(cfg.out or "runs/lossless")
    atomic_write(out / "lossless.json", json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    return result
