"""TensorRT-LLM adapter (``--engine trtllm``): attach or launch ``trtllm-serve``.

GPU-only: it cannot run on the project's CPU machines, so the parsing below is tested against
fixtures written from TensorRT-LLM's source (tests/fixtures/engines/FACTS.md).

Normalisation to speedbench's definitions (docs/engines.md):
- per request: each streamed choice carries ``avg_decoded_tokens_per_iter`` (running) = tokens /
  decoding iterations, the prefill iteration included.  From the last value a and the completion
  tokens n: iterations = n / a, steps = iterations - 1, accepted = n - 1 - steps, drafted = steps x k
  (steps, accepted and drafted all labelled inferred).  When a choice carries a
  ``speculative_decoding`` object {total_draft_tokens, total_accepted_draft_tokens, num_spec_steps?}
  it is used instead.
- counters (``/prometheus/metrics``, needs ``enable_iter_perf_stats``): ``trtllm_spec_decode_num_draft_tokens_total``
  (drafted), ``..._num_accepted_tokens_total`` (accepted drafts, no bonus token); there is no step
  counter: steps = drafted / k, exact only when every step drafted k tokens (labelled inferred).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from speedbench.engines import registry
from speedbench.engines.launched import LaunchedEngine, require_model_path
from speedbench.engines.prometheus import sum_samples
from speedbench.records import SDStats

DECODING_TYPE = {"ngram": "NGram", "draft": "DraftTarget", "eagle3": "Eagle3", "mtp": "MTP"}


def parse_trtllm_spec(spec: dict[str, Any] | None) -> SDStats | None:
    """A choice's ``speculative_decoding`` object -> SDStats (steps = -1 when it names none: ``finish_sd``
    derives them)."""
    if not isinstance(spec, dict) or spec.get("total_draft_tokens") is None:
        return None
    steps = spec.get("num_spec_steps")
    return SDStats(
        drafted=int(spec["total_draft_tokens"]),
        accepted=int(spec.get("total_accepted_draft_tokens") or 0),
        steps=-1 if steps is None else int(steps),
        source="per_request",
        inferred=[] if steps is not None else ["steps"],
    )


def stats_from_avg(avg: float, completion_tokens: int, k: int) -> SDStats | None:
    """``avg_decoded_tokens_per_iter`` a with n completion tokens: iterations n/a include the prefill,
    steps = n/a - 1, accepted = n - 1 - steps, drafted = steps x k (all inferred)."""
    if avg <= 0 or completion_tokens < 1:
        return None
    steps = max(int(round(completion_tokens / avg)) - 1, 0)
    return SDStats(
        drafted=steps * k,
        accepted=max(completion_tokens - 1 - steps, 0),
        steps=steps,
        source="per_request",
        inferred=["steps", "accepted", "drafted"],
    )


def parse_trtllm_counters(text: str, k: int) -> dict[str, Any] | None:
    names = ("trtllm_spec_decode_num_draft_tokens_total", "trtllm_spec_decode_num_accepted_tokens_total")
    totals = sum_samples(text, names.__contains__)
    drafted = totals.get((names[0], ""))
    accepted = totals.get((names[1], ""))
    if drafted is None or accepted is None or k < 1:
        return None
    return {
        "num_drafts": drafted / k,
        "num_draft_tokens": drafted,
        "num_accepted_tokens": accepted,
        "per_position": {},
        "inferred": ["steps"],
    }


class TRTLLMEngine(LaunchedEngine):
    name = "trtllm"
    server_name = "trtllm-serve"
    # named only in counter_error when /metrics has no SD counters: the text it had when this was the client's default
    counter_prefix = "vllm:spec_decode_"
    capabilities = registry.declared("trtllm")
    metrics_path = "/prometheus/metrics"  # trtllm-serve's Prometheus text (its /metrics is JSON)

    def llm_api_options(self) -> dict[str, Any]:
        """The --config YAML (written as JSON, which YAML reads) for --sd."""
        opts: dict[str, Any] = {"enable_iter_perf_stats": True, "max_batch_size": self.concurrency}
        if self.sd != "none":
            spec: dict[str, Any] = {"decoding_type": DECODING_TYPE[self.sd], "max_draft_len": self.k}
            if self.sd in ("draft", "eagle3"):
                spec["speculative_model"] = self.draft_model
            if self.sd == "mtp":
                spec["num_nextn_predict_layers"] = self.k
            if self.sd == "ngram":
                spec["max_matching_ngram_size"] = 2
            opts["speculative_config"] = spec
        return opts

    def server_command(self) -> list[str]:
        assert self.launched_model is not None
        require_model_path("trtllm", self.launched_model)
        config = Path(self.log_path).parent / "trtllm-config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(self.llm_api_options(), indent=2) + "\n")
        binary = self.server_bin or os.environ.get("SPEEDBENCH_TRTLLM_SERVE") or "trtllm-serve"
        return [
            binary,
            self.launched_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend",
            "pytorch",
            "--config",
            str(config),
        ] + self.server_args

    def parse_sd(self, obj: dict[str, Any], state: dict[str, Any]) -> SDStats | None:
        for choice in obj.get("choices") or ():
            got = parse_trtllm_spec(choice.get("speculative_decoding"))
            if got is not None:
                return got
            if choice.get("avg_decoded_tokens_per_iter") is not None:
                state["avg"] = float(choice["avg_decoded_tokens_per_iter"])  # running value: keep the last
        return None

    def finish_sd(self, sd: SDStats | None, completion_tokens: int, state: dict[str, Any]) -> SDStats | None:
        if sd is not None:
            if sd.steps < 0:
                sd.steps = max(completion_tokens - 1 - sd.accepted, 0)
            return sd
        if "avg" in state:
            return stats_from_avg(state["avg"], completion_tokens, self.k)
        return None

    def parse_counters(self, text: str) -> dict[str, Any] | None:
        return parse_trtllm_counters(text, self.k)
