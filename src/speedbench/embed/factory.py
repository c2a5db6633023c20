"""``get_embedder``: an embedder from its spec (``minilm``, ``openai:<model>``, ``tfidf``), cached or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speedbench.embed.base import Embedder, Progress
from speedbench.embed.cache import CachedEmbedder
from speedbench.errors import InvalidInput

KNOWN_SPECS = ("minilm", "openai:text-embedding-3-small", "openai:text-embedding-3-large", "openai:<model>", "tfidf")


def get_embedder(spec: str, *, cache: bool = True, **options: Any) -> Embedder:
    """Build an embedder from ``spec``: ``minilm``, ``openai:<model>`` or ``tfidf``.

    ``options`` go to the embedder's constructor, except ``cache_root`` (where the disk cache lives,
    default ``cache_dir()/embeddings``) and ``progress`` (given to the cache layer when caching, which
    reports hits as done).  ``cache`` wraps minilm and openai in :class:`~speedbench.embed.cache.CachedEmbedder`;
    tfidf is never cached (its vectors depend on the corpus it is fitted on).
    """
    kind, _, arg = spec.strip().partition(":")
    cache_root = options.pop("cache_root", None)
    progress: Progress | None = options.pop("progress", None)
    if kind == "tfidf" and not arg:
        from speedbench.embed.tfidf import TfidfEmbedder

        return TfidfEmbedder(**options)
    if kind == "minilm" and not arg:
        from speedbench.embed.minilm import MiniLMEmbedder

        inner: Embedder = MiniLMEmbedder(progress=None if cache else progress, **options)
    elif kind == "openai" and arg:
        from speedbench.embed.openai_api import OpenAIEmbedder

        inner = OpenAIEmbedder(arg, progress=None if cache else progress, **options)
    else:
        raise InvalidInput(f"unknown embedder {spec!r}; known: {', '.join(KNOWN_SPECS)}")
    if not cache:
        return inner
    return CachedEmbedder(inner, root=Path(cache_root) if cache_root else None, progress=progress)
