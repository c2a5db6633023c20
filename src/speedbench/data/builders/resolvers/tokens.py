"""Token counting for the throughput configs.

The reference client sizes throughput prompts with tiktoken's ``o200k_base`` encoding whatever the model
(speed.py: ``_pad_or_truncate_prompt``, ``_generate_stackselect_prompt``, ``_generate_hle_prompt``), so
the same prompts go to every model. The encoding and the padding rule are shared with the throughput
builder (:mod:`speedbench.data.builders.tokens`, :mod:`speedbench.data.builders.exact_length`): one definition
for both. Tests inject another ``Tokenizer`` (any :class:`~speedbench.data.builders.tokens.Codec`).
"""

from __future__ import annotations

from speedbench.data.builders.exact_length import PAD as PAD_TEXT
from speedbench.data.builders.exact_length import pad_or_truncate as _exact_pad_or_truncate
from speedbench.data.builders.resolvers.errors import ResolveError
from speedbench.data.builders.tokens import Codec as Tokenizer
from speedbench.data.builders.tokens import TokenizerError, as_codec, o200k_base
from speedbench.extras import MissingExtra

__all__ = ["PAD_TEXT", "Tokenizer", "o200k_tokenizer", "pad_or_truncate"]


def o200k_tokenizer() -> Tokenizer:
    """tiktoken ``o200k_base`` (offline from quicktok-v1's hash-checked vocab when installed), encoding
    special-token text as plain text (``disallowed_special=()``), as the reference does."""
    try:
        return as_codec(o200k_base())
    except (TokenizerError, MissingExtra) as e:
        raise ResolveError(f"throughput configs count tokens with tiktoken's o200k_base encoding: {e}") from None


def pad_or_truncate(prompt: str, target: int, tok: Tokenizer, padding: str = PAD_TEXT) -> str:
    """Exactly ``target`` tokens: cut the prompt, or repeat ``padding`` after it and cut (the reference's
    ``_pad_or_truncate_prompt``), then re-checked: where a decoded prefix re-encodes to another count
    (a cut inside a character or a word) it is cut or padded again until the count is exact."""
    try:
        return _exact_pad_or_truncate(prompt, target, tok, padding)
    except ValueError as e:  # the length could not be made exact (or the padding encodes to no tokens)
        raise ResolveError(f"cannot fit the prompt to {target} tokens: {e}") from None
