"""The throughput split: prompts of exactly N×1000 o200k_base tokens in three entropy tiers.

Modelled on SPEED-Bench's Throughput split (``nvidia/SPEED-Bench`` configs ``throughput_1k`` …
``throughput_32k``: 1,536 rows each, 512 per tier ``low_entropy`` / ``mixed`` / ``high_entropy``, the
tier in ``category``) and on the official prompt builder (NVIDIA Model-Optimizer
``examples/specdec_bench/specdec_bench/datasets/speed.py``, ``_pad_or_truncate_prompt``).  The
official rows are filled from HF datasets; here the text comes from :mod:`speedbench.data.builders.offline_text`.
docs/datasets.md says what is confirmed about the official split and what is our choice.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speedbench.data.builders import offline_text
from speedbench.data.builders.exact_length import MAX_FIX_ROUNDS, PAD, fit_body, pad_or_truncate
from speedbench.data.builders.tokens import Codec, TargetTokenizer, as_codec, o200k_base
from speedbench.data.sample import DatasetError, Sample
from speedbench.errors import InvalidInput

BUCKETS: dict[str, int] = {"1k": 1000, "2k": 2000, "8k": 8000, "16k": 16000, "32k": 32000}
TIERS: tuple[str, ...] = offline_text.TIERS
OFFICIAL_ROWS_PER_BUCKET = 1536
DEFAULT_COUNT_PER_TIER = OFFICIAL_ROWS_PER_BUCKET // len(TIERS)  # 512

Progress = Callable[[int, int, str], None]  # (done, total, label)


# --------------------------------------------------------------------------- prompt shapes per tier

LOW_TASKS = (
    "Below is a collection of {kind}, split into numbered parts that are given in shuffled order. "
    "Write all the parts out again in their correct original order, exactly as they are, without "
    "changing anything and without comments.\n\n",
    "Below is a collection of {kind}. Copy it out exactly as it is, from the first line to the last, "
    "without changing, adding or removing anything.\n\n",
)
LOW_KIND = {"unicode-table": "data tables", "server-logs": "server log files"}
MIXED_HEAD = (
    "Please answer the question at the end. Here is reference material, including examples of "
    "questions and answers in related areas:\n\n"
)
MIXED_FALLBACK_QUESTIONS = (
    "Explain, step by step, how the functions documented above could be combined to solve a small "
    "data-processing task of your choice, with example code.",
    "Summarize the reference material above and point out three details a newcomer is likely to get wrong.",
)
HIGH_HEAD = (
    "I want you to act as a writer. Below are long texts between START CONTENT and END CONTENT. "
    "Read them, then complete the writing task that follows them. Be creative and original; "
    "do not copy sentences from the texts.\n\n"
)
HIGH_FALLBACK_TASKS = (
    "Write an original short story inspired by the texts above, with at least two characters and dialogue.",
    "Write a personal essay that reflects on the ideas in the texts above, in a lively voice.",
)
MTBENCH_MIXED = {"math", "reasoning", "coding", "stem", "extraction"}
MTBENCH_HIGH = {"writing", "roleplay", "humanities"}


def _question(rng: random.Random, cats: set[str], fallback: Sequence[str], humaneval: bool) -> tuple[str, str]:
    """(question text, id): an MT-Bench first turn of the given categories, or a HumanEval problem,
    else a built-in question."""
    pool = [
        (q["turns"][0], f"mt_bench:{q['question_id']}")
        for q in offline_text.mtbench_questions()
        if q["category"] in cats
    ]
    if humaneval:
        pool += [
            (f"Complete the following Python function.\n\n{p['prompt']}", f"humaneval:{p['task_id']}")
            for p in offline_text.humaneval_problems()
        ]
    if not pool:
        k = rng.randrange(len(fallback))
        return fallback[k], f"builtin:{k}"
    return pool[rng.randrange(len(pool))]


def _shuffled_parts(text: str, rng: random.Random, parts: int = 4) -> str:
    lines = text.splitlines(keepends=True)
    step = max(1, -(-len(lines) // parts))
    chunks = ["".join(lines[i : i + step]) for i in range(0, len(lines), step)]
    order = list(range(len(chunks)))
    rng.shuffle(order)
    return "".join(f"Part {k + 1}:\n{chunks[j]}\n" for k, j in enumerate(order))


@dataclass
class Shape:
    head: str
    body: str
    tail: str
    extra_ids: list[str] = field(default_factory=list)


def _shape(tier: str, source: str, texts: list[str], rng: random.Random, budget_chars: int) -> Shape:
    """Instruction, material and closing request of one prompt (see docs/datasets.md)."""
    if tier == "low_entropy":
        kind = LOW_KIND.get(source, "source code files")
        task = rng.randrange(len(LOW_TASKS))
        body = "".join(texts)[:budget_chars]
        if task == 0:
            body = _shuffled_parts(body, rng)
        return Shape(LOW_TASKS[task].format(kind=kind), body, "")
    if tier == "mixed":
        q, qid = _question(rng, MTBENCH_MIXED, MIXED_FALLBACK_QUESTIONS, humaneval=True)
        return Shape(MIXED_HEAD, "".join(texts), f"\n\nQuestion: {q}\n\nAnswer:", [qid])
    writing, tid = _question(rng, MTBENCH_HIGH, HIGH_FALLBACK_TASKS, humaneval=False)
    body = "\n\n".join(f"START CONTENT {k + 1}\n\n{t.strip()}\n\nEND CONTENT" for k, t in enumerate(texts))
    return Shape(HIGH_HEAD, body, f"\n\n(End of the texts.)\n\nWriting task: {writing}\n", [tid])


# --------------------------------------------------------------------------- build


@dataclass
class RowMeta:
    """What a throughput row is made of; written beside the samples (``*.meta.jsonl``)."""

    question_id: str
    bucket: str
    target_tokens: int
    tier: str
    source: str
    origin: str
    package: str
    documents: list[str]
    o200k_tokens: int
    padding_tokens: int
    target_isl: int | None = None
    repadded: bool = False


class ThroughputSet(list[Sample]):
    """The built samples (a ``list[Sample]``) plus ``meta`` (question_id → :class:`RowMeta`),
    ``notes`` (skipped sources), ``timings`` (seconds per bucket) and the target tokenizer's name."""

    def __init__(self, samples: list[Sample] | None = None) -> None:
        super().__init__(samples or [])
        self.meta: dict[str, RowMeta] = {}
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self.target: str | None = None
        self.seed: int | None = None


def _chars_for(tokens: int) -> int:
    return tokens * 6 + 2000  # o200k averages 3–4.5 characters a token in these sources


def _row(
    bucket: str, n: int, tier: str, i: int, src: offline_text.Source, seed: int, enc: Codec, sample_id: str
) -> tuple[Sample, RowMeta]:
    rng = random.Random(f"speedbench-throughput/{seed}/{bucket}/{tier}/{i}")
    want = _chars_for(n)
    for _ in range(4):
        drawn = src.draw(rng, want)
        shape = _shape(tier, src.name, [t for _, t in drawn], rng, want)
        text, padding = fit_body(shape.head, shape.body, shape.tail, n, enc)
        if padding == 0 or sum(len(t) for _, t in drawn) < want:
            break  # exact from material, or the pool holds no more text
        want *= 2
    docs = [d.id for d, _ in drawn] + shape.extra_ids
    src_id = ";".join(docs[:8]) + (f";+{len(docs) - 8} more" if len(docs) > 8 else "")
    sample = Sample(
        question_id=sample_id,
        category=tier,
        sub_category=src.name,
        turns=(text,),
        source=f"speedbench-offline/{src.name}",
        src_id=src_id,
        difficulty=None,
        multiturn=False,
    )
    meta = RowMeta(
        sample_id, bucket, n, tier, src.name, src.origin, offline_text.package_version(src.name), docs, n, padding
    )  # fit_body returns exactly n tokens (re-encoded and checked)
    return sample, meta


def _bucket_tokens(bucket: str) -> int:
    if bucket not in BUCKETS:
        raise DatasetError("throughput", None, "bucket", f"unknown bucket {bucket!r}; one of {', '.join(BUCKETS)}")
    return BUCKETS[bucket]


def build_throughput(
    buckets: Sequence[str] = tuple(BUCKETS),
    tiers: Sequence[str] = TIERS,
    count_per_tier: int = DEFAULT_COUNT_PER_TIER,
    *,
    seed: int = 0,
    sources: Sequence[str] | None = None,
    target_tokenizer: Any = None,
    repad_to_target: bool = False,
    progress: Progress | None = None,
) -> ThroughputSet:
    """Throughput prompts, ``count_per_tier`` per bucket and tier, each exactly ``BUCKETS[bucket]``
    o200k_base tokens (default 512 per tier: the official 1,536 per bucket).

    Row ``i`` of a bucket and tier is drawn with ``random.Random(f"…/{seed}/{bucket}/{tier}/{i}")``,
    so it does not depend on the count or on other buckets; the tier's sources (``sources`` limits
    them by name, see :func:`offline_text.source_names`) take turns.  With ``target_tokenizer`` (a
    :class:`TargetTokenizer`, a HF folder or ``smollm2``) each row's templated ISL is recorded in
    ``meta``; with ``repad_to_target`` the prompt is re-cut or re-padded so that ISL equals the
    bucket (its o200k count then differs; ``meta`` records both).
    """
    if count_per_tier < 1:
        raise InvalidInput(f"count_per_tier must be >= 1, got {count_per_tier}")
    if repad_to_target and target_tokenizer is None:
        raise InvalidInput("repad_to_target needs a target tokenizer")
    enc = as_codec(o200k_base())
    target = (
        target_tokenizer
        if isinstance(target_tokenizer, TargetTokenizer) or target_tokenizer is None
        else TargetTokenizer.load(target_tokenizer)
    )
    out = ThroughputSet()
    out.seed, out.target = seed, (target.name if target else None)
    plan = [(b, _bucket_tokens(b)) for b in buckets]
    tier_srcs = {}
    for tier in tiers:
        srcs, notes = offline_text.tier_sources(tier, list(sources) if sources is not None else None)
        tier_srcs[tier] = srcs
        out.notes += notes
    total, done = len(plan) * len(tiers) * count_per_tier, 0
    for bucket, n in plan:
        t0 = time.perf_counter()
        for tier in tiers:
            srcs = tier_srcs[tier]
            for i in range(count_per_tier):
                qid = f"throughput_{bucket}-{tier}-{i:04d}"
                sample, meta = _row(bucket, n, tier, i, srcs[i % len(srcs)], seed, enc, qid)
                if target is not None:
                    sample, meta = _apply_target(sample, meta, target, enc, repad_to_target)
                out.append(sample)
                out.meta[qid] = meta
                done += 1
                if progress:
                    progress(done, total, f"{bucket} {tier}")
        out.timings[bucket] = time.perf_counter() - t0
    return out


def _apply_target(
    sample: Sample, meta: RowMeta, target: TargetTokenizer, enc: Codec, repad: bool
) -> tuple[Sample, RowMeta]:
    prompt = sample.turns[0]
    if repad:
        prompt = repad_for_target(prompt, meta.target_tokens, target)
        sample = dataclasses.replace(sample, turns=(prompt,))
        meta.o200k_tokens = len(enc.encode(prompt))
        meta.repadded = True
    meta.target_isl = target.isl(prompt)
    return sample, meta


def repad_for_target(prompt: str, isl: int, target: TargetTokenizer, pad: str = PAD) -> str:
    """``prompt`` cut or padded (official padding) so that its templated ISL under ``target`` is
    exactly ``isl``."""
    content = isl - target.template_overhead
    if content < 1:
        raise InvalidInput(f"the chat template alone takes {target.template_overhead} tokens, more than {isl}")
    text = prompt
    for _ in range(MAX_FIX_ROUNDS):
        text = pad_or_truncate(prompt, content, target, pad)
        got = target.isl(text)
        if got == isl:
            return text
        content += isl - got
    raise InvalidInput(f"could not fit the prompt to an ISL of {isl} under {target.name}")


# --------------------------------------------------------------------------- report and writing


def throughput_report(build: ThroughputSet) -> list[dict[str, Any]]:
    """Per bucket × tier: count, o200k length (min/max, all exact?), padded rows, target ISL
    min/mean/max, and ``exact``: every row holds the bucket's length under the counter that sized it
    (``sized_by``: o200k_base, or the target's ISL for repadded rows)."""
    groups: dict[tuple[str, str], list[RowMeta]] = {}
    for m in build.meta.values():
        groups.setdefault((m.bucket, m.tier), []).append(m)
    rows = []
    for (bucket, tier), ms in sorted(groups.items(), key=lambda kv: (BUCKETS[kv[0][0]], TIERS.index(kv[0][1]))):
        lens = [m.o200k_tokens for m in ms]
        isls = [m.target_isl for m in ms if m.target_isl is not None]
        repadded = all(m.repadded for m in ms)
        sized = isls if repadded else lens
        rows.append(
            {
                "bucket": bucket,
                "tier": tier,
                "count": len(ms),
                "target_tokens": BUCKETS[bucket],
                "o200k_min": min(lens),
                "o200k_max": max(lens),
                "o200k_exact": all(x == BUCKETS[bucket] for x in lens),
                "padded_rows": sum(1 for m in ms if m.padding_tokens > 0),
                "target_isl_min": min(isls) if isls else None,
                "target_isl_mean": round(statistics.fmean(isls), 1) if isls else None,
                "target_isl_max": max(isls) if isls else None,
                "sized_by": (build.target or "target") if repadded else "o200k_base",
                "exact": len(sized) == len(ms) and all(x == BUCKETS[bucket] for x in sized),
                "seconds": round(build.timings.get(bucket, 0.0), 2),
            }
        )
    return rows


REPORT_COLUMNS = ("bucket", "tier", "prompts", "o200k min..max", "exact", "padded", "ISL min/mean/max")


def report_cells(r: dict[str, Any]) -> list[str]:
    """One :func:`throughput_report` row as the cells of :data:`REPORT_COLUMNS`.  "exact": yes when every
    row has the bucket's length under the counter that sized it ("(by ISL)": the target's templated ISL)."""
    isl = "—" if r["target_isl_min"] is None else f"{r['target_isl_min']}/{r['target_isl_mean']}/{r['target_isl_max']}"
    return [
        r["bucket"],
        r["tier"],
        str(r["count"]),
        f"{r['o200k_min']}..{r['o200k_max']}",
        ("yes" if r["exact"] else "NO") + ("" if r["sized_by"] == "o200k_base" else " (by ISL)"),
        str(r["padded_rows"]),
        isl,
    ]


def format_report(rows: list[dict[str, Any]], target: str | None = None) -> str:
    """The report as a plain-text table."""
    head = [*REPORT_COLUMNS[:-1], f"ISL {target or 'target'} min/mean/max"]
    lines = [report_cells(r) for r in rows]
    widths = [max(len(h), *(len(x[k]) for x in lines)) if lines else len(h) for k, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), *(fmt.format(*x) for x in lines)])


def write_throughput(build: ThroughputSet, dest: str | Path) -> Path:
    """Samples to ``dest`` (parquet or jsonl, the eight official fields) and the per-row metadata
    to ``<dest stem>.meta.jsonl`` beside it; both written atomically."""
    from speedbench.data.builders.writers import write_jsonl, write_samples

    dest = Path(dest)
    write_samples(list(build), dest)
    meta_path = dest.with_name(dest.stem + ".meta.jsonl")
    write_jsonl((asdict(build.meta[s.question_id]) for s in build), meta_path)
    return meta_path
