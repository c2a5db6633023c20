"""``speedbench analyze``: analyses of finished runs that need no engine.  ``vocab``: draft-vocabulary coverage
(usecases/analyze.py, analysis/vocab.py, docs/model.md "Draft vocabulary"); this module parses and prints."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from speedbench.cli.common import fail, one_line, user_errors

analyze_app = typer.Typer(add_completion=False, help="Analyses of finished runs (no engine needed).")

FRACTIONS = "1/16,1/8,1/4,1/2,1"


@analyze_app.command("vocab")
def vocab(
    run_dirs: Annotated[list[str], typer.Argument(help="the run directories measured (their output token ids)")],
    vocab_file: Annotated[
        Optional[str], typer.Option("--vocab", help="a file of draft-vocabulary token ids (.json list, .npy, text)")
    ] = None,
    d2t: Annotated[
        Optional[str], typer.Option(help="an EAGLE-3 d2t mapping (.npy, .json): draft id d = target id d + d2t[d]")
    ] = None,
    top_k_from: Annotated[
        Optional[str],
        typer.Option(
            help="the top K ids by frequency in another run directory (its output ids) or dataset (its prompts, "
            "tokenized with --tokenizer): never the run measured"
        ),
    ] = None,
    top_k: Annotated[
        Optional[str], typer.Option(help="K values, comma list (default: --fractions of --vocab-size)")
    ] = None,
    fractions: Annotated[str, typer.Option(help="K as fractions of the target vocabulary")] = FRACTIONS,
    vocab_size: Annotated[
        Optional[int], typer.Option(help="the target's vocabulary size (default: the tokenizer's, else 49,152)")
    ] = None,
    tokenizer: Annotated[
        str, typer.Option(help="for a dataset in --top-k-from: a HF tokenizer folder or smollm2")
    ] = "smollm2",
    k: Annotated[int, typer.Option("-k", "--draft-length", min=1, help="draft positions to bound")] = 3,
) -> None:
    """Coverage of the runs' output tokens by a draft vocabulary, per category and draft position, and the upper
    bound it puts on acceptance and AL; with --top-k-from, the coverage curve over vocabulary sizes."""
    from speedbench.report.console import make_console
    from speedbench.usecases.analyze import vocab_coverage

    console = make_console()
    errors: tuple[type[BaseException], ...] = (*user_errors(), OSError)
    try:
        found = vocab_coverage(
            run_dirs, vocab_file=vocab_file, d2t=d2t, top_k_from=top_k_from, top_k=top_k, fractions=fractions,
            vocab_size=vocab_size, tokenizer=tokenizer, k=k,
        )  # fmt: skip
    except errors as e:
        fail(one_line(e))
        return
    _print(console, found.results, k, found.missing, found.total)
    if found.note:
        console.print(found.note, soft_wrap=True)


def _print(console: Any, results: list[tuple[str, dict[str, Any]]], k: int, missing: int, total: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    from speedbench.analysis.vocab import OVERALL

    for name, cov in results:
        t = Table(title=escape(f"Draft-vocabulary coverage: {name}"))
        for col in ("category", "requests", "output tokens", "coverage", *(f"w{i}" for i in range(1, k + 1))):
            t.add_column(col, justify="left" if col == "category" else "right")
        t.add_column(f"AL bound (k {k})", justify="right")
        for cat in [OVERALL, *sorted(c for c in cov if c != OVERALL)]:
            c = cov[cat]
            t.add_row(
                escape(cat),
                str(c.requests),
                f"{c.tokens:,}",
                f"{c.coverage:.1%}",
                *(f"{w:.1%}" for w in c.windows),
                f"{c.al_bound():.2f}",
            )
        console.print(t)
    if len(results) > 1:
        cats = [OVERALL, *sorted(c for c in results[0][1] if c != OVERALL)]
        t = Table(title=f"Coverage curve: share of output tokens inside the top-K vocabulary (AL bound at k {k})")
        t.add_column("category")
        for name, _ in results:
            t.add_column(escape(name.split(" of ")[0]), justify="right")
        for cat in cats:
            t.add_row(escape(cat), *(f"{cov[cat].coverage:.1%} ({cov[cat].al_bound():.2f})" for _, cov in results))
        console.print(t)
    console.print(
        escape(
            "coverage = output tokens inside the draft vocabulary; w_i = share of positions after which the next i "
            "tokens are all inside it (an upper bound on joint acceptance at draft position i); AL bound = 1 + Σ w_i "
            "(tokens per drafted step at best, bonus token counted). docs/model.md."
            + (f" {missing} of {total} requests have no output token ids and are left out." if missing else "")
        ),
        soft_wrap=True,
    )
