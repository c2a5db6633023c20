"""Options shared by the commands that run an engine (`run`, `check-lossless`), defined once.  Engine
lists and SD methods in the help come from the registry's metadata (no engine module is imported)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from speedbench.engines import registry

EngineOpt = Annotated[
    list[str],
    typer.Option(
        "-E",
        "--engine-opt",
        help="engine option key=value (repeatable), e.g. -E acceptance=0.8,0.6,0.4 -E step_ms=5; "
        "HTTP engines: -E body.FIELD=VALUE adds a request-body field (docs/engines.md)",
    ),
]


def build_config(flags: dict[str, Any]) -> Any:
    """The RunConfig that the flags of `run` / `check-lossless` (their locals) describe."""
    from speedbench.config import DatasetSpec, EngineSpec, RunConfig, parse_engine_options

    f = flags
    return RunConfig(
        engine=EngineSpec(
            kind=f["engine"],
            base_url=f.get("base_url"),
            model=f.get("model"),
            metrics_url=f.get("metrics_url"),
            endpoint=f.get("endpoint", "chat"),
            sd=f.get("sd"),
            draft_model=f.get("draft_model"),
            launch=f.get("launch", False),
            server_bin=f.get("server_bin"),
            server_args=list(f.get("server_arg") or []),
            options=parse_engine_options(list(f.get("engine_opt") or [])),
            request_seed=f.get("request_seed", False),
        ),
        dataset=DatasetSpec(name=f["dataset"], num_requests=f.get("num_requests"), max_turns=f.get("max_turns")),
        concurrency=f["concurrency"],
        draft_length=f["draft_length"],
        output_len=f.get("output_len"),
        temperature=f["temperature"],
        ignore_eos=f["ignore_eos"],
        warmup=f["warmup"],
        timeout_s=f["timeout"],
        max_failed=f.get("max_failed", 0.1),
        breaker=f.get("breaker", 10),
        out=f.get("out"),
        seed=f.get("seed", 0),
        request_rate=f.get("request_rate"),
        burstiness=f.get("burstiness", 1.0),
        ramp_up_s=f.get("ramp_up"),
        duration_s=f.get("duration"),
        client_procs=_procs(f.get("client_procs", "1")),
        client_ray=None if f.get("ray") in (None, "", "off") else f.get("ray"),
    )


# Options shared by `run` and `check-lossless` (one definition each).
EngineName = Annotated[
    str, typer.Option("--engine", "-e", help=f"engine: {', '.join(registry.BUILTIN)} (`speedbench engines` lists them)")
]
BaseUrl = Annotated[Optional[str], typer.Option(help="server URL for HTTP engines, e.g. http://127.0.0.1:8000/v1")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        help="reference: HF folder, .gguf or 'smollm2' (default); --launch: the model the server loads; attached HTTP "
        "engines: model name sent (default: first of /v1/models)"
    ),
]
SdOpt = Annotated[
    Optional[str],
    typer.Option(
        help=f"SD method ({registry.sd_methods_help()}); attached servers: a label of what the server runs; "
        "mock: none = k 0 (docs/engines.md)"
    ),
]
LaunchOpt = Annotated[
    bool,
    typer.Option(
        "--launch",
        help=f"start the engine's server ({', '.join(registry.launchable())}) on a free port, log in the run "
        "dir, stop it at the end",
    ),
]
ServerBin = Annotated[
    Optional[str],
    typer.Option(
        help="with --launch: the server executable (llama-server, trtllm-serve) or the Python that has vllm/sglang"
    ),
]
ServerArg = Annotated[
    list[str],
    typer.Option(
        "--server-arg",
        help="with --launch: extra server argument, verbatim (repeatable), e.g. --server-arg=--enforce-eager",
    ),
]
DraftModel = Annotated[
    Optional[str], typer.Option(help="draft model (or EAGLE head) for --sd draft/eagle (same tokenizer as the target)")
]
MetricsUrl = Annotated[Optional[str], typer.Option(help="Prometheus /metrics URL (default: the server's /metrics)")]
EndpointOpt = Annotated[str, typer.Option(help="chat or completions")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="embedded name (starter) or .jsonl/.parquet path")]
NumRequests = Annotated[
    Optional[int], typer.Option("--num-requests", "-n", help="conversations to run, picked round-robin over categories")
]
SeedOpt = Annotated[int, typer.Option(help="the one seed: the stratified pick and each request's sampling seed")]
RequestSeed = Annotated[
    bool,
    typer.Option(
        "--request-seed",
        help="send each request's sampling seed (derived from --seed, question id and turn) to HTTP servers",
    ),
]
Concurrency = Annotated[int, typer.Option("--concurrency", "-c")]
DraftLength = Annotated[int, typer.Option("--draft-length", "-k", help="draft tokens per step (engines that take it)")]
OutputLen = Annotated[Optional[int], typer.Option(help="max output tokens per turn (default 256; reference engine 32)")]
Temperature = Annotated[float, typer.Option()]
IgnoreEos = Annotated[bool, typer.Option("--ignore-eos", help="ask the server to ignore EOS")]
Warmup = Annotated[int, typer.Option(help="warm-up requests (not recorded)")]
Timeout = Annotated[
    Optional[float],
    typer.Option(help="per-request timeout, seconds (default: 300 for a server, none for an in-process engine)"),
]
MaxFailed = Annotated[
    float,
    typer.Option(help="exit 1 when more than this share of requests failed (0..1; every request failing always does)"),
]
Breaker = Annotated[
    int,
    typer.Option(
        help="stop dispatching after N consecutive connection-level failures (connect error, reset, timeout): the "
        "run ends interrupted (exit 75) and --resume retries what failed; 0: never stop"
    ),
]

RequestRate = Annotated[
    Optional[float],
    typer.Option(
        help="open loop: conversations arrive at this many a second (seeded gaps; later turns follow their "
        "predecessors); --concurrency given too caps those in flight, else no cap (docs/load.md)"
    ),
]
Burstiness = Annotated[
    float, typer.Option(help="with --request-rate: gamma shape of the gaps (1 Poisson, < 1 burstier, > 1 regular)")
]
RampUp = Annotated[
    Optional[float],
    typer.Option("--ramp-up", help="closed loop: spread the first wave's starts over this many seconds"),
]
Duration = Annotated[
    Optional[float], typer.Option(help="send no turn after this many seconds (in-flight requests finish)")
]

ClientRay = Annotated[
    Optional[str],
    typer.Option(
        "--ray",
        help="run the --client-procs N client workers as Ray actors on a cluster: local, auto (the cluster this "
        "machine is in) or an address; the server must be reachable from its nodes; `off` on --resume runs the rest "
        "here; needs speedbench[ray] (docs/scale.md)",
    ),
]

ClientProcs = Annotated[
    str,
    typer.Option(
        help="split the load over N client processes, each with its own event loop, one writer (HTTP engines); "
        "auto: as many as the chunk rate the warm-up measured needs (docs/scale.md)"
    ),
]


def _procs(value: str | int) -> int:
    """--client-procs: a positive number, or auto (0)."""
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(f"--client-procs {value!r}: expected a positive number of processes or auto")
    return n


# flag (parameter name) -> the RunConfig field it sets, dotted; what `run --resume` compares with the saved run
FLAG_FIELDS = {
    "engine": "engine.kind",
    "base_url": "engine.base_url",
    "model": "engine.model",
    "metrics_url": "engine.metrics_url",
    "endpoint": "engine.endpoint",
    "sd": "engine.sd",
    "draft_model": "engine.draft_model",
    "launch": "engine.launch",
    "server_bin": "engine.server_bin",
    "server_arg": "engine.server_args",
    "engine_opt": "engine.options",
    "request_seed": "engine.request_seed",
    "dataset": "dataset.name",
    "num_requests": "dataset.num_requests",
    "max_turns": "dataset.max_turns",
    "concurrency": "concurrency",
    "draft_length": "draft_length",
    "output_len": "output_len",
    "temperature": "temperature",
    "ignore_eos": "ignore_eos",
    "warmup": "warmup",
    "timeout": "timeout_s",
    "request_rate": "request_rate",
    "burstiness": "burstiness",
    "ramp_up": "ramp_up_s",
    "duration": "duration_s",
    "client_procs": "client_procs",
    "ray": "client_ray",
    "max_failed": "max_failed",
    "breaker": "breaker",
    "out": "out",
    "seed": "seed",
}


def given_flags(ctx: typer.Context) -> dict[str, str]:
    """The flags the user typed (or set in the environment), as {RunConfig field: "--flag"}."""
    out: dict[str, str] = {}
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        # compared by name: typer may bring its own copy of click's ParameterSource enum
        if name in FLAG_FIELDS and source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            out[FLAG_FIELDS[name]] = "--" + name.replace("_", "-")
    return out
