"""Draft-vocabulary coverage (``speedbench analyze vocab``, docs/model.md "Draft vocabulary"): how much of a run's
output a pruned draft vocabulary can propose at all, per category and per draft position, and the upper bound that
puts on acceptance and AL.

An EAGLE-style drafter often predicts over a subset of the target's vocabulary (e.g. the 32k most frequent target
tokens, or the ``d2t`` mapping an EAGLE-3 checkpoint ships).  A target token outside it can never be drafted, so it
can never be accepted.  From a run's output token ids (the target's own, one request at a time):

- **coverage**: the share of output tokens inside the vocabulary;
- **window coverage** w_i: the share of positions t of the output after which the next i tokens (t+1 .. t+i) are
  all inside it.  A draft started after t can have position i accepted only if all of them are, so w_i bounds the
  joint acceptance at position i (every position t counted as a possible step start: the bound of a drafter that
  may start anywhere);
- **AL bound** at k: 1 + Σ_{i<=k} w_i, the most tokens per drafted step any drafter limited to that vocabulary can
  average with k drafts (the bonus token counted).

The vocabulary to test is a set of ids: a file of ids, an EAGLE-3 ``d2t`` mapping (draft id d -> target id d +
d2t[d]), or the K most frequent ids of **another** run or dataset (``top_k``): never the run measured, whose own
frequencies would flatter the coverage.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedbench.errors import UserError
from speedbench.records import RequestRecord

OVERALL = "overall"


class VocabError(UserError, ValueError):
    """A vocabulary or a run that cannot be analysed (one line saying what to do)."""


def read_ids(path: str | Path) -> list[int]:
    """Token ids from a file: a JSON list, a ``.npy`` array, or text with one id per line (or separated by
    whitespace or commas)."""
    p = Path(path)
    if not p.is_file():
        raise VocabError(f"{p}: not found")
    try:
        if p.suffix == ".npy":
            return [int(x) for x in np.load(p).ravel()]
        text = p.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            return [int(x) for x in json.loads(text)]
        return [int(x) for x in text.replace(",", " ").split()]
    except (ValueError, OSError) as e:
        raise VocabError(
            f"{p}: not a list of token ids ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None


def d2t_vocab(offsets: Sequence[int]) -> set[int]:
    """EAGLE-3's draft-to-target mapping: draft id d stands for target id d + d2t[d]."""
    return {d + int(o) for d, o in enumerate(offsets)}


def top_k(counts: Mapping[int, int], k: int, vocab_size: int | None = None) -> set[int]:
    """The k most frequent ids (ties broken by the smaller id, so the set is deterministic).  When k is more than
    the ids ``counts`` saw and ``vocab_size`` is given, the rest are the unseen ids in id order (k = the vocabulary
    size is then the whole vocabulary)."""
    if k < 1:
        raise VocabError(f"top K must be >= 1, got {k}")
    out = {i for i, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:k]}
    if len(out) < k and vocab_size is not None:
        for i in range(vocab_size):
            if len(out) >= k:
                break
            out.add(i)
    return out


def count_ids(sequences: Iterable[Sequence[int]]) -> Counter[int]:
    c: Counter[int] = Counter()
    for s in sequences:
        c.update(s)
    return c


@dataclass(frozen=True)
class Coverage:
    """One group's (a category's, or overall) coverage of one vocabulary."""

    requests: int
    tokens: int
    coverage: float
    windows: tuple[float, ...]  # w_1 .. w_k

    def al_bound(self, k: int | None = None) -> float:
        return 1.0 + sum(self.windows[: len(self.windows) if k is None else k])


def _windows(ids: Sequence[int], vocab: set[int], k: int) -> tuple[np.ndarray, int]:
    """Per i in 1..k: how many start positions t (0 .. n-1, t = before the first token too) have tokens t+1..t+i
    all in the vocabulary, and the number of start positions with i tokens after them (per i)."""
    inside = np.fromiter((i in vocab for i in ids), dtype=bool, count=len(ids))
    n = inside.size
    hits = np.zeros(k)
    starts = np.zeros(k)
    # run[t] = how many consecutive in-vocab tokens begin at position t
    run = np.zeros(n + 1, dtype=int)
    for t in range(n - 1, -1, -1):
        run[t] = run[t + 1] + 1 if inside[t] else 0
    for i in range(1, k + 1):
        m = n - i + 1  # windows of i tokens
        if m <= 0:
            continue
        starts[i - 1] = m
        hits[i - 1] = int((run[:m] >= i).sum())
    return np.stack([hits, starts]), n


def coverage(records: Sequence[RequestRecord], vocab: set[int], k: int = 3) -> dict[str, Coverage]:
    """Per category and ``overall``: coverage and window coverage of the records' output token ids (requests
    without ids are left out; ``VocabError`` when none has them)."""
    if k < 1:
        raise VocabError(f"k must be >= 1, got {k}")
    with_ids = [r for r in records if r.ok and r.output_token_ids]
    if not with_ids:
        raise VocabError(
            "no request has output token ids: the engine does not return them (the reference engine and vLLM do; "
            "serve-mock, llama.cpp and attached OpenAI servers do not)"
        )
    groups: dict[str, list[RequestRecord]] = {OVERALL: with_ids}
    for r in with_ids:
        groups.setdefault(r.category, []).append(r)
    out = {}
    for name, rs in groups.items():
        acc = np.zeros((2, k))
        tokens = inside = 0
        for r in rs:
            ids = r.output_token_ids or []
            w, n = _windows(ids, vocab, k)
            acc += w
            tokens += n
            inside += sum(1 for i in ids if i in vocab)
        windows = tuple(float(h / s) if s else 0.0 for h, s in zip(acc[0], acc[1], strict=True))
        out[name] = Coverage(len(rs), tokens, inside / tokens if tokens else 0.0, windows)
    return out


def missing_ids(records: Sequence[RequestRecord]) -> int:
    """Successful requests without output token ids (left out of the coverage)."""
    return sum(1 for r in records if r.ok and not r.output_token_ids)
