"""``speedbench analyze``: analyses of finished runs that need no engine.  ``vocab``: draft-vocabulary coverage
(analysis/vocab.py, docs/model.md "Draft vocabulary")."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from speedbench.cli.common import fail, one_line, user_errors
from speedbench.errors import InvalidInput

analyze_app = typer.Typer(add_completion=False, help="Analyses of finished runs (no engine needed).")

FRACTIONS = "1/16,1/8,1/4,1/2,1"


def _fraction(text: str) -> float:
    num, sep, den = text.partition("/")
    try:
        value = float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError) as e:
        raise InvalidInput(f"--fractions {text!r}: {e}") from None
    if not 0 < value <= 1:
        raise InvalidInput(f"--fractions {text!r}: each must be in (0, 1]")
    return value


def _ints(flag: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInput(f"{flag} {text!r}: expected integers separated by commas") from None


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
    from pathlib import Path

    from speedbench.analysis import vocab as va
    from speedbench.report.console import make_console
    from speedbench.results.loader import load_run

    console = make_console()
    errors: tuple[type[BaseException], ...] = (*user_errors(), OSError)
    try:
        given = [x for x in (vocab_file, d2t, top_k_from) if x]
        if len(given) != 1:
            raise InvalidInput("give one draft vocabulary: --vocab FILE, --d2t FILE or --top-k-from RUN_DIR|DATASET")
        runs = [load_run(d) for d in run_dirs]
        records = [r for run in runs for r in run.records]
        vocabs: list[tuple[str, set[int]]] = []
        source_note = ""
        if vocab_file:
            vocabs = [(f"{vocab_file}", set(va.read_ids(vocab_file)))]
        elif d2t:
            ids = va.d2t_vocab(va.read_ids(d2t))
            vocabs = [(f"d2t {d2t} ({len(ids):,} ids)", ids)]
        else:
            assert top_k_from is not None
            measured = {str(Path(d).resolve()) for d in run_dirs}
            if str(Path(top_k_from).resolve()) in measured:
                raise InvalidInput(
                    f"--top-k-from {top_k_from}: that is a run being measured; its own frequencies would flatter the "
                    "coverage (take another run or a dataset)"
                )
            counts, source_note, size = _counts(top_k_from, tokenizer)
            size = vocab_size or size or 49_152
            ks = (
                _ints("--top-k", top_k)
                if top_k
                else [max(1, round(size * _fraction(f.strip()))) for f in fractions.split(",") if f.strip()]
            )
            vocabs = [(f"top {kk:,} of {source_note}", va.top_k(counts, kk, size)) for kk in ks]
            if max(ks) > len(counts):
                source_note = (
                    f"the source ranks {len(counts):,} distinct ids; a K above that adds ids it never saw, in id "
                    "order (a bigger source ranks more)"
                )
        results = [(name, va.coverage(records, ids, k)) for name, ids in vocabs]
    except errors as e:
        fail(one_line(e))
        return
    _print(console, results, k, va.missing_ids(records), len(records))
    if source_note and not vocab_file and not d2t and "distinct ids" in source_note:
        console.print(source_note, soft_wrap=True)


def _counts(source: str, tokenizer: str) -> tuple[dict[int, int], str, int | None]:
    """Token-id frequencies of another run (its output ids) or of a dataset (its turns, tokenized)."""
    from pathlib import Path

    from speedbench.analysis import vocab as va

    if (Path(source) / "manifest.json").is_file():
        from speedbench.results.loader import load_run

        run = load_run(source)
        seqs = [r.output_token_ids for r in run.records if r.ok and r.output_token_ids]
        if not seqs:
            raise va.VocabError(f"--top-k-from {source}: its requests have no output token ids")
        counts = va.count_ids(seqs)
        return dict(counts), f"{source} (output ids, {sum(counts.values()):,} tokens)", None
    from speedbench.data.builders.tokens import TargetTokenizer
    from speedbench.data.readers import load_dataset

    tok = TargetTokenizer.load(tokenizer)
    samples = load_dataset(source)
    counts = va.count_ids(tok.encode(t) for s in samples for t in s.turns)
    size = getattr(getattr(tok, "tokenizer", None), "vocab_size", None)
    return dict(counts), f"{source} ({tokenizer} tokens of its prompts, {sum(counts.values()):,})", size


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
