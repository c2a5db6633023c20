"""Exact-length token fitting: a text cut or padded to exactly N tokens of a tokenizer.

The official SPEED-Bench builder (NVIDIA Model-Optimizer ``examples/specdec_bench/specdec_bench/datasets/speed.py``,
``_pad_or_truncate_prompt``) cuts a prompt to N tokens or pads it with ``"Answer now please.\n"``; a decoded
token prefix does not always re-encode to the same count, so here the result is re-checked until it is exact.
Used by the throughput builder (:mod:`speedbench.data.builders.throughput`) and the SPEED-Bench resolvers
(:mod:`speedbench.data.builders.resolvers.tokens`): one definition for both.
"""

from __future__ import annotations

from typing import Any

from speedbench.data.builders.tokens import Codec, as_codec, o200k_base
from speedbench.errors import InvalidInput

__all__ = ["MAX_FIX_ROUNDS", "PAD", "PREFIX_MARGIN", "fit_body", "pad_or_truncate"]

PAD = "Answer now please.\n"  # the official padding string
MAX_FIX_ROUNDS = 24


def _official_pad_or_truncate(text: str, n: int, codec: Codec, pad: str) -> str:
    """``_pad_or_truncate_prompt`` of the official builder: too long, keep the first ``n`` tokens;
    too short, append ``ceil(missing / len(pad tokens))`` copies of ``pad`` *after the whole prompt*
    (after any closing question) and keep the first ``n`` tokens of that; exact, unchanged."""
    ids = codec.encode(text)
    if len(ids) > n:
        return codec.decode(ids[:n])
    if len(ids) < n:
        pad_len = len(codec.encode(pad))
        repeats = -(-(n - len(ids)) // pad_len)
        return codec.decode(codec.encode(text + pad * repeats)[:n])
    return text


def pad_or_truncate(text: str, n_tokens: int, enc: Any = None, pad: str = PAD) -> str:
    """``text`` cut or padded to exactly ``n_tokens`` tokens of ``enc`` (o200k_base by default).

    First the official ``_pad_or_truncate_prompt`` step.  The official function stops there, but a
    decoded token prefix does not always re-encode to the same count (a cut inside a multi-byte
    character decodes to U+FFFD; a cut word may merge differently), so the result is re-encoded and,
    while its length is off, cut again or padded again with ``pad``; the returned text re-encodes to
    exactly ``n_tokens`` (else :class:`~speedbench.errors.InvalidInput`, a ValueError).
    """
    if n_tokens < 1:
        raise InvalidInput(f"n_tokens must be >= 1, got {n_tokens}")
    codec = as_codec(enc if enc is not None else o200k_base())
    if not codec.encode(pad):
        raise InvalidInput(f"padding {pad!r} encodes to no tokens")
    out = _official_pad_or_truncate(text, n_tokens, codec, pad)
    return _fix_length(out, n_tokens, codec, pad)


def _fix_length(text: str, n: int, codec: Codec, pad: str) -> str:
    """Re-encode and correct until ``text`` is exactly ``n`` tokens.  When a round makes no
    progress (trailing whitespace that swallows the start of the padding, a character cut in
    two), the last tokens are dropped before cutting or padding again, one more each round."""
    seen: set[str] = set()
    drop = 0
    for _ in range(MAX_FIX_ROUNDS):
        ids = codec.encode(text)
        if len(ids) == n:
            return text
        if text in seen:
            drop += 1
        seen.add(text)
        if len(ids) > n:
            text = codec.decode(ids[: max(1, n - (len(ids) - n) - drop)])
        else:
            base = codec.decode(ids[: max(0, len(ids) - drop)])
            text = codec.decode(codec.encode(base + pad * (n - len(ids) + drop))[:n])
    raise InvalidInput(f"could not fit text to exactly {n} tokens of {codec.name}")


PREFIX_MARGIN = 64  # tokens encoded past the budget, so a cut inside the prefix never reaches it


def _encode_prefix(text: str, need: int, codec: Codec) -> tuple[list[int], bool]:
    """Ids of a prefix of ``text`` holding at least ``need + PREFIX_MARGIN`` tokens (the first
    ``need`` are those of the whole text), and whether that is all of the text.  Encoding only a
    prefix keeps long buckets fast."""
    chars = (need + PREFIX_MARGIN) * 5
    while chars < len(text):
        ids = codec.encode(text[:chars])
        if len(ids) >= need + PREFIX_MARGIN:
            return ids, False
        chars *= 2
    return codec.encode(text), True


def fit_body(head: str, body: str, tail: str, n_tokens: int, codec: Codec, pad: str = PAD) -> tuple[str, int]:
    """``head + body' + tail`` of exactly ``n_tokens`` tokens, ``body'`` a token prefix of ``body``:
    the instruction (head) and the closing question (tail) stay whole, the material in between is
    cut, as the official HLE prompts keep the question after truncated demonstrations.  Too little
    material: the official padding after the tail.  Returns (text, padding tokens added)."""
    fixed = len(codec.encode(head)) + len(codec.encode(tail))
    budget = n_tokens - fixed
    if budget < 1:
        raise InvalidInput(f"instruction and question take {fixed} tokens, more than {n_tokens}")
    body_ids, whole = _encode_prefix(body, budget, codec)
    text, got = head + tail, fixed
    for _ in range(MAX_FIX_ROUNDS):
        if budget + PREFIX_MARGIN // 2 > len(body_ids) and not whole:
            body_ids, whole = _encode_prefix(body, budget + PREFIX_MARGIN, codec)
        text = head + codec.decode(body_ids[:budget]) + tail
        got = len(codec.encode(text))
        if got == n_tokens:
            return text, 0
        if got < n_tokens and whole and budget >= len(body_ids):
            break  # material exhausted: pad
        budget += n_tokens - got
        if budget < 1:
            break
    return pad_or_truncate(text, n_tokens, codec, pad), max(0, n_tokens - got)
