"""Token counting for the throughput configs.

The reference client sizes throughput prompts with tiktoken's ``o200k_base`` encoding whatever the model
(speed.py: ``_pad_or_truncate_prompt``, ``_generate_stackselect_prompt``, ``_generate_hle_prompt``), so
the same prompts go to every model. Tests inject another ``Tokenizer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from speedbench.data.resolvers.base import ResolveError

PAD_TEXT = "Answer now please.\n"


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class TiktokenTokenizer:
    """tiktoken ``o200k_base``; special-token text is encoded as plain text (``disallowed_special=()``)."""

    name = "tiktoken:o200k_base"

    def __init__(self) -> None:
        try:
            import tiktoken

            self._enc = tiktoken.get_encoding("o200k_base")
        except Exception as e:  # ImportError, or the encoding file cannot be downloaded
            raise ResolveError(
                "throughput configs count tokens with tiktoken's o200k_base encoding (as the official client "
                f"does) and it could not be loaded ({type(e).__name__}: {e}); `pip install tiktoken` and allow "
                "it to download o200k_base once (or set TIKTOKEN_CACHE_DIR to a copy)") from None

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(list(ids))


def pad_or_truncate(prompt: str, target: int, tok: Tokenizer, padding: str = PAD_TEXT) -> str:
    """Exactly ``target`` tokens: cut the prompt, or repeat ``padding`` after it and cut
    (reference: ``_pad_or_truncate_prompt``)."""
    ids = tok.encode(prompt)
    if len(ids) > target:
        return tok.decode(ids[:target])
    if len(ids) < target:
        pad_len = len(tok.encode(padding))
        if pad_len == 0:
            raise ResolveError("padding text encodes to no tokens")
        repeats = -(-(target - len(ids)) // pad_len)
        return tok.decode(tok.encode(prompt + padding * repeats)[:target])
    return prompt
