"""Embedders (a local offline model, the OpenAI API, a tf-idf fallback) and diversity scores.

``get_embedder("minilm" | "openai:<model>" | "tfidf")`` builds one; ``embed(texts)`` returns float32
unit rows.  Model libraries (torch, sentence-transformers, scikit-learn) load on first use only.
This package knows nothing else in speedbench (``paths``, ``atomic`` and ``extras`` aside).
"""

from speedbench.embed.base import Embedder, EmbedderError, EmbedderUnavailable, Progress, normalize_rows, zero_rows
from speedbench.embed.cache import CachedEmbedder, EmbeddingCache
from speedbench.embed.diversity import (
    mean_pairwise_cosine,
    near_duplicates,
    pairwise_sum,
    random_subset_baseline,
    stratified_subset_baseline,
)
from speedbench.embed.factory import KNOWN_SPECS, get_embedder

__all__ = [
    "KNOWN_SPECS",
    "CachedEmbedder",
    "Embedder",
    "EmbedderError",
    "EmbedderUnavailable",
    "EmbeddingCache",
    "Progress",
    "get_embedder",
    "mean_pairwise_cosine",
    "near_duplicates",
    "normalize_rows",
    "pairwise_sum",
    "random_subset_baseline",
    "stratified_subset_baseline",
    "zero_rows",
]
