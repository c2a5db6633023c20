"""The ``speedbench`` command line (typer): one module per command group; heavy modules are imported
inside commands so ``--help`` stays instant.  The use cases the commands call live in usecases/.  Errors
(cli/common.py ``Commands``): a ``UserError`` is ``error: <one line>`` and exit 2; anything else escaping a command
is a bug, printed with its traceback as an internal error (exit 1)."""

from __future__ import annotations

import typer

from speedbench.cli import engines as _engines
from speedbench.cli import model as _model
from speedbench.cli import report as _report
from speedbench.cli import run as _run
from speedbench.cli import sweep as _sweep
from speedbench.cli.analyze import analyze_app
from speedbench.cli.common import Commands
from speedbench.cli.data import data_app

app = typer.Typer(
    cls=Commands,  # a UserError is one line (exit 2); anything else a bug with its traceback (exit 1)
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="Benchmark speculative decoding in LLM serving engines (SPEED-Bench and beyond).",
)
_run.register(app)
_sweep.register(app)
_report.register(app)
_model.register(app)
_engines.register(app)
app.add_typer(data_app, name="data")
app.add_typer(analyze_app, name="analyze")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
