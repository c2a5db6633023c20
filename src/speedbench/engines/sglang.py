"""SGLang adapter (``--engine sglang``): attach or launch ``python -m sglang.launch_server``.

GPU-only: it cannot run on the project's CPU machines, so the parsing below is tested against
fixtures written from SGLang's source (tests/fixtures/engines/FACTS.md names the files).

Normalisation to speedbench's definitions (docs/engines.md):
- per request (``"return_spec_tokens_details": true`` -> ``sglext.spec_tokens_details`` in a chunk
  with no choices, after the finish chunk; native /generate: ``meta_info``): steps = spec_verify_ct
  (verify forwards; prefill is not counted), accepted = spec_num_correct_drafts, drafted =
  spec_num_proposed_drafts, histogram = spec_correct_drafts_histogram (index = drafts accepted).
  SGLang's own ``spec_accept_length`` = completion_tokens / spec_verify_ct counts the prefill token;
  ours is 1 + accepted/steps = (completion_tokens - 1) / steps for a request that drafted every step.
  Older SGLang (~0.5.x) names them spec_accept_token_num / spec_draft_token_num; without either,
  accepted = completion_tokens - 1 - steps (labelled inferred).
- counters: only ``sglang:spec_verify_calls_total`` (= steps) exists; accepted is inferred as
  generation_tokens_total - num_requests_total - spec_verify_calls_total (each request's first token
  comes from prefill) and drafted as steps x k.  The gauges ``sglang:spec_accept_length/rate`` cover
  the last logging window only and are never used.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from speedbench.engines import registry
from speedbench.engines.base import Request
from speedbench.engines.launched import LaunchedEngine, require_model_path
from speedbench.engines.prometheus import sum_samples
from speedbench.records import SDStats, per_position_from_histogram

ALGORITHM = {"ngram": "NGRAM", "draft": "STANDALONE", "eagle": "EAGLE", "eagle3": "EAGLE3", "mtp": "NEXTN"}


def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def parse_sglang_details(d: dict[str, Any] | list[Any] | None, k: int | None) -> SDStats | None:
    """``spec_tokens_details`` (OpenAI routes) or ``meta_info`` (/generate) -> SDStats.

    Fields that need the completion token count are left for ``finish_sd`` (accepted = -1)."""
    if isinstance(d, list):  # n > 1: one entry per choice; speedbench sends n = 1
        d = d[0] if d else None
    if not isinstance(d, dict) or d.get("spec_verify_ct") is None:
        return None
    steps = int(d["spec_verify_ct"])
    accepted = _first(d, "spec_num_correct_drafts", "spec_accepted_drafts", "spec_accept_token_num")
    drafted = _first(d, "spec_num_proposed_drafts", "spec_proposed_drafts", "spec_draft_token_num")
    hist = [int(x) for x in (_first(d, "spec_correct_drafts_histogram", "spec_accept_histogram") or [])]
    inferred = []
    if drafted is None:
        drafted = steps * (k or 0)
        inferred.append("drafted")
    if accepted is None:
        inferred.append("accepted")
    sd = SDStats(
        drafted=int(drafted),
        accepted=-1 if accepted is None else int(accepted),
        steps=steps,
        histogram=hist,
        source="per_request",
        inferred=inferred,
    )
    if hist:
        sd.per_position = per_position_from_histogram(hist)
    return sd


def parse_sglang_counters(text: str, k: int) -> dict[str, Any] | None:
    """SGLang /metrics -> counter snapshot; None without ``sglang:spec_verify_calls_total``."""
    names = ("sglang:spec_verify_calls_total", "sglang:generation_tokens_total", "sglang:num_requests_total")
    totals = sum_samples(text, names.__contains__)
    steps = totals.get((names[0], ""))
    if steps is None:
        return None
    gen = totals.get((names[1], ""), 0.0)
    reqs = totals.get((names[2], ""), 0.0)
    return {
        "num_drafts": steps,
        "num_draft_tokens": steps * k,
        "num_accepted_tokens": gen - reqs - steps,
        "per_position": {},
        "inferred": ["accepted", "drafted"],
    }


class SGLangEngine(LaunchedEngine):
    name = "sglang"
    server_name = "SGLang"
    # named only in counter_error when /metrics has no SD counters: the text it had when this was the client's default
    counter_prefix = "vllm:spec_decode_"
    capabilities = registry.declared("sglang")
    sd_server_args = ("--speculative-algorithm", "--speculative-draft-model-path")

    def server_command(self) -> list[str]:
        assert self.launched_model is not None
        require_model_path("sglang", self.launched_model)
        python = self.server_bin or os.environ.get("SPEEDBENCH_SGLANG_PYTHON") or sys.executable
        cmd = [
            python,
            "-m",
            "sglang.launch_server",
            "--model-path",
            self.launched_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enable-metrics",
            "--max-running-requests",
            str(self.concurrency),
        ]
        if self.sd != "none":
            cmd += ["--speculative-algorithm", ALGORITHM[self.sd]]
            if self.draft_model and self.sd in ("draft", "eagle", "eagle3"):
                cmd += ["--speculative-draft-model-path", self.draft_model]
            if self.sd != "ngram":  # a chain of k drafts: k steps, top-1, k+1 tokens verified
                cmd += ["--speculative-num-steps", str(self.k), "--speculative-eagle-topk", "1"]
            cmd += ["--speculative-num-draft-tokens", str(self.k + 1)]
        return cmd + self.server_args

    def payload(self, request: Request) -> dict[str, Any]:
        body = super().payload(request)
        body["return_spec_tokens_details"] = True
        return body

    def parse_sd(self, obj: dict[str, Any], state: dict[str, Any]) -> SDStats | None:
        ext = obj.get("sglext")
        if isinstance(ext, dict):
            return parse_sglang_details(ext.get("spec_tokens_details"), self.k)
        return None

    def finish_sd(self, sd: SDStats | None, completion_tokens: int, state: dict[str, Any]) -> SDStats | None:
        if sd is not None and sd.accepted < 0:
            sd.accepted = max(completion_tokens - 1 - sd.steps, 0)
        return sd

    def parse_counters(self, text: str) -> dict[str, Any] | None:
        return parse_sglang_counters(text, self.k)
