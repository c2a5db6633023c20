"""``speedbench run`` and ``speedbench check-lossless``: flags -> RunConfig -> the use cases in usecases/."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated, Any, Optional

import typer

from speedbench.cli.common import fail, log_errors_to, one_line, progress_bar, protect_console, user_errors
from speedbench.cli.options import Flags, options

# exit statuses of `run` (docs/reliability.md): 0 usable run; 1 failed (every request, or more than --max-failed);
# 2 bad input; 75 stopped by the circuit breaker (server unreachable: resumable, EX_TEMPFAIL); 130 interrupted
EXIT_FAILED, EXIT_STOPPED, EXIT_INTERRUPTED = 1, 75, 130


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command("check-lossless")(check_lossless)


RUN_OPTIONS = (
    "engine", "base_url", "model", "sd", "launch", "server_bin", "server_arg", "draft_model", "metrics_url", "endpoint",
    "engine_opt", "dataset", "num_requests", "seed", "request_seed", "max_turns", "concurrency", "draft_length",
    "output_len", "temperature", "ignore_eos", "warmup", "timeout", "max_failed", "breaker", "request_rate",
    "burstiness", "ramp_up", "duration", "client_procs", "ray", "...", "out", "resume", "progress",
)  # fmt: skip


@options(*RUN_OPTIONS)
def run(
    ctx: typer.Context,
    flags: Flags,
    resume: Annotated[
        Optional[str],
        typer.Option(
            help="finish an interrupted run in this directory: sends the turns not run and retries transport "
            "failures (connect_error, reset, timeout, http 5xx, prior_turn_failed); --base-url, --metrics-url, "
            "--concurrency, --timeout, --max-failed, --breaker and --warmup may change (recorded), other flags must "
            "match"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Run a benchmark and write a run directory (manifest, records, summary)."""
    from rich.markup import escape

    from speedbench.config import engine_secrets
    from speedbench.report.console import make_console, print_summary
    from speedbench.usecases import run as uc

    console = make_console()
    protect_console()  # URLs' userinfo never printed; the run's secret values join once known
    try:
        cfg = flags.config()
        given = flags.given()
        if cfg.request_rate is not None and "concurrency" in given:
            cfg = cfg.model_copy(update={"rate_cap": True})  # -c with --request-rate caps those in flight
        protect_console(engine_secrets(cfg.engine, os.environ))
        if resume is None:
            from speedbench.engines import registry

            registry.resolve(cfg.engine.kind)  # fail fast on a bad engine name
    except user_errors() as e:
        fail(one_line(e))
        return

    bar: Any = None
    task_id: Any = None
    started: list[uc.Started] = []

    def on_start(run: uc.Started) -> None:
        nonlocal bar, task_id
        started.append(run)
        protect_console(run.run_dir.secrets)  # a resumed run's: its saved api_key_env, the URLs it was given again
        log_errors_to(run.run_dir.path)  # an internal error's traceback also goes to RUN_DIR/error.log
        print_start(run, resume is not None, console)
        if progress and console.is_terminal:
            bar = progress_bar(console)
            task_id = bar.add_task(f"{run.cfg.engine.kind}", total=run.turns, live="")
            bar.start()

    def on_measure(mode: str, why: str) -> None:
        console.print(escape(f"measuring: {MEASUREMENT[mode]} ({why})"), soft_wrap=True)

    def on_progress(p: Any) -> None:
        if bar is not None:
            bar.update(task_id, completed=p.done, live=p.line())

    async def main() -> uc.Ended:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a closed terminal interrupts cleanly too
            loop.add_signal_handler(sig, me.cancel)
        return await uc.run(cfg, resume, given, on_start=on_start, on_progress=on_progress, on_measure=on_measure)

    try:
        end = asyncio.run(main())
    except asyncio.CancelledError:  # a signal as the run ended: what it wrote stands
        if not started:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        end = started[0].end("interrupted")
    except user_errors() as e:
        fail(one_line(e))
        return
    finally:
        if bar is not None:
            bar.stop()
    run_dir, outcome, summary, verdict = end.run_dir, end.outcome, end.result.summary, end.verdict
    print_summary(summary, console)
    for warm in end.result.manifest.warmup[len(end.started.manifest.warmup) :]:  # this segment's warm-up pass
        console.print(escape(warm.line()), soft_wrap=True, highlight=False)
    print_arrivals(end.result.manifest.arrivals, console)
    console.print(f"run directory: {run_dir.path}")
    if verdict is not None:
        console.print(escape(verdict), style="bold red", soft_wrap=True)
    if end.retryable_failures and outcome == "complete":
        console.print(
            f"{end.retryable_failures} failed turns are transport or server failures: speedbench run --resume "
            f"{run_dir.path} sends them again (the failed attempts stay in records.jsonl as history)",
            style="yellow",
            soft_wrap=True,
        )
    if outcome != "complete":
        cause = end.result.manifest.stop_cause or "interrupted"
        console.print(
            escape(
                f"run INTERRUPTED: {cause}. {summary.overall.requests + summary.overall.errors} finished records "
                f"kept in {run_dir.records_path}; finish with: speedbench run --resume {run_dir.path}"
            ),
            style="bold yellow" if outcome == "stopped" else "yellow",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_STOPPED if outcome == "stopped" else EXIT_INTERRUPTED)
    if verdict is not None:
        raise typer.Exit(EXIT_FAILED)


MEASUREMENT = {
    "mixed": "one window, every category at once",
    "per_category_windows": "per-category counter windows, the categories one after another (docs/metrics.md)",
}


def print_start(run: Any, resuming: bool, console: Any) -> None:
    """The run's first line (what runs where), and on --resume what is kept, retried and changed."""
    from rich.markup import escape

    cfg, manifest = run.cfg, run.manifest
    sd_text = f" sd={cfg.engine.sd}" if cfg.engine.sd else ""
    windows = manifest.measurement.mode if resuming and manifest.measurement else cfg.per_category_windows
    console.print(
        f"speedbench run: engine={cfg.engine.kind}{sd_text} dataset={cfg.dataset.name} "
        f"conversations={len(run.samples)} concurrency={cfg.concurrency} k={cfg.draft_length} "
        f"output_len={cfg.output_len} per-category-windows={windows} -> {run.run_dir.path}"
    )
    if resuming:
        retry = run.to_retry + run.to_rerun
        change = manifest.segment_changes[-1] if manifest.segment_changes else None
        changed = (
            "; changed for this segment: " + ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in change.changes.items())
            if change is not None and change.segment == manifest.next_segment
            else ""
        )
        rerun = f", {run.to_rerun} turns of unfinished category windows to run again" if run.to_rerun else ""
        console.print(
            escape(
                f"resuming: {len(run.done) - retry} turns kept, {run.to_retry} failed turns to retry{rerun}{changed}"
            ),
            soft_wrap=True,
        )


def print_arrivals(arrivals: list[dict[str, Any]], console: Any) -> None:
    """How the last segment's conversations were started, and a warning when the client fell behind."""
    from rich.markup import escape

    if not arrivals:
        return
    last = arrivals[-1]
    console.print(escape(str(last.get("summary", ""))), soft_wrap=True, highlight=False)
    if last.get("behind"):
        console.print(escape(f"WARNING: {last['behind']}"), style="bold yellow", soft_wrap=True)


@options(
    "engine", "sd", "base_url", "baseline_url", "model", "launch", "server_bin", "server_arg", "draft_model",
    "engine_opt", "endpoint", "dataset", "num_requests", "seed", "request_seed", "concurrency", "draft_length",
    "output_len", "temperature", "ignore_eos", "warmup", "timeout", "score_model", "control", "out",
    but={
        "base_url": {"help": "attached: the server with SD on"},
        "num_requests": {"default": 22},
        "out": {
            "type": str, "default": "runs/lossless", "help": "directory for baseline/, sd/ (control/) and lossless.json"
        },
    },
)  # fmt: skip
def check_lossless(
    flags: Flags,
    baseline_url: Annotated[Optional[str], typer.Option(help="attached: the same target with SD off")] = None,
    score_model: Annotated[
        Optional[str],
        typer.Option(
            help="temperature > 0: the target model (HF folder, .gguf) that scores both runs' outputs (default --model)"
        ),
    ] = None,
    control: Annotated[
        bool,
        typer.Option("--control", help="run the baseline twice to measure the engine's own run-to-run nondeterminism"),
    ] = False,
) -> None:
    """Run the same first turns with SD off and on; greedy: identical outputs? sampling: same target
    log-probability? Exit 0 when lossless, 1 when not, 3 when inconclusive (the engine is not deterministic, or
    the sampling scorer does not reproduce it, even without SD)."""
    from speedbench.config import Secrets, engine_secrets, url_secrets
    from speedbench.report.console import lossless_table, make_console
    from speedbench.usecases.check_lossless import EXIT_STATUS, check

    console = make_console()
    protect_console()
    try:
        cfg = flags.config(**{"dataset.max_turns": 1})
        protect_console(engine_secrets(cfg.engine, os.environ) | Secrets.of(*url_secrets(baseline_url)))
        from speedbench.engines import registry

        registry.resolve(cfg.engine.kind)
        console.print(
            f"speedbench check-lossless: engine={flags['engine']} sd={flags['sd']} k={flags['draft_length']} "
            f"T={flags['temperature']} -> {flags['out']}"
        )
        result = check(cfg, baseline_url=baseline_url, score_model=score_model, control=control)
    except user_errors() as e:
        fail(one_line(e))
        return
    console.print(lossless_table(result))
    console.print(f"written: {flags['out']}/lossless.json")
    status = EXIT_STATUS[result["verdict"]]
    if status:
        raise typer.Exit(status)
