"""Random-token prompts of an exact length, the way vLLM's ``RandomDataset`` makes them.

vLLM (``vllm/benchmarks/datasets.py`` ``RandomDataset`` with ``gen_prompt_decode_to_target_len`` in
``vllm/benchmarks/dataset_utils.py``): per request draw an offset with ``numpy.random.default_rng(seed)``,
take ``isl`` consecutive ids from the non-special vocabulary starting at ``offset + index``
(wrapping), decode them to text, re-encode, and while the length is off either append ids drawn
from the rng or cut, then decode again.  vLLM gives up after 10 rounds and logs the mismatch; here
the loop keeps going (bounded) and raises if it cannot reach the length, so every prompt re-encodes
to exactly ``isl`` tokens.

SPEED-Bench uses such inputs only as the foil: the paper reports that random-token inputs
overestimate speculative-decoding throughput by about 23% on average; they are here to reproduce
that comparison, not as a workload.
"""

from __future__ import annotations

from typing import Any

from speedbench.data.builders.tokens import Codec, load_tokenizer
from speedbench.data.sample import Sample
from speedbench.errors import InvalidInput

MAX_ROUNDS = 64


def _vocab_ids(codec: Codec) -> list[int]:
    ids = getattr(codec, "vocab_ids", None)
    if ids is None:
        raise TypeError(f"tokenizer {codec.name}: cannot list its vocabulary")
    return list(ids())


def random_token_prompt(codec: Codec, allowed: Any, isl: int, offset: int, index: int, rng: Any) -> str:
    """One prompt: ``isl`` consecutive allowed ids from ``offset + index``, decoded, then
    re-encoded and corrected until the text is exactly ``isl`` tokens of ``codec``."""
    import numpy as np

    seq = allowed[(offset + index + np.arange(isl)) % len(allowed)].tolist()
    for _ in range(MAX_ROUNDS):
        prompt = codec.decode(seq)
        seq = codec.encode(prompt)
        if len(seq) == isl:
            return prompt
        if len(seq) < isl:
            seq = seq + allowed[rng.integers(0, len(allowed), size=isl - len(seq))].tolist()
        else:
            seq = seq[:isl]
    raise InvalidInput(
        f"random-token prompt did not settle at {isl} tokens of {codec.name} (offset {offset}, index {index})"
    )


def synthetic_prompts(isl: int, count: int, tokenizer: Any = "o200k_base", *, seed: int = 0) -> list[Sample]:
    """``count`` random-token prompts of exactly ``isl`` tokens under ``tokenizer``.

    ``tokenizer``: ``o200k_base`` (default), a HF tokenizer or model folder, ``smollm2``, or an
    already loaded tiktoken Encoding / :class:`~speedbench.data.builders.tokens.TargetTokenizer`.  The count is
    of the raw prompt; an engine's chat template adds its own tokens around it
    (``TargetTokenizer.template_overhead``).  Same seed and tokenizer: the same prompts.
    """
    if isl < 1 or count < 1:
        raise InvalidInput(f"isl and count must be >= 1 (got isl={isl}, count={count})")
    import numpy as np

    codec = load_tokenizer(tokenizer)
    allowed = np.array(_vocab_ids(codec))
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, len(allowed), size=count)
    out = []
    for i in range(count):
        prompt = random_token_prompt(codec, allowed, isl, int(offsets[i]), i, rng)
        out.append(
            Sample(
                question_id=f"synthetic-isl{isl}-{i:04d}",
                category="synthetic",
                sub_category=f"isl_{isl}",
                turns=(prompt,),
                source=f"synthetic/random-tokens/{codec.name}",
                src_id=f"seed={seed};offset={int(offsets[i])};index={i}",
                difficulty=None,
                multiturn=False,
            )
        )
    return out
