"""Incremental detokenization: streamed text deltas that add up to the one-shot decode exactly.

Decoding all generated ids on every chunk and slicing off what was already sent breaks as soon as a
token ends inside a multi-byte UTF-8 character: the partial decode ends with U+FFFD, the next decode
has the real character there instead, and the length arithmetic corrupts the text.  This follows the
approach of vLLM's incremental detokenizer and transformers' ``TextStreamer``:

- two offsets into the ids: ``read_offset`` (everything before it has been streamed) and
  ``prefix_offset`` (a little context before ``read_offset``, decoded again on every push so that
  decoders which treat the first token of a text specially, e.g. SentencePiece dropping its leading
  space, give the same text in the window as in the whole);
- each push decodes ``ids[prefix_offset:read_offset]`` and ``ids[prefix_offset:]``; the delta is what
  the second adds to the first.  The text is held back (offsets unchanged, delta "") while it ends
  with U+FFFD (an incomplete character), while the ids end inside a run of SentencePiece byte-fallback
  tokens (``<0xE4>``...: such a run is decoded as one unit, and one that is cut short becomes one
  U+FFFD per byte, characters already complete included), while it ends with the start of a pattern
  that the tokenizer's ``clean_up_tokenization_spaces`` would rewrite (" ." -> "." ...), or when the
  window does not extend the prefix text (a skipped special token, a tokenizer whose window decode is
  not prefix-stable);
- ``flush()`` decodes all ids once and returns what the deltas have not sent yet, so
  ``"".join(deltas) + flush() == tokenizer.decode(ids, skip_special_tokens=...)`` exactly, whatever
  the chunking.  (Were a tokenizer ever to stream text that is not a prefix of its own one-shot
  decode, flush falls back to the window's remainder; no tokenizer tested does.)

Each push costs two decodes of a window of a few tokens, not of the whole reply.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

REPLACEMENT = "\ufffd"
# what transformers' clean_up_tokenization rewrites; each starts with a space, so a text ending with a
# proper prefix of one of them may still change when the next token arrives
_CLEANUP_PATTERNS = (" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're")
_CLEANUP_PREFIXES = tuple(sorted({p[:i] for p in _CLEANUP_PATTERNS for i in range(1, len(p))}, key=len, reverse=True))


_BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
_byte_ids_cache: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def byte_fallback_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of a SentencePiece-style tokenizer's byte tokens ``<0x00>``..``<0xFF>`` (empty for others,
    e.g. byte-level BPE, whose tokens are bytes already).  Cached per tokenizer (256 lookups cost ~2 ms)."""
    try:
        return _byte_ids_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    try:
        ids = tokenizer.convert_tokens_to_ids(_BYTE_TOKENS)
    except Exception:  # noqa: BLE001 - a tokenizer without the lookup has no byte tokens we can use
        ids = []
    unk = getattr(tokenizer, "unk_token_id", None)
    found = {int(i) for i in ids if i is not None and i != unk}
    result = frozenset(found) if len(found) == 256 else frozenset()
    try:
        _byte_ids_cache[tokenizer] = result
    except TypeError:
        pass
    return result


class IncrementalDetokenizer:
    """``push(ids) -> str`` (the text those ids add, possibly "" while a character is incomplete) and
    ``flush() -> str`` (the held-back rest, once, at the end of the stream)."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self._sent: list[str] = []
        self._flushed = False
        self._cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._byte_ids = byte_fallback_ids(tokenizer)
        self._skipped = frozenset(getattr(tokenizer, "all_special_ids", ())) if skip_special_tokens else frozenset()

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens))

    def _in_byte_run(self) -> bool:
        """Whether the ids end inside a run of byte-fallback tokens (skipped special tokens do not end a
        run: the decode drops them first).  Such a run decodes as one unit, and a run that is not valid
        UTF-8 as a whole becomes one U+FFFD per byte token, characters already complete included."""
        if not self._byte_ids:
            return False
        for t in reversed(self.ids):
            if t not in self._skipped:
                return t in self._byte_ids
        return False

    def _held(self, text: str) -> bool:
        if text.endswith(REPLACEMENT) or self._in_byte_run():
            return True
        return self._cleanup and text.endswith(_CLEANUP_PREFIXES)

    def push(self, ids: Iterable[int]) -> str:
        if self._flushed:
            raise RuntimeError("IncrementalDetokenizer.push after flush()")
        new = [int(x) for x in ids]
        if not new:
            return ""
        self.ids.extend(new)
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset]) if self.read_offset else ""
        window_text = self._decode(self.ids[self.prefix_offset :])
        if len(window_text) <= len(prefix_text) or not window_text.startswith(prefix_text) or self._held(window_text):
            return ""
        delta = window_text[len(prefix_text) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self._sent.append(delta)
        return delta

    def flush(self) -> str:
        """The text not streamed yet (held back at the end); call once, when the stream ends."""
        if self._flushed:
            return ""
        self._flushed = True
        sent = "".join(self._sent)
        full = self._decode(self.ids)
        if full.startswith(sent):
            rest = full[len(sent) :]
        else:  # not met with the tokenizers tested: the best the window can say
            prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset]) if self.read_offset else ""
            window_text = self._decode(self.ids[self.prefix_offset :])
            rest = window_text[len(prefix_text) :] if window_text.startswith(prefix_text) else ""
        self._sent.append(rest)
        self.read_offset = self.prefix_offset = len(self.ids)
        return rest

    @property
    def text(self) -> str:
        """Everything returned so far."""
        return "".join(self._sent)
