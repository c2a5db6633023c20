"""``speedbench report``: recompute summaries from run directories and print them."""

from __future__ import annotations

from typing import Annotated

import typer

from speedbench.cli.common import fail, one_line, user_errors


def register(app: typer.Typer) -> None:
    app.command()(report)


def report(
    run_dirs: Annotated[list[str], typer.Argument(help="one run directory, or two to compare (baseline first)")],
) -> None:
    """Recompute summaries from records.jsonl + manifest.json and print the tables."""
    from speedbench.report.console import comparison_table, make_console, print_summary
    from speedbench.results.rundir import RunDir
    from speedbench.usecases.run import finish

    console = make_console()
    if len(run_dirs) > 2:
        fail("report takes one run directory, or two to compare")
    summaries = []
    for d in run_dirs:
        try:
            summaries.append(finish(RunDir(d)))
        except user_errors() as e:
            fail(one_line(e))
    for d, s in zip(run_dirs, summaries, strict=True):
        console.print(f"[bold]{d}[/bold]")
        print_summary(s, console)
    if len(summaries) == 2:
        console.print(comparison_table(summaries[0], summaries[1], "A", "B"))
        console.print(
            f"A = {run_dirs[0]}, B = {run_dirs[1]}; speedup = mean user tok/s B / A "
            "(paired by category; confidence intervals come later)"
        )
