"""``SWEEP_DIR/model.json``: the fitted speedup model of a sweep as ``speedbench model`` writes it (docs/model.md),
typed.  ``analysis.model_summary.model_summary`` makes its data, ``report/`` draws it (the model's tables and
page, the sweep page's model section).  Every number is rounded where it is made; ``Band`` = (point, lo, hi) of a
95% prediction interval; keys of ``tau``, ``k`` and the like are draft lengths (or batches) as strings, as JSON
has them.  The file is ``json.dumps(model_dump(), indent=2)``: validating the data and dumping it again gives the
same bytes (a key the model does not know is refused)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from speedbench.atomic import atomic_write

MODEL_FILE = "model.json"

Band = tuple[float, float, float]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CategoryAcceptance(_Part):
    """One category's acceptance at the largest k: conditional rate per position, tau(k) and tokens per decode
    step per k, the share of decode steps that drafted nothing."""

    requests: int
    drafted_steps: int
    rates: list[float]
    tau: dict[str, float]
    undrafted_share: float
    tokens_per_step: dict[str, float]


class Leviathan(_Part):
    """Leviathan's i.i.d. closed form (one alpha fitted to tau at the largest k) beside the per-position tau and
    the tau measured by the cells run at each k."""

    alpha: float
    tau: dict[str, float]
    per_position_tau: dict[str, float]
    measured_tau: dict[str, float]


class MeasuredStep(_Part):
    id: str
    k: int
    concurrency: int
    batch: float
    step_s: float
    predicted_step_s: float


class CostFit(_Part):
    """The step cost t(b, k): its form, coefficients (s) with standard errors, knee, residual spread, the cells
    fitted and their measured and fitted step times."""

    form: str
    coef: dict[str, float]
    stderr: dict[str, float]
    knee_tokens: float | None
    residual_rel: float
    cells: int
    x_range: tuple[float, float]
    measured: list[MeasuredStep]


class Predicted(_Part):
    user_tps: Band
    output_tps: Band
    speedup: Band


class PredictionRow(_Part):
    """One batch: the predictions per draft length (key "0" = SD off) and the best k with its speedup."""

    b: float
    k: dict[str, Predicted]
    best_k: int
    best_speedup: float


class SloCandidate(_Part):
    """One configuration against the SLO: per term met (True/False) or unknown (None)."""

    k: int
    concurrency: int
    batch: float
    user_tps: Band
    output_tps: Band
    measured_cell: str | None
    checks: dict[str, bool | None]
    meets: bool | None
    sure: bool


class SloAnswer(_Part):
    terms: list[str]
    answer: SloCandidate | None
    confirmed: bool
    next: list[SloCandidate]
    candidates: list[SloCandidate]
    note: str


class JudgedCell(_Part):
    """A cell's measured per-user decode tok/s against the model's prediction."""

    id: str
    k: int
    concurrency: int
    batch: float
    measured_user_tps: float
    predicted_user_tps: Band
    ape: float
    inside: bool


class Validation(_Part):
    """``--holdout``: the held-out cells (fitted without them) and the fitted ones."""

    holdout: str
    mape: float | None
    worst: str | None
    inside_interval: int
    cells: list[JudgedCell]
    fitted: list[JudgedCell]


class ModelFile(_Part):
    """The whole of model.json."""

    sweep: str
    sd: str
    dataset: str
    k_max: int
    cells: list[str]
    seed: int
    acceptance: dict[str, CategoryAcceptance]
    leviathan: Leviathan
    cost: CostFit
    predictions: list[PredictionRow]
    best_k_by_category: dict[str, dict[str, int]]
    sd_pays_until_batch: float | None
    slo: SloAnswer | None
    validation: Validation | None

    def text(self) -> str:
        """The file's text."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def write_model(sweep_dir: str | Path, model: ModelFile) -> Path:
    """SWEEP_DIR/model.json, written atomically; returns its path."""
    path = Path(sweep_dir) / MODEL_FILE
    atomic_write(path, model.text())
    return path


def read_model(sweep_dir: str | Path) -> ModelFile | None:
    """SWEEP_DIR/model.json when there is one (None: no model fitted)."""
    path = Path(sweep_dir) / MODEL_FILE
    return ModelFile.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None
