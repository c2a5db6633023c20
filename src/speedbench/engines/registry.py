"""Lazy engine registry: name -> "module:Class", imported on first use.

Third-party engines register through the ``speedbench.engines`` entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from typing import Any


@dataclass(frozen=True)
class EngineEntry:
    target: str
    summary: str
    extra: str | None = None          # pip extra that installs its dependencies
    requires: tuple[str, ...] = ()    # modules that must be importable


BUILTIN: dict[str, EngineEntry] = {
    "mock": EngineEntry("speedbench.engines.mock:MockEngine",
                        "simulated SD engine in-process (settable acceptance, TTFT, step time, faults)"),
    "reference": EngineEntry("speedbench.engines.reference:ReferenceEngine",
                             "real SD in-process with PyTorch + transformers (none, ngram, draft); default SmolLM2-135M",
                             extra="hf", requires=("torch", "transformers", "gguf")),
    "openai": EngineEntry("speedbench.engines.openai_http:OpenAIEngine",
                          "any OpenAI-compatible streaming server (--base-url), counters from --metrics-url"),
    "vllm": EngineEntry("speedbench.engines.vllm:VLLMEngine",
                        "vLLM server: attach (--base-url) or --launch (none, ngram, draft, eagle, eagle3, mtp)"),
    "llamacpp": EngineEntry("speedbench.engines.llamacpp:LlamaCppEngine",
                            "llama.cpp llama-server: attach or --launch (none, ngram, draft)"),
    "sglang": EngineEntry("speedbench.engines.sglang:SGLangEngine",
                          "SGLang server: attach or --launch (GPU only; parsing tested on recorded formats)"),
    "trtllm": EngineEntry("speedbench.engines.trtllm:TRTLLMEngine",
                          "TensorRT-LLM trtllm-serve: attach or --launch (GPU only; parsing tested on recorded formats)"),
}
# engines whose adapters can start the server themselves (--launch)
LAUNCHABLE = frozenset({"vllm", "llamacpp", "sglang", "trtllm"})


class EngineNotFound(LookupError):
    pass


class EngineUnavailable(ImportError):
    pass


def _entry_points() -> dict[str, EngineEntry]:
    out: dict[str, EngineEntry] = {}
    try:
        eps = metadata.entry_points(group="speedbench.engines")
    except Exception:  # pragma: no cover - broken metadata
        return out
    for ep in eps:
        out[ep.name] = EngineEntry(ep.value, f"third-party ({ep.value})")
    return out


def available() -> dict[str, EngineEntry]:
    return {**_entry_points(), **BUILTIN}


def is_installed(entry: EngineEntry) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in entry.requires)


def resolve(name: str) -> type[Any]:
    engines = available()
    if name not in engines:
        close = difflib.get_close_matches(name, list(engines), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise EngineNotFound(f"unknown engine {name!r}{hint} (known: {', '.join(sorted(engines))}; "
                             "`speedbench engines` lists them)")
    entry = engines[name]
    module_name, _, cls_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        extra = f"pip install 'speedbench[{entry.extra}]'" if entry.extra else "install its dependencies"
        raise EngineUnavailable(f"engine {name!r} needs {e.name or e}: {extra}") from None
    return getattr(module, cls_name)


def describe_capabilities(name: str) -> str:
    """The engine class's declared capabilities as a short comma list (imports its module)."""
    try:
        caps = getattr(resolve(name), "capabilities", None)
    except (EngineNotFound, EngineUnavailable):
        return "-"
    if caps is None:
        return "-"
    labels = {"streams_tokens": "streams", "per_request_sd_stats": "per-request SD stats",
              "counters": "counters", "in_process": "in-process", "chunks_are_steps": "chunk per step",
              "token_ids": "token ids"}
    return ", ".join(label for f, label in labels.items() if getattr(caps, f, False))
