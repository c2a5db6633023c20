"""llama.cpp adapter (``--engine llamacpp``): attach to ``llama-server`` or launch it.

Acceptance sources (docs/engines.md):
- per request: ``timings.draft_n`` (drafted) and ``timings.draft_n_accepted`` (accepted), on the final
  stream chunk.  llama.cpp reports no per-request step count: speedbench infers
  steps = completion_tokens - 1 - accepted (each decode step yields its accepted drafts plus one
  token; the first token comes from prefill) and labels it ``inferred: ["steps"]``.  Decode steps on
  which nothing was drafted count as steps here but not in the server's counter, so the
  per-request-vs-counter check shows them;
- counters: ``llamacpp:spec_decode_num_drafts_total`` (verification steps),
  ``..._num_draft_tokens_total``, ``..._num_accepted_tokens_total``,
  ``..._num_accepted_tokens_per_pos_total{position}`` (a slot's figures are added when it finishes);
- chunks: llama-server streams one token per chunk, so chunks are not steps.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from pydantic import Field

from speedbench.engines import registry
from speedbench.engines.errors import EngineStartError
from speedbench.engines.launched import LaunchedEngine, LaunchedOptions, require_model_path
from speedbench.records import SDStats


def parse_llamacpp_timings(timings: dict[str, Any] | None) -> SDStats | None:
    """``timings`` -> drafted/accepted (steps filled in by ``finish_sd``); None without draft stats."""
    if not isinstance(timings, dict) or timings.get("draft_n") is None:
        return None
    return SDStats(
        drafted=int(timings["draft_n"]),
        accepted=int(timings.get("draft_n_accepted") or 0),
        steps=0,
        source="per_request",
        inferred=["steps"],
    )


class LlamaCppOptions(LaunchedOptions):
    ngram_n: int = Field(2, ge=1)  # --spec-ngram-simple-size-n for --sd ngram


class LlamaCppEngine(LaunchedEngine):
    name = "llamacpp"
    server_name = "llama-server"
    counter_prefix = "llamacpp:spec_decode_"
    capabilities = registry.declared("llamacpp")  # one token per chunk: chunks are not steps
    sd_server_args = ("-md", "--model-draft", "--spec-type")
    Options = LlamaCppOptions
    opts: LlamaCppOptions
    # llama-server closed pooled keep-alive connections while aiohttp reused them ("Can not write request
    # body", 1 request in 22-44, even with a 2 s idle limit and one retry): one connection per request
    reuse_connections = False

    def server_command(self) -> list[str]:
        assert self.launched_model is not None
        require_model_path("llamacpp", self.launched_model)
        binary = self.server_bin or os.environ.get("SPEEDBENCH_LLAMA_SERVER") or "llama-server"
        if os.sep not in binary and shutil.which(binary) is None:
            raise EngineStartError(
                f"llamacpp: {binary!r} is not on PATH; install llama.cpp "
                "(scripts/install-llamacpp VENV) and pass --server-bin VENV/bin/llama-server"
            )
        cmd = [
            binary,
            "-m",
            self.launched_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics",
            "-np",
            str(self.concurrency),
        ]
        if self.sd == "draft":
            assert self.draft_model is not None
            require_model_path("llamacpp", self.draft_model)
            cmd += ["-md", self.draft_model, "--spec-type", "draft-simple", "--spec-draft-n-max", str(self.k)]
        elif self.sd == "ngram":
            cmd += [
                "--spec-type",
                "ngram-simple",
                "--spec-ngram-simple-size-n",
                str(self.opts.ngram_n),
                "--spec-ngram-simple-size-m",
                str(self.k),
            ]
        return cmd + self.server_args

    def payload(self, request: Any) -> dict[str, Any]:
        body = super().payload(request)
        body["timings_per_token"] = False
        return body

    def parse_sd(self, obj: dict[str, Any], state: dict[str, Any]) -> SDStats | None:
        return parse_llamacpp_timings(obj.get("timings"))

    def finish_sd(self, sd: SDStats | None, completion_tokens: int, state: dict[str, Any]) -> SDStats | None:
        if sd is None:
            return None
        sd.steps = max(completion_tokens - 1 - sd.accepted, 0)
        return sd
