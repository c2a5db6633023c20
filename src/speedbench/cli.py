"""The ``speedbench`` command line (typer).  Heavy modules are imported inside commands."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated, Any, Optional

import typer

from speedbench.cli_common import one_line, user_errors, fail
from speedbench.cli_data import data_app

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmark speculative decoding in LLM serving engines (SPEED-Bench and beyond).")
app.add_typer(data_app, name="data")


EngineOpt = Annotated[list[str], typer.Option("-E", "--engine-opt",
                      help="engine option key=value (repeatable), e.g. -E acceptance=0.8,0.6,0.4 -E step_ms=5")]


def _config(flags: dict[str, Any]) -> Any:
    """The RunConfig that the flags of `run` / `check-lossless` (their locals) describe."""
    from speedbench.config import DatasetSpec, EngineSpec, RunConfig, parse_engine_options

    f = flags
    return RunConfig(
        engine=EngineSpec(kind=f["engine"], base_url=f.get("base_url"), model=f.get("model"),
                          metrics_url=f.get("metrics_url"), endpoint=f.get("endpoint", "chat"), sd=f.get("sd"),
                          draft_model=f.get("draft_model"), launch=f.get("launch", False),
                          server_bin=f.get("server_bin"), server_args=list(f.get("server_arg") or []),
                          options=parse_engine_options(list(f.get("engine_opt") or []))),
        dataset=DatasetSpec(name=f["dataset"], num_requests=f.get("num_requests"), seed=f.get("seed", 0),
                            max_turns=f.get("max_turns")),
        concurrency=f["concurrency"], draft_length=f["draft_length"], output_len=f.get("output_len"),
        temperature=f["temperature"], ignore_eos=f["ignore_eos"], warmup=f["warmup"], timeout_s=f["timeout"],
        out=f.get("out"))


# Options shared by `run` and `check-lossless` (one definition each).
EngineName = Annotated[str, typer.Option("--engine", "-e", help="engine name (see `speedbench engines`)")]
BaseUrl = Annotated[Optional[str], typer.Option(help="server URL for HTTP engines, e.g. http://127.0.0.1:8000/v1")]
ModelOpt = Annotated[Optional[str], typer.Option(help="reference: HF folder, .gguf or 'smollm2' (default); --launch: the model the server loads; attached HTTP engines: model name sent (default: first of /v1/models)")]
SdOpt = Annotated[Optional[str], typer.Option(help="SD method (reference: none|ngram|draft, default ngram; vllm: none|ngram|draft|eagle|eagle3|mtp; llamacpp: none|ngram|draft; sglang, trtllm: docs/engines.md)")]
LaunchOpt = Annotated[bool, typer.Option("--launch", help="start the engine's server (vllm, llamacpp, sglang, trtllm) on a free port, log in the run dir, stop it at the end")]
ServerBin = Annotated[Optional[str], typer.Option(help="with --launch: the server executable (llama-server, trtllm-serve) or the Python that has vllm/sglang")]
ServerArg = Annotated[list[str], typer.Option("--server-arg", help="with --launch: extra server argument, verbatim (repeatable), e.g. --server-arg=--enforce-eager")]
DraftModel = Annotated[Optional[str], typer.Option(help="draft model (or EAGLE head) for --sd draft/eagle (same tokenizer as the target)")]
MetricsUrl = Annotated[Optional[str], typer.Option(help="Prometheus /metrics URL (default: the server's /metrics)")]
EndpointOpt = Annotated[str, typer.Option(help="chat or completions")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="embedded name (starter) or .jsonl/.parquet path")]
NumRequests = Annotated[Optional[int], typer.Option("--num-requests", "-n", help="conversations to run, picked round-robin over categories")]
SeedOpt = Annotated[int, typer.Option(help="seed for the stratified pick")]
Concurrency = Annotated[int, typer.Option("--concurrency", "-c")]
DraftLength = Annotated[int, typer.Option("--draft-length", "-k", help="draft tokens per step (engines that take it)")]
OutputLen = Annotated[Optional[int], typer.Option(help="max output tokens per turn (default 256; reference engine 32)")]
Temperature = Annotated[float, typer.Option()]
IgnoreEos = Annotated[bool, typer.Option("--ignore-eos", help="ask the server to ignore EOS")]
Warmup = Annotated[int, typer.Option(help="warm-up requests (not recorded)")]
Timeout = Annotated[float, typer.Option(help="per-request timeout, seconds")]


@app.command()
def run(
    engine: EngineName = "reference",
    base_url: BaseUrl = None,
    model: ModelOpt = None,
    sd: SdOpt = None,
    launch: LaunchOpt = False,
    server_bin: ServerBin = None,
    server_arg: ServerArg = [],  # noqa: B006 - typer needs a literal default
    draft_model: DraftModel = None,
    metrics_url: MetricsUrl = None,
    endpoint: EndpointOpt = "chat",
    engine_opt: EngineOpt = [],  # noqa: B006
    dataset: DatasetOpt = "starter",
    num_requests: NumRequests = None,
    seed: SeedOpt = 0,
    max_turns: Annotated[Optional[int], typer.Option(help="keep only the first N turns of each conversation")] = None,
    concurrency: Concurrency = 32,
    draft_length: DraftLength = 3,
    output_len: OutputLen = None,
    temperature: Temperature = 0.0,
    ignore_eos: IgnoreEos = False,
    warmup: Warmup = 2,
    timeout: Timeout = 300.0,
    out: Annotated[Optional[str], typer.Option(help="run directory (default runs/<UTC time>-<engine>)")] = None,
    resume: Annotated[Optional[str], typer.Option(help="finish an interrupted run in this directory")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Run a benchmark and write a run directory (manifest, records, summary)."""
    from speedbench.report.console import make_console, print_summary
    from speedbench.run import execute, finish, prepare

    console = make_console()
    try:
        cfg = _config(locals())
        if resume is None:
            from speedbench.engines import registry
            registry.resolve(cfg.engine.kind)  # fail fast on a bad engine name
        cfg, run_dir, samples, done, manifest = prepare(cfg, resume)
    except user_errors() as e:
        fail(one_line(e))
        return

    bar: Any = None
    task_id: Any = None
    if progress and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("{task.fields[live]}"), console=console)
        total = sum(len(s.turns) for s in samples)
        task_id = bar.add_task(f"{cfg.engine.kind}", total=total, live="")

    def on_progress(p: Any) -> None:
        if bar is not None:
            bar.update(task_id, completed=p.done, live=p.line())

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, me.cancel)
        return await execute(cfg, run_dir, samples, done, manifest, on_progress)

    sd_text = f" sd={cfg.engine.sd}" if cfg.engine.sd else ""
    console.print(f"speedbench run: engine={cfg.engine.kind}{sd_text} dataset={cfg.dataset.name} "
                  f"conversations={len(samples)} concurrency={cfg.concurrency} k={cfg.draft_length} "
                  f"output_len={cfg.output_len} -> {run_dir.path}")
    try:
        if bar is not None:
            bar.start()
        completed = asyncio.run(main())
    except asyncio.CancelledError:
        completed = False
    except user_errors() as e:
        fail(one_line(e))
        return
    finally:
        if bar is not None:
            bar.stop()
    summary = finish(run_dir)
    print_summary(summary, console)
    console.print(f"run directory: {run_dir.path}")
    if not completed:
        console.print(f"interrupted: {summary['overall']['requests'] + summary['overall']['errors']} finished records "
                      f"kept in {run_dir.records_path}; finish with: speedbench run --resume {run_dir.path}",
                      style="yellow")
        raise typer.Exit(130)


@app.command()
def report(
    run_dirs: Annotated[list[str], typer.Argument(help="one run directory, or two to compare (baseline first)")],
) -> None:
    """Recompute summaries from records.jsonl + manifest.json and print the tables."""
    from speedbench.report.console import comparison_table, make_console, print_summary
    from speedbench.results.rundir import RunDir
    from speedbench.run import finish

    console = make_console()
    if len(run_dirs) > 2:
        fail("report takes one run directory, or two to compare")
    summaries = []
    for d in run_dirs:
        try:
            summaries.append(finish(RunDir(d)))
        except user_errors() as e:
            fail(one_line(e))
    for d, s in zip(run_dirs, summaries):
        console.print(f"[bold]{d}[/bold]")
        print_summary(s, console)
    if len(summaries) == 2:
        console.print(comparison_table(summaries[0], summaries[1], "A", "B"))
        console.print(f"A = {run_dirs[0]}, B = {run_dirs[1]}; speedup = mean user tok/s B / A "
                      "(paired by category; confidence intervals come later)")


@app.command("check-lossless")
def check_lossless(
    engine: EngineName = "reference",
    sd: SdOpt = None,
    base_url: Annotated[Optional[str], typer.Option(help="attached: the server with SD on")] = None,
    baseline_url: Annotated[Optional[str], typer.Option(help="attached: the same target with SD off")] = None,
    model: ModelOpt = None,
    launch: LaunchOpt = False,
    server_bin: ServerBin = None,
    server_arg: ServerArg = [],  # noqa: B006
    draft_model: DraftModel = None,
    engine_opt: EngineOpt = [],  # noqa: B006
    endpoint: EndpointOpt = "chat",
    dataset: DatasetOpt = "starter",
    num_requests: NumRequests = 22,
    seed: SeedOpt = 0,
    concurrency: Concurrency = 32,
    draft_length: DraftLength = 3,
    output_len: OutputLen = None,
    temperature: Temperature = 0.0,
    ignore_eos: IgnoreEos = False,
    warmup: Warmup = 2,
    timeout: Timeout = 300.0,
    score_model: Annotated[Optional[str], typer.Option(help="temperature > 0: the target model (HF folder, .gguf) that scores both runs' outputs (default --model)")] = None,
    control: Annotated[bool, typer.Option("--control", help="run the baseline twice to measure the engine's own run-to-run nondeterminism")] = False,
    out: Annotated[str, typer.Option(help="directory for baseline/, sd/ (control/) and lossless.json")] = "runs/lossless",
) -> None:
    """Run the same first turns with SD off and on; greedy: identical outputs? sampling: same target
    log-probability? Exit 0 when lossless, 1 when not."""
    from speedbench.check_lossless import check
    from speedbench.report.console import lossless_table, make_console

    console = make_console()
    try:
        cfg = _config({**locals(), "max_turns": 1})
        from speedbench.engines import registry
        registry.resolve(cfg.engine.kind)
        console.print(f"speedbench check-lossless: engine={engine} sd={sd} k={draft_length} T={temperature} -> {out}")
        result = check(cfg, baseline_url=baseline_url, score_model=score_model, control=control)
    except user_errors() as e:
        fail(one_line(e))
        return
    console.print(lossless_table(result))
    console.print(f"written: {out}/lossless.json")
    if not result["lossless"]:
        raise typer.Exit(1)


@app.command()
def engines() -> None:
    """List registered engines, their capabilities and whether they are installed."""
    from rich.table import Table

    from speedbench.engines import registry
    from speedbench.report.console import make_console

    t = Table(title="engines")
    for c in ("name", "installed", "extra", "capabilities", "what it is"):
        t.add_column(c)
    for name, entry in sorted(registry.available().items()):
        installed = registry.is_installed(entry)
        t.add_row(name, "yes" if installed else "no", entry.extra or "-",
                  registry.describe_capabilities(name) if installed else "-", entry.summary)
    make_console().print(t)


@app.command("serve-mock")
def serve_mock(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (printed)")] = 8000,
    k: Annotated[int, typer.Option("--k", "--draft-length", help="draft length")] = 3,
    acceptance: Annotated[str, typer.Option(help="conditional acceptance per position a1,...,ak")] = "0.8,0.6,0.4",
    ttft_ms: Annotated[float, typer.Option()] = 50.0,
    step_ms: Annotated[float, typer.Option(help="time per verification step")] = 10.0,
    output_len: Annotated[Optional[int], typer.Option(help="tokens per reply (default: request max_tokens)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    engine_opt: EngineOpt = [],  # noqa: B006
) -> None:
    """Serve the mock SD engine over OpenAI-compatible HTTP (SSE streaming, /metrics)."""
    from speedbench.config import parse_engine_options
    from speedbench.engines.mock import MockSettings
    from speedbench.engines.mock_server import serve

    try:
        opts: dict[str, Any] = {"k": k, "acceptance": acceptance, "ttft_ms": ttft_ms, "step_ms": step_ms,
                                "seed": seed, "output_len": output_len}
        opts.update(parse_engine_options(engine_opt))
        settings = MockSettings(**opts)
    except user_errors() as e:
        fail(one_line(e))
        return
    try:
        asyncio.run(serve(settings, host, port))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
