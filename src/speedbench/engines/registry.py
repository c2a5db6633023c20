"""Lazy engine registry: name -> "module:Class", imported on first use.

Third-party engines register through the ``speedbench.engines`` entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from typing import Any

from speedbench.engines.base import SD_METHODS, Capabilities
from speedbench.errors import UserError


@dataclass(frozen=True)
class EngineEntry:
    target: str
    summary: str
    extra: str | None = None  # pip extra that installs its dependencies
    requires: tuple[str, ...] = ()  # modules that must be importable
    capabilities: Capabilities | None = None  # static; None (third-party): read from the class


# What an attached server runs is its own business: --sd only labels it, so any known method is accepted.
_HTTP = Capabilities(
    per_request_sd_stats=True, counters=True, chunks_are_steps=True, token_ids=True, sd_methods=SD_METHODS
)

# The one declaration of each built-in engine's static capabilities: the classes refer to these
# (``capabilities = registry.declared("mock")``), `speedbench engines` and `--help` read them without
# importing the engines.  Where an -E option changes one, the engine computes its instance's copy.
BUILTIN: dict[str, EngineEntry] = {
    "mock": EngineEntry(
        "speedbench.engines.mock:MockEngine",
        "simulated SD engine in-process (settable acceptance, TTFT, step time, faults)",
        capabilities=Capabilities(
            per_request_sd_stats=True, counters=True, in_process=True, token_ids=True, sd_methods=SD_METHODS
        ),
    ),
    "reference": EngineEntry(
        "speedbench.engines.reference:ReferenceEngine",
        "real SD in-process with PyTorch + transformers; default SmolLM2-135M",
        extra="hf",
        requires=("torch", "transformers", "gguf"),
        capabilities=Capabilities(
            per_request_sd_stats=True,
            counters=True,
            in_process=True,
            token_ids=True,
            default_output_len=32,
            sd_methods=("none", "ngram", "draft"),
            sd_default="ngram",
        ),
    ),
    "openai": EngineEntry(
        "speedbench.engines.openai:OpenAIEngine",
        "any OpenAI-compatible streaming server (--base-url), counters from --metrics-url",
        capabilities=_HTTP,
    ),
    "vllm": EngineEntry(
        "speedbench.engines.vllm:VLLMEngine",
        "vLLM server: attach (--base-url) or --launch",
        capabilities=replace(_HTTP, can_launch=True, sd_default="none"),
    ),
    "llamacpp": EngineEntry(
        "speedbench.engines.llamacpp:LlamaCppEngine",
        "llama.cpp llama-server: attach or --launch",
        capabilities=replace(
            _HTTP,
            can_launch=True,
            chunks_are_steps=False,
            token_ids=False,
            sd_methods=("none", "ngram", "draft"),
            sd_default="none",
        ),
    ),
    "sglang": EngineEntry(
        "speedbench.engines.sglang:SGLangEngine",
        "SGLang server: attach or --launch (GPU only; parsing tested on recorded formats)",
        capabilities=replace(_HTTP, can_launch=True, token_ids=False, sd_default="none"),
    ),
    "trtllm": EngineEntry(
        "speedbench.engines.trtllm:TRTLLMEngine",
        "TensorRT-LLM trtllm-serve: attach or --launch (GPU only; parsing tested on recorded formats)",
        capabilities=replace(
            _HTTP,
            can_launch=True,
            token_ids=False,
            sd_default="none",
            sd_methods=("none", "ngram", "draft", "eagle3", "mtp"),
        ),
    ),
}


def declared(name: str) -> Capabilities:
    """A built-in engine's static capabilities (what its class declares)."""
    caps = BUILTIN[name].capabilities
    assert caps is not None
    return caps


class EngineNotFound(UserError, LookupError):
    """No engine of that name is registered (the message suggests the nearest)."""


class EngineUnavailable(UserError, ImportError):
    """The engine is registered but cannot be imported here (the message names the extra to install)."""


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
        raise EngineNotFound(
            f"unknown engine {name!r}{hint} (known: {', '.join(sorted(engines))}; `speedbench engines` lists them)"
        )
    entry = engines[name]
    module_name, _, cls_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        extra = f"pip install 'speedbench[{entry.extra}]'" if entry.extra else "install its dependencies"
        raise EngineUnavailable(f"engine {name!r} needs {e.name or e}: {extra}") from None
    return getattr(module, cls_name)


def capabilities(name: str) -> Capabilities:
    """An engine's static capabilities: from its entry, else (third-party) from its class (imports it)."""
    entry = available().get(name)
    if entry is not None and entry.capabilities is not None:
        return entry.capabilities
    caps = resolve(name).capabilities
    if not isinstance(caps, Capabilities):
        raise EngineUnavailable(f"engine {name!r} declares no Capabilities (engines/base.py)")
    return caps


def launchable() -> list[str]:
    """The built-in engines that can --launch their server."""
    return [n for n, e in BUILTIN.items() if e.capabilities is not None and e.capabilities.can_launch]


def sd_methods_help() -> str:
    """The --sd values each built-in engine takes, engines with the same ones grouped (for --help; no engine
    module imported), e.g. ``reference: none, ngram, draft (default ngram)``."""
    groups: dict[tuple[tuple[str, ...], str | None], list[str]] = {}
    for name, e in BUILTIN.items():
        if e.capabilities is not None:
            groups.setdefault((e.capabilities.sd_methods, e.capabilities.sd_default), []).append(name)
    return "; ".join(
        f"{', '.join(names)}: {', '.join(methods)}" + (f" (default {default})" if default else "")
        for (methods, default), names in groups.items()
    )


CAPABILITY_LABELS = {
    "streams_tokens": "streams",
    "per_request_sd_stats": "per-request SD stats",
    "counters": "counters",
    "in_process": "in-process",
    "chunks_are_steps": "chunk per step",
    "token_ids": "token ids",
    "can_launch": "--launch",
}


def describe_capabilities(name: str) -> str:
    """The engine's declared capabilities as a short comma list."""
    try:
        caps = capabilities(name)
    except (EngineNotFound, EngineUnavailable):
        return "-"
    values = asdict(caps)
    return ", ".join(label for f, label in CAPABILITY_LABELS.items() if values[f])


def listing() -> list[dict[str, str]]:
    """One row per registered engine for `speedbench engines` (static metadata; third-party engines that
    are installed are imported to read their capabilities)."""
    rows = []
    for name, entry in sorted(available().items()):
        installed = is_installed(entry)
        caps = entry.capabilities
        if caps is None and installed:
            try:
                caps = capabilities(name)
            except (EngineNotFound, EngineUnavailable):
                caps = None
        rows.append(
            {
                "name": name,
                "installed": "yes" if installed else "no",
                "extra": entry.extra or "-",
                "capabilities": describe_capabilities(name) if caps is not None else "-",
                "sd": "|".join(caps.sd_methods) if caps is not None and caps.sd_methods else "-",
                "summary": entry.summary,
            }
        )
    return rows
