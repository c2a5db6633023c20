"""``speedbench analyze``: analyses of finished runs that need no engine.  ``vocab_coverage``: how much of the runs'
output tokens a draft vocabulary covers, per category and draft position, and the bound that puts on acceptance
(``analysis/vocab.py``, docs/model.md "Draft vocabulary").  The vocabulary is a file of ids, an EAGLE-3 d2t
mapping, or the top K ids by frequency in another run (its output ids) or a dataset (its prompts, tokenized)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speedbench.analysis import vocab as va
from speedbench.errors import InvalidInput
from speedbench.results.loader import load_run

VOCAB_SIZE = 49_152  # the target's vocabulary when neither the flag nor the tokenizer says (smollm2)


@dataclass(frozen=True)
class VocabCoverage:
    """Each vocabulary's coverage by category (``va.OVERALL`` too); the requests without output token ids (left
    out) of all; ``note``: a K asked for more ids than the top-K source ranks (empty otherwise)."""

    results: list[tuple[str, dict[str, va.Coverage]]]
    missing: int
    total: int
    note: str = ""


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


def vocab_coverage(
    run_dirs: list[str],
    *,
    vocab_file: str | None = None,
    d2t: str | None = None,
    top_k_from: str | None = None,
    top_k: str | None = None,
    fractions: str,
    vocab_size: int | None = None,
    tokenizer: str = "smollm2",
    k: int = 3,
) -> VocabCoverage:
    """The coverage of the runs' output tokens by one draft vocabulary (``vocab_file`` or ``d2t``), or by the top K
    of ``top_k_from`` for each K (``top_k``: a comma list; else ``fractions``, a comma list such as "1/16,1/2,1", of
    the vocabulary size)."""
    given = [x for x in (vocab_file, d2t, top_k_from) if x]
    if len(given) != 1:
        raise InvalidInput("give one draft vocabulary: --vocab FILE, --d2t FILE or --top-k-from RUN_DIR|DATASET")
    runs = [load_run(d) for d in run_dirs]
    records = [r for run in runs for r in run.records]
    note = ""
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
        counts, source, size = _counts(top_k_from, tokenizer)
        size = vocab_size or size or VOCAB_SIZE
        ks = (
            _ints("--top-k", top_k)
            if top_k
            else [max(1, round(size * _fraction(f.strip()))) for f in fractions.split(",") if f.strip()]
        )
        vocabs = [(f"top {kk:,} of {source}", va.top_k(counts, kk, size)) for kk in ks]
        if max(ks) > len(counts):
            note = (
                f"the source ranks {len(counts):,} distinct ids; a K above that adds ids it never saw, in id "
                "order (a bigger source ranks more)"
            )
    results = [(name, va.coverage(records, ids, k)) for name, ids in vocabs]
    return VocabCoverage(results, va.missing_ids(records), len(records), note)


def _counts(source: str, tokenizer: str) -> tuple[dict[int, int], str, int | None]:
    """Token-id frequencies of another run (its output ids) or of a dataset (its turns, tokenized)."""
    if (Path(source) / "manifest.json").is_file():
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
