"""``speedbench model SWEEP_DIR``: fit the speedup model of a sweep (analysis/speedup_model.py, docs/model.md),
print what it predicts, write SWEEP_DIR/model.json and model.html (``usecases/report.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speedbench.cli.common import fail, one_line, print_page, user_errors
from speedbench.errors import InvalidInput


def register(app: typer.Typer) -> None:
    app.command()(model)


def model(
    sweep_dir: Annotated[str, typer.Argument(help="a sweep directory (holding sweep.json)")],
    sd: Annotated[
        Optional[str], typer.Option(help="the SD method to model (needed when the sweep has several)")
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option(help="the dataset to model (needed when the sweep has several)")
    ] = None,
    holdout: Annotated[
        Optional[str],
        typer.Option(
            help="cells to leave out of the fit and predict: c=N, c>=N, k=N, k>N (comma-separated: any) or cell ids"
        ),
    ] = None,
    batch: Annotated[
        Optional[str],
        typer.Option(help="batch sizes to predict, comma list (default: the measured concurrencies, x2 and x4)"),
    ] = None,
    knee: Annotated[
        str, typer.Option(help="auto: a knee in the cost only when it fits better (BIC); on; off")
    ] = "auto",
    per_request: Annotated[
        str, typer.Option(help="auto: a per-request term in the cost only when it predicts better; on; off")
    ] = "auto",
    slo: Annotated[
        Optional[str],
        typer.Option(
            help="service-level objective, e.g. 'user_tps>=30,ttft_p99<=2s': the configuration with the highest "
            "output tok/s that meets it, and the cells to measure next"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the prediction intervals' draws")] = 0,
) -> None:
    """Fit acceptance (per-position rates per category) and step cost (per batch really held and draft length)
    from a sweep's cells; print the predicted speedup per batch x k with intervals, the best k per batch and
    category, where SD stops paying, and with --holdout the error on cells left out of the fit."""
    from speedbench.report.console import make_console
    from speedbench.report.model import print_model
    from speedbench.usecases import report as uc

    knees = {"auto": None, "on": True, "off": False}
    try:
        if knee not in knees:
            raise InvalidInput(f"--knee {knee!r}: expected auto, on or off")
        if per_request not in knees:
            raise InvalidInput(f"--per-request {per_request!r}: expected auto, on or off")
        batches = None
        if batch is not None:
            try:
                batches = [float(x) for x in batch.split(",") if x.strip()]
            except ValueError:
                raise InvalidInput(f"--batch {batch!r}: expected numbers separated by commas") from None
            if not batches or any(b <= 0 for b in batches):
                raise InvalidInput(f"--batch {batch!r}: expected positive numbers")
        fitted, out = uc.fit_model(sweep_dir, sd, dataset, holdout, batches, knees[knee], knees[per_request], slo, seed)
    except user_errors() as e:
        fail(one_line(e))
        return
    console = make_console()
    print_model(fitted, console, str(out))
    page = Path(sweep_dir) / uc.MODEL_PAGE
    print_page(lambda: uc.write_model_page(fitted, sweep_dir), str(page), console, strict=False)
