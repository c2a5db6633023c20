"""The run's settings: ``RunConfig`` (with ``EngineSpec`` and ``DatasetSpec``), the one typed model that flags,
a sweep's TOML file and Python all build; the resolved config is written into every run manifest (secrets
redacted).  A field that a command line sets carries its ``Flag`` (config/flags.py): name, short form, help,
whether ``run --resume`` may change it; the commands' options are generated from those (cli/options.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speedbench.config.flags import Flag
from speedbench.errors import InvalidInput


def parse_procs(value: str | int) -> int:
    """--client-procs: a positive number, or auto (0)."""
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise InvalidInput(f"--client-procs {value!r}: expected a positive number of processes or auto")
    return n


def parse_ray(value: str | None) -> str | None:
    """--ray: a cluster (local, auto, an address); ``off`` (or empty): none."""
    return None if value in (None, "", "off") else value


class EngineSpec(BaseModel):
    """Everything an engine is built from: ``EngineClass(spec)`` (engines/base.py).  The launch-time facts
    the run knows (draft length, the largest concurrency to serve, the log folder) are filled in by
    ``RunConfig.engine_spec()``; a sweep builds one spec whose ``max_concurrency`` covers all its runs."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[str, Flag("--engine", "-e", help="engine: {engines} (`speedbench engines` lists them)")] = (
        "reference"
    )
    base_url: Annotated[
        str | None,
        Flag(
            "--base-url",
            help="server URL for HTTP engines, e.g. http://127.0.0.1:8000/v1",
            resume=True,
            secret_url=True,
        ),
    ] = None
    model: Annotated[
        str | None,
        Flag(
            "--model",
            help="reference: HF folder, .gguf or 'smollm2' (default); --launch: the model the server loads; attached "
            "HTTP engines: model name sent (default: first of /v1/models)",
        ),
    ] = None
    metrics_url: Annotated[
        str | None,
        Flag(
            "--metrics-url",
            help="Prometheus /metrics URL (default: the server's /metrics)",
            resume=True,
            secret_url=True,
        ),
    ] = None
    endpoint: Annotated[Literal["chat", "completions"], Flag("--endpoint", help="chat or completions", type=str)] = (
        "chat"
    )
    api_key_env: str = "OPENAI_API_KEY"
    # SD method (each engine says which it takes; docs/engines.md)
    sd: Annotated[
        str | None,
        Flag(
            "--sd",
            help="SD method ({sd_methods}); attached servers: a label of what the server runs; mock: none = k 0 "
            "(docs/engines.md)",
        ),
    ] = None
    draft_model: Annotated[
        str | None,
        Flag("--draft-model", help="draft model (or EAGLE head) for --sd draft/eagle (same tokenizer as the target)"),
    ] = None
    # start the engine's server (vllm, llamacpp, sglang, trtllm) instead of attaching
    launch: Annotated[
        bool,
        Flag(
            "--launch",
            help="start the engine's server ({launchable}) on a free port, log in the run dir, stop it at the end",
        ),
    ] = False
    # the server executable, or for Python servers the interpreter that has them
    server_bin: Annotated[
        str | None,
        Flag(
            "--server-bin",
            help="with --launch: the server executable (llama-server, trtllm-serve) or the Python that has vllm/sglang",
        ),
    ] = None
    # extra server arguments, passed verbatim
    server_args: Annotated[
        list[str],
        Flag(
            "--server-arg",
            help="with --launch: extra server argument, verbatim (repeatable), e.g. --server-arg=--enforce-eager",
            parse=list,
        ),
    ] = Field(default_factory=list)
    # -E key=value, validated by the engine's options model
    options: Annotated[
        dict[str, str],
        Flag(
            "-E",
            "--engine-opt",
            help="engine option key=value (repeatable), e.g. -E acceptance=0.8,0.6,0.4 -E step_ms=5; HTTP engines: "
            "-E body.FIELD=VALUE adds a request-body field (docs/engines.md)",
            type=list[str],
            default=[],
            parse=lambda pairs: parse_engine_options(list(pairs)),
        ),
    ] = Field(default_factory=dict)
    # send each request's derived sampling seed to HTTP servers (body "seed")
    request_seed: Annotated[
        bool,
        Flag(
            "--request-seed",
            help="send each request's sampling seed (derived from --seed, question id and turn) to HTTP servers",
        ),
    ] = False
    draft_length: int | None = Field(None, ge=0)  # k; None: the engine's own default
    max_concurrency: int | None = Field(None, ge=1)  # the batch cap a launched/in-process engine must serve
    log_dir: str | None = None  # where a launched server's log goes (the run directory)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Flag("--dataset", "-d", help="embedded name (starter) or .jsonl/.parquet path")] = "starter"
    num_requests: Annotated[
        int | None, Flag("--num-requests", "-n", help="conversations to run, picked round-robin over categories")
    ] = None
    max_turns: Annotated[int | None, Flag("--max-turns", help="keep only the first N turns of each conversation")] = (
        Field(None, ge=1)
    )

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
    concurrency: Annotated[int, Flag("--concurrency", "-c", resume=True)] = Field(32, ge=1)
    draft_length: Annotated[int, Flag("--draft-length", "-k", help="draft tokens per step (engines that take it)")] = (
        Field(3, ge=0)
    )
    # None: the engine's default (256; reference: 32)
    output_len: Annotated[
        int | None, Flag("--output-len", help="max output tokens per turn (default 256; reference engine 32)")
    ] = Field(None, ge=1)
    temperature: Annotated[float, Flag("--temperature")] = Field(0.0, ge=0.0)
    ignore_eos: Annotated[bool, Flag("--ignore-eos", help="ask the server to ignore EOS")] = False
    # None: one full wave at the concurrency (load/generator.warmup_requests): a cold server's first requests are
    # slow, and two warm-up requests do not absorb it; --resume warms up again (the server may be cold again)
    warmup: Annotated[
        int | None,
        Flag(
            "--warmup",
            help="warm-up requests before measuring (not recorded); default: one full wave at the concurrency",
            resume=True,
        ),
    ] = Field(None, ge=0)
    # the categories one after another, each in its own counter window (load/drivers/windows.py); auto: where the
    # engine has SD counters but its replies carry no per-request SD stats
    per_category_windows: Annotated[
        Literal["auto", "on", "off"],
        Flag(
            "--per-category-windows",
            help="run the categories one after another, each in its own counter window, so that each category's "
            "acceptance comes from the engine's own counters (auto: where the replies carry no per-request SD "
            "stats but the engine counts; on; off) (docs/metrics.md)",
            type=str,
        ),
    ] = "auto"
    # None: the engine's default: 300 s for a server; no wall-clock limit for an in-process engine, whose requests
    # are slow only when the machine is (a timeout there fails requests the engine keeps decoding)
    timeout_s: Annotated[
        float | None,
        Flag(
            "--timeout",
            help="per-request timeout, seconds (default: 300 for a server, none for an in-process engine)",
            resume=True,
        ),
    ] = Field(None, gt=0)
    # a run in which more than this share of requests failed (or every one) exits non-zero
    max_failed: Annotated[
        float,
        Flag(
            "--max-failed",
            help="exit 1 when more than this share of requests failed (0..1; every request failing always does)",
            resume=True,
        ),
    ] = Field(0.1, ge=0, le=1)
    # stop dispatching after this many consecutive connection-level failures (connect error, reset, timeout):
    # the run ends "interrupted", resumable; 0 never stops
    breaker: Annotated[
        int,
        Flag(
            "--breaker",
            help="stop dispatching after N consecutive connection-level failures (connect error, reset, timeout): "
            "the run ends interrupted (exit 75) and --resume retries what failed; 0: never stop",
            resume=True,
        ),
    ] = Field(10, ge=0)
    out: Annotated[str | None, Flag("--out", help="run directory (default runs/<UTC time>-<engine>)")] = None
    # the one seed: the stratified pick and every request's sampling seed (load/seeds.py)
    seed: Annotated[int, Flag("--seed", help="the one seed: the stratified pick and each request's sampling seed")] = 0
    # traffic shape (load/arrivals.py, docs/load.md): open-loop arrivals at this many conversations a second (None:
    # the closed loop), their gaps gamma distributed with shape `burstiness` (1: Poisson); `rate_cap`: --concurrency
    # was given with --request-rate and caps the conversations in flight (else no cap)
    request_rate: Annotated[
        float | None,
        Flag(
            "--request-rate",
            help="open loop: conversations arrive at this many a second (seeded gaps; later turns follow their "
            "predecessors); --concurrency given too caps those in flight, else no cap (docs/load.md)",
        ),
    ] = Field(None, gt=0)
    burstiness: Annotated[
        float,
        Flag(
            "--burstiness", help="with --request-rate: gamma shape of the gaps (1 Poisson, < 1 burstier, > 1 regular)"
        ),
    ] = Field(1.0, gt=0)
    rate_cap: bool = False
    # closed loop: the first wave's starts spread over this long
    ramp_up_s: Annotated[
        float | None, Flag("--ramp-up", help="closed loop: spread the first wave's starts over this many seconds")
    ] = Field(None, ge=0)
    # no turn sent after this long into the measured window
    duration_s: Annotated[
        float | None, Flag("--duration", help="send no turn after this many seconds (in-flight requests finish)")
    ] = Field(None, gt=0)
    # the load split over this many client processes, each with its own event loop (load/drivers/procs.py);
    # 0: auto, from the chunk rate the warm-up measured
    client_procs: Annotated[
        int,
        Flag(
            "--client-procs",
            help="split the load over N client processes, each with its own event loop, one writer (HTTP engines); "
            "auto: as many as the chunk rate the warm-up measured needs (docs/scale.md)",
            type=str,
            default="1",
            parse=parse_procs,
            resume=True,
        ),
    ] = Field(1, ge=0)
    # the client processes run as Ray actors on this cluster (load/drivers/ray.py): local, auto or an address
    client_ray: Annotated[
        str | None,
        Flag(
            "--ray",
            help="run the --client-procs N client workers as Ray actors on a cluster: local, auto (the cluster this "
            "machine is in) or an address; the server must be reachable from its nodes; `off` on --resume runs the "
            "rest here; needs speedbench[ray] (docs/scale.md)",
            parse=parse_ray,
            resume=True,
        ),
    ] = None

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
            raise InvalidInput(f"-E {p!r}: expected key=value (e.g. -E acceptance=0.8,0.6,0.4)")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k.startswith(BODY_PREFIX):
            k = k.replace("-", "_")
        if not k or k == BODY_PREFIX:
            raise InvalidInput(f"-E {p!r}: empty key")
        out[k] = v.strip()
    return out
