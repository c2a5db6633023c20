"""Typed run configuration (pydantic).  CLI flags and Python build the same RunConfig;
the resolved config is written into every run manifest (with secrets redacted)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EngineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "reference"
    base_url: str | None = None
    model: str | None = None
    metrics_url: str | None = None
    endpoint: Literal["chat", "completions"] = "chat"
    api_key_env: str = "OPENAI_API_KEY"
    sd: str | None = None            # SD method for engines that take one (reference: none|ngram|draft)
    draft_model: str | None = None
    launch: bool = False             # start the engine's server (vllm, llamacpp, sglang, trtllm) instead of attaching
    server_bin: str | None = None    # the server executable, or for Python servers the interpreter that has them
    server_args: list[str] = Field(default_factory=list)   # extra server arguments, passed verbatim
    options: dict[str, str] = Field(default_factory=dict)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "starter"
    num_requests: int | None = None
    seed: int = 0
    max_turns: int | None = Field(None, ge=1)   # keep only the first N turns of each conversation

    @field_validator("num_requests")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("num_requests must be >= 1")
        return v


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: EngineSpec = Field(default_factory=EngineSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    concurrency: int = Field(32, ge=1)
    draft_length: int = Field(3, ge=0)
    output_len: int | None = Field(None, ge=1)  # None: the engine's default (256; reference: 32)
    temperature: float = Field(0.0, ge=0.0)
    ignore_eos: bool = False
    warmup: int = Field(2, ge=0)
    timeout_s: float = Field(300.0, gt=0)
    out: str | None = None
    seed: int = 0


def parse_engine_options(pairs: list[str]) -> dict[str, str]:
    """Parse repeated ``-E key=value`` flags."""
    out: dict[str, str] = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"-E {p!r}: expected key=value (e.g. -E acceptance=0.8,0.6,0.4)")
        k, v = p.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ValueError(f"-E {p!r}: empty key")
        out[k] = v.strip()
    return out


SECRET_MARKERS = ("key", "token", "secret", "password", "authorization")


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys by '***' (recursively)."""
    if isinstance(obj, dict):
        return {k: ("***" if isinstance(k, str) and any(m in k.lower() for m in SECRET_MARKERS)
                    and not k.endswith("_env") and isinstance(v, str) and v else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
