"""``--engine openai``: any OpenAI-compatible streaming server at ``--base-url``, read with vLLM's extensions
(engines/vllm.py: token ids, per-request SD stats, ``vllm:spec_decode_*`` counters) where the server sends them, as
vLLM and serve-mock do; a server without them streams as plain OpenAI.  ``--sd`` is a label, not verified."""

from __future__ import annotations

from speedbench.engines import registry
from speedbench.engines.vllm import VLLMDialect


class OpenAIEngine(VLLMDialect):
    name = "openai"
    capabilities = registry.declared("openai")  # what the client reads when the server offers it
