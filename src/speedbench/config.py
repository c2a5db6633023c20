"""Typed run configuration (pydantic).  CLI flags and Python build the same RunConfig;
the resolved config is written into every run manifest (with secrets redacted).

Secrets: ``redact`` (values of secret-looking keys, and the ``user:password@`` of every URL), ``redact_urls``
(userinfo -> ``***@`` in any text) and ``Secrets`` (the run's secret values, scrubbed from whatever is written or
printed: the API key, ``-E api_token``, URL passwords; ``engine_secrets`` collects them from a spec)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EngineSpec(BaseModel):
    """Everything an engine is built from: ``EngineClass(spec)`` (engines/base.py).  The launch-time facts
    the run knows (draft length, the largest concurrency to serve, the log folder) are filled in by
    ``RunConfig.engine_spec()``; a sweep builds one spec whose ``max_concurrency`` covers all its runs."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "reference"
    base_url: str | None = None
    model: str | None = None
    metrics_url: str | None = None
    endpoint: Literal["chat", "completions"] = "chat"
    api_key_env: str = "OPENAI_API_KEY"
    sd: str | None = None  # SD method (each engine says which it takes; docs/engines.md)
    draft_model: str | None = None
    launch: bool = False  # start the engine's server (vllm, llamacpp, sglang, trtllm) instead of attaching
    server_bin: str | None = None  # the server executable, or for Python servers the interpreter that has them
    server_args: list[str] = Field(default_factory=list)  # extra server arguments, passed verbatim
    options: dict[str, str] = Field(default_factory=dict)  # -E key=value, validated by the engine's options model
    request_seed: bool = False  # send each request's derived sampling seed to HTTP servers (body "seed")
    draft_length: int | None = Field(None, ge=0)  # k; None: the engine's own default
    max_concurrency: int | None = Field(None, ge=1)  # the batch cap a launched/in-process engine must serve
    log_dir: str | None = None  # where a launched server's log goes (the run directory)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "starter"
    num_requests: int | None = None
    max_turns: int | None = Field(None, ge=1)  # keep only the first N turns of each conversation

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
    # None: the engine's default: 300 s for a server; no wall-clock limit for an in-process engine, whose requests
    # are slow only when the machine is (a timeout there fails requests the engine keeps decoding)
    timeout_s: float | None = Field(None, gt=0)
    # a run in which more than this share of requests failed (or every one) exits non-zero
    max_failed: float = Field(0.1, ge=0, le=1)
    # stop dispatching after this many consecutive connection-level failures (connect error, reset, timeout):
    # the run ends "interrupted", resumable; 0 never stops
    breaker: int = Field(10, ge=0)
    out: str | None = None
    seed: int = 0  # the one seed: the stratified pick and every request's sampling seed (load/seeds.py)
    # traffic shape (load/arrivals.py, docs/load.md): open-loop arrivals at this many conversations a second (None:
    # the closed loop), their gaps gamma distributed with shape `burstiness` (1: Poisson); `rate_cap`: --concurrency
    # was given with --request-rate and caps the conversations in flight (else no cap)
    request_rate: float | None = Field(None, gt=0)
    burstiness: float = Field(1.0, gt=0)
    rate_cap: bool = False
    ramp_up_s: float | None = Field(None, ge=0)  # closed loop: the first wave's starts spread over this long
    duration_s: float | None = Field(None, gt=0)  # no turn sent after this long into the measured window
    # the load split over this many client processes, each with its own event loop (usecases/client_procs.py);
    # 0: auto, from the chunk rate the warm-up measured
    client_procs: int = Field(1, ge=0)
    # the client processes run as Ray actors on this cluster (usecases/client_ray.py): local, auto or an address
    client_ray: str | None = None

    @model_validator(mode="after")
    def _traffic_shape(self) -> RunConfig:
        if self.request_rate is None and self.burstiness != 1.0:
            raise ValueError("--burstiness shapes open-loop arrivals: give --request-rate too")
        if self.client_ray and self.client_procs == 0:
            raise ValueError(
                "--ray runs the client workers on a cluster: say how many with --client-procs N (auto measures "
                "this machine's CPUs, not the cluster's)"
            )
        if self.request_rate is not None and self.ramp_up_s:
            raise ValueError(
                "--ramp-up spreads the closed loop's first wave; with --request-rate conversations already arrive "
                "one at a time (lower the rate instead)"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _legacy_dataset_seed(cls, data: Any) -> Any:
        """Manifests written before the one seed kept the pick's seed as ``dataset.seed`` (and an unused
        ``seed``): map it, so ``run --resume`` of such a directory picks the same conversations."""
        if not isinstance(data, dict) or not isinstance(data.get("dataset"), dict) or "seed" not in data["dataset"]:
            return data
        dataset = dict(data["dataset"])
        legacy = dataset.pop("seed")
        if data.get("seed", 0) not in (0, legacy):
            raise ValueError(f"seed {data['seed']} and the legacy dataset.seed {legacy} disagree; keep one")
        return {**data, "dataset": dataset, "seed": legacy}

    def engine_spec(self) -> EngineSpec:
        """The engine's spec with the launch-time facts this run holds filled in (the user's spec wins where
        it sets them)."""
        e = self.engine
        return e.model_copy(
            update={
                "draft_length": self.draft_length if e.draft_length is None else e.draft_length,
                "max_concurrency": self.concurrency if e.max_concurrency is None else e.max_concurrency,
                "log_dir": self.out if e.log_dir is None else e.log_dir,
            }
        )


# ``-E body.FIELD=VALUE``: a field passed verbatim into each request body (HTTP engines; JSON values parsed)
BODY_PREFIX = "body."


def parse_engine_options(pairs: list[str]) -> dict[str, str]:
    """Parse repeated ``-E key=value`` flags (``-`` in a key reads as ``_``, except in a ``body.`` field name,
    which is sent as written).  Each engine validates the keys (engines/options.py)."""
    out: dict[str, str] = {}
    for p in pairs:
        if "=" not in p:
            raise ValueError(f"-E {p!r}: expected key=value (e.g. -E acceptance=0.8,0.6,0.4)")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k.startswith(BODY_PREFIX):
            k = k.replace("-", "_")
        if not k or k == BODY_PREFIX:
            raise ValueError(f"-E {p!r}: empty key")
        out[k] = v.strip()
    return out


SECRET_MARKERS = ("key", "token", "secret", "password", "authorization")
REDACTED = "***"
# a URL's userinfo: everything between "scheme://" and the last "@" before the host (RFC 3986 wants "@" in a
# password percent-encoded; a raw one is taken as aiohttp and urllib take it, up to the last "@")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#'\"<>]*@")
# shorter values are not searched for in text: too common to be secrets ("EMPTY", "none"), and replacing them
# everywhere would corrupt what is written; URLs' userinfo and secret-looking fields are redacted whatever their length
MIN_SECRET_LEN = 6


def redact_urls(text: str) -> str:
    """Every URL's userinfo in ``text`` -> ``***@``: ``http://user:pw@host/v1`` -> ``http://***@host/v1``."""
    return _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)


def url_password(url: str | None) -> str | None:
    """The password of a ``scheme://user:password@host`` URL (None without one, or for an unparsable URL)."""
    if not url:
        return None
    try:
        return urlsplit(url).password or None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def url_secrets(url: str | None) -> list[str]:
    """What a URL's ``user:password@`` lets out: the password, and the basic-auth token aiohttp sends for it
    (a server may echo the Authorization header)."""
    password = url_password(url)
    if password is None or url is None:
        return []
    user = unquote(urlsplit(url).username or "")
    token = base64.b64encode(f"{user}:{unquote(password)}".encode("latin-1", "replace")).decode("ascii")
    return [password, token]


def has_userinfo(url: str) -> bool:
    """Whether a URL carries ``user[:password]@`` (aiohttp then sends it as basic auth)."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False


@dataclass(frozen=True)
class Secrets:
    """A run's secret values (API key, URL passwords): ``scrub`` replaces each by ``***`` in a text and redacts
    URLs' userinfo.  Build with ``Secrets.of(...)`` (drops empty, short and already redacted values)."""

    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, *values: str | None) -> Secrets:
        keep = {v for raw in values if raw for v in (raw, unquote(raw)) if len(v) >= MIN_SECRET_LEN and v != REDACTED}
        return cls(tuple(sorted(keep, key=lambda v: (-len(v), v))))  # longest first: a secret inside another

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets.of(*self.values, *other.values)

    def scrub(self, text: str) -> str:
        text = redact_urls(text)
        for v in self.values:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

    def scrub_obj(self, obj: Any) -> Any:
        """``scrub`` over every string in a JSON-like value (dict keys included)."""
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {self.scrub_obj(k): self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.scrub_obj(v) for v in obj]
        return obj


def engine_secrets(spec: EngineSpec, environ: Mapping[str, str]) -> Secrets:
    """The secret values an engine spec brings: the API key (``$api_key_env``, ``-E api_token``) and the
    passwords in ``base_url`` / ``metrics_url`` (and their basic-auth tokens)."""
    return Secrets.of(
        environ.get(spec.api_key_env),
        spec.options.get("api_token"),
        *url_secrets(spec.base_url),
        *url_secrets(spec.metrics_url),
    )


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys by '***' and URLs' userinfo by '***@' (recursively)."""
    if isinstance(obj, dict):
        return {
            k: (
                REDACTED
                if isinstance(k, str)
                and any(m in k.lower() for m in SECRET_MARKERS)
                and not k.endswith("_env")
                and isinstance(v, str)
                and v
                else redact(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_urls(obj)
    return obj
