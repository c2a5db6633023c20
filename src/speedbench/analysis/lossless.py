"""Is an engine's speculative decoding lossless?  Compare a run with SD off against one with SD on.

Greedy (temperature 0): the outputs must be identical.  ``compare_outputs`` pairs the records by
(question_id, turn) and reports the share of identical outputs and, for each mismatch, the first
diverging position (in token ids when both runs have them, else in characters).

Sampling (temperature > 0): outputs differ by chance, so compare distributions instead.  Each
output is scored under the *target* model (``TargetScorer``: mean log-probability per token at the
run's temperature, computed in-process with transformers); lossless SD leaves the distribution of
those scores unchanged.  ``compare_scores`` pairs the runs by prompt and gives the paired z of the
per-prompt differences (|z| > 3 -> not lossless).  Broken sampling SD (vLLM-CPU at temperature > 0) produces tokens the
target finds unlikely: a large negative z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from speedbench.prompts import render_completion_prompt
from speedbench.records import RequestRecord

Z_LIMIT = 3.0


def _key(r: RequestRecord) -> tuple[str, int]:
    return (r.question_id, r.turn)


def first_divergence(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """Index of the first differing element (len of the shorter one when one is a prefix); None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_outputs(base: Sequence[RequestRecord], sd: Sequence[RequestRecord]) -> dict[str, Any]:
    by_key = {_key(r): r for r in base}
    pairs, mismatches, errors = 0, [], []
    identical = 0
    for r in sd:
        b = by_key.get(_key(r))
        if b is None:
            continue
        if not (b.ok and r.ok):
            errors.append(
                {"question_id": r.question_id, "turn": r.turn, "baseline_error": b.error, "sd_error": r.error}
            )
            continue
        pairs += 1
        x: Sequence[int] | str
        y: Sequence[int] | str
        if b.output_token_ids is not None and r.output_token_ids is not None:
            x, y, unit = b.output_token_ids, r.output_token_ids, "token"
        else:
            x, y, unit = b.output_text, r.output_text, "char"
        pos = first_divergence(x, y)
        if pos is None:
            identical += 1
            continue
        ctx = 40 if unit == "char" else 8
        mismatches.append(
            {
                "question_id": r.question_id,
                "category": r.category,
                "turn": r.turn,
                "unit": unit,
                "first_divergence": pos,
                "baseline_len": len(x),
                "sd_len": len(y),
                "baseline_at": _excerpt(x, pos, ctx),
                "sd_at": _excerpt(y, pos, ctx),
            }
        )
    return {
        "pairs": pairs,
        "identical": identical,
        "identical_share": identical / pairs if pairs else None,
        "mismatches": sorted(mismatches, key=lambda m: (m["question_id"], m["turn"])),
        "errors": errors,
    }


def _excerpt(seq: Sequence[Any], pos: int, n: int) -> Any:
    part = seq[pos : pos + n]
    return part if isinstance(part, str) else list(part)


def welch_z(a: Sequence[float], b: Sequence[float]) -> float | None:
    """(mean b - mean a) / sqrt(var a/na + var b/nb); None with fewer than 2 values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se = math.sqrt(va / len(a) + vb / len(b))
    if se == 0:
        return 0.0 if ma == mb else math.copysign(math.inf, mb - ma)
    return (mb - ma) / se


def paired_z(base: dict[Any, float], sd: dict[Any, float]) -> tuple[float | None, int]:
    """Paired z for prompts scored in both runs: mean(sd - base) / (sd(diff) / sqrt(n)).  Pairing by
    prompt removes the prompt-to-prompt spread (a code prompt scores higher than a poem) that
    swamps an unpaired test at small n."""
    keys = sorted(set(base) & set(sd), key=str)
    diffs = [sd[q] - base[q] for q in keys]
    if len(diffs) < 2:
        return None, len(diffs)
    m = sum(diffs) / len(diffs)
    var = sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1)
    if var == 0:
        return (0.0 if m == 0 else math.copysign(math.inf, m)), len(diffs)
    return m / math.sqrt(var / len(diffs)), len(diffs)


def compare_scores(base: dict[Any, dict[str, float]], sd: dict[Any, dict[str, float]]) -> dict[str, Any]:
    """Scores keyed by prompt.  Verdict: the SD run's surprise z within +-Z_LIMIT, with the baseline's
    as the control (a baseline outside the limit means the scorer does not reproduce the server's
    sampling -- other top_p/top_k, another model -- and the test is inconclusive).  The paired z of
    per-prompt mean log-probabilities is shown beside it."""
    zb, zs = surprise_z(list(base.values())), surprise_z(list(sd.values()))
    pz, n = paired_z({q: v["mean_logprob"] for q, v in base.items()}, {q: v["mean_logprob"] for q, v in sd.items()})

    def mean(v: list[float]) -> float | None:
        return sum(v) / len(v) if v else None

    control_ok = zb is not None and abs(zb) <= Z_LIMIT
    return {
        "baseline_mean_logprob": mean([v["mean_logprob"] for v in base.values()]),
        "sd_mean_logprob": mean([v["mean_logprob"] for v in sd.values()]),
        "n_baseline": len(base),
        "n_sd": len(sd),
        "tokens_baseline": sum(v["tokens"] for v in base.values()),
        "tokens_sd": sum(v["tokens"] for v in sd.values()),
        "baseline_surprise_z": zb,
        "sd_surprise_z": zs,
        "n_paired": n,
        "paired_z": pz,
        "z_limit": Z_LIMIT,
        "control_ok": control_ok,
        "consistent": None if zs is None or not control_ok else abs(zs) <= Z_LIMIT,
    }


class TargetScorer:
    """Mean log-probability per output token under the target model, at temperature T
    (log softmax(logits / T)); prompts are rendered with the tokenizer's chat template, as the
    servers do.  Needs the ``hf`` extra."""

    def __init__(self, model: str | None, temperature: float, device: str = "cpu") -> None:
        from speedbench import models

        self.model, self.tokenizer, self.folder = models.load(model, "float32", device)
        self.temperature = temperature if temperature > 0 else 1.0
        self.device = device

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(x) for x in ids]
        return [int(x) for x in tok(render_completion_prompt(messages))["input_ids"]]

    def score(self, messages: list[dict[str, str]], rec: RequestRecord) -> dict[str, float] | None:
        """Per-output token figures under the target at temperature T: the mean log-probability, and the
        summed *surprise* log p(x_t) + H_t with its variance sum Var_t(log p).  For tokens sampled from
        the target, each surprise has mean 0 given its prefix (a martingale difference), so
        z = sum(surprise) / sqrt(sum(variance)) is ~N(0, 1): a test that needs no second run."""
        import torch

        out = rec.output_token_ids
        if out is None:
            out = [int(x) for x in self.tokenizer(rec.output_text, add_special_tokens=False)["input_ids"]]
        if not out:
            return None
        prompt = self.prompt_ids(messages)
        ids = torch.tensor([prompt + list(out)], device=self.device)
        with torch.no_grad():
            logits = self.model(ids).logits[0, len(prompt) - 1 : -1].double() / self.temperature
        logp = torch.log_softmax(logits, dim=-1)
        p = logp.exp()
        entropy = -(p * logp).sum(-1)
        second = (p * logp * logp).sum(-1)
        picked = logp.gather(1, torch.tensor(out, device=self.device)[:, None])[:, 0]
        return {
            "mean_logprob": float(picked.mean()),
            "surprise": float((picked + entropy).sum()),
            "variance": float((second - entropy**2).sum()),
            "tokens": len(out),
        }


def surprise_z(scores: Sequence[dict[str, float]]) -> float | None:
    """Pooled z = sum(surprise) / sqrt(sum(variance)) over a run's outputs (see TargetScorer.score)."""
    var = sum(s["variance"] for s in scores)
    if var <= 0:
        return None
    return sum(s["surprise"] for s in scores) / math.sqrt(var)
