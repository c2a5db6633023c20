"""``speedbench sweep``: flags (and a TOML file) -> SweepConfig (usecases/sweep/plan.py) -> the runner
(usecases/sweep/runner.py); plan, progress lines."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from pydantic import ValidationError

from speedbench.cli.common import (
    fail,
    log_errors_to,
    one_line,
    print_page,
    progress_bar,
    protect_console,
    user_errors,
)  # fmt: skip
from speedbench.cli.options import RUN_SETTINGS, Flags, options, typed
from speedbench.config.flags import Setting, by_param, nest
from speedbench.config.sweep import SweepConfig, pairs
from speedbench.errors import InvalidInput

if TYPE_CHECKING:
    from rich.console import Console

    from speedbench.config import EngineSpec
    from speedbench.results.sweep_manifest import SweepDir, SweepManifest
    from speedbench.usecases.sweep.plan import SweepPlan
    from speedbench.usecases.sweep.runner import SweepEvent

# a long cell prints a line this often when the output is not a terminal (CI, nohup): alive, never spam
HEARTBEAT_S = 60.0

# the base run config's flags the sweep takes (every cell's [run] settings), in help order
RUN_FLAGS = (
    "engine", "base_url", "model", "launch", "server_bin", "server_arg", "draft_model", "metrics_url", "endpoint",
    "engine_opt", "num_requests", "seed", "request_seed", "max_turns", "output_len", "temperature", "warmup",
    "timeout", "max_failed", "breaker",
)  # fmt: skip
# the sweep's settings with a flag: those of the base run config (under run.), the grid's and the sweep's own
SWEEP_SETTINGS: dict[str, Setting] = {
    **{name: Setting(f"run.{RUN_SETTINGS[name].path}", RUN_SETTINGS[name].field, RUN_SETTINGS[name].flag)
       for name in RUN_FLAGS},
    **by_param(SweepConfig, skip=("run",)),
}  # fmt: skip
# the servers' URLs, whose credentials are never saved: --resume takes them again
SECRET_URL_FLAGS = {name for name, s in SWEEP_SETTINGS.items() if s.flag.secret_url}
# what --resume takes again: those URLs and how to run
RESUME_FLAGS = {
    "resume", "retry_failed", "progress", "plan", "html", "ray", "ray_resource", "ray_gpus", "ray_shared_dir",
} | SECRET_URL_FLAGS  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(sweep)


@options(
    "config", "plan", "resume", "retry_failed", "out", "concurrency", "draft_length", "sd", "dataset", "grid_opt",
    "baseline", "repeats", "order", "url", *RUN_FLAGS[:14], "output_len", "temperature", "ignore_eos", "warmup",
    "timeout", "max_failed", "breaker", "progress", "ray", "ray_resource", "ray_gpus", "ray_shared_dir", "html",
    "adaptive", "slo", "max_cells",
    settings=SWEEP_SETTINGS,
    but={"output_len": {"help": "max output tokens per turn, every cell (default: the engine's)"}},
)  # fmt: skip
def sweep(
    ctx: typer.Context,
    flags: Flags,
    config: Annotated[
        Optional[str],
        typer.Option("--config", help="TOML file: tables grid, run (a run config), urls; key out; flags override it"),
    ] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="print the cells, the engine starts and the work, then exit without running")
    ] = False,
    resume: Annotated[
        Optional[str],
        typer.Option(help="finish the sweep in this directory: the interrupted cell (run --resume), then the rest"),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="with --resume: run the failed cells again too")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            help="run the launch groups as Ray tasks: 'local' (a Ray instance on this machine), 'auto' (the cluster "
            "this machine is in) or a cluster address; needs speedbench[ray] (docs/scale.md)",
        ),
    ] = None,
    ray_resource: Annotated[
        list[str],
        typer.Option(
            "--ray-resource", help="with --ray: a resource every group's task asks for, NAME=AMOUNT (repeatable)"
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    ray_gpus: Annotated[float, typer.Option(help="with --ray: GPUs each group's task asks for")] = 0.0,
    ray_shared_dir: Annotated[
        Optional[str],
        typer.Option(
            help="with --ray: a folder every node and this machine see (NFS, a mounted bucket); tasks write the cells "
            "there and return only where, instead of returning every file through Ray"
        ),
    ] = None,
    html: Annotated[
        bool,
        typer.Option(
            "--html/--no-html",
            help="at the end, write SWEEP_DIR/report.html: the sweep report with figures (docs/report.md)",
        ),
    ] = True,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="with --slo: measure a coarse grid, fit the speedup model, measure what it names, refit, until a "
            "measured cell confirms the answer or --max-cells is spent (docs/model.md)",
        ),
    ] = False,
    slo: Annotated[
        Optional[str], typer.Option(help="with --adaptive: the service-level objective, e.g. 'user_tps>=30'")
    ] = None,
    max_cells: Annotated[int, typer.Option(help="with --adaptive: the most cells to run in all")] = 20,
) -> None:
    """Run a grid of benchmark runs (SD settings x concurrency x dataset x engine options, each SD cell paired with
    its SD-off baseline), one run directory per cell, resumable.  Exit 0 when every cell is complete, 1 when some
    cell failed, 2 for bad input, 130 when interrupted (finish with --resume DIR)."""
    from speedbench.report.console import make_console
    from speedbench.usecases.sweep import plan as plan_uc
    from speedbench.usecases.sweep import runner as uc

    console = make_console()
    protect_console()
    given = typed(ctx)
    try:
        opened = _open(flags, given, resume, config, retry_failed, adaptive, slo, plan, ray)
        if isinstance(opened, SweepConfig):
            assert slo is not None  # _open refuses --adaptive without --slo
            _adaptive(opened, slo, max_cells, console, progress)
            return
        the_plan, sdir, saved = opened
        protect_console(plan_uc.sweep_secrets(the_plan.config))
    except user_errors() as e:
        fail(one_line(e))
        return

    if plan:
        print_plan(the_plan, console, saved)
        return
    try:
        if saved is None:
            sdir, manifest = plan_uc.create(the_plan)
        else:
            manifest = saved
    except user_errors() as e:
        fail(one_line(e))
        return
    assert sdir is not None  # created, or reopened by --resume
    log_errors_to(sdir.path)  # an internal error's traceback also goes to SWEEP_DIR/error.log
    view = ProgressView(the_plan, console, progress and console.is_terminal)
    kind = the_plan.config.run.engine.kind
    console.print(
        f"speedbench sweep: engine={kind}, {len(the_plan.cells)} cells in {len(the_plan.groups)} launch groups "
        f"-> {the_plan.out}" + (" (resuming)" if saved is not None else ""),
        soft_wrap=True,
    )
    if saved is not None:
        counts = saved.counts()
        console.print("resuming: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())), soft_wrap=True)
    resources = _ray_resources(ray, list(ray_resource), ray_gpus, ray_shared_dir)
    errors: tuple[type[BaseException], ...] = (*user_errors(), ImportError, ConnectionError)
    try:
        view.start()
        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        if ray is not None:
            from speedbench.usecases.sweep.ray import run_sweep_ray

            final = run_sweep_ray(
                the_plan, sdir, manifest, ray, resources, ray_gpus, view.on_event, None, retry_failed, sigs,
                resume=saved is not None, shared=ray_shared_dir,
            )  # fmt: skip
        else:
            final = uc.run_sweep(
                the_plan, sdir, manifest, view.on_event, retry_failed=retry_failed, signals=sigs,
                resume=saved is not None,
            )  # fmt: skip
    except errors as e:  # the directory is being run by another process; ray missing or unreachable
        fail(one_line(e))
        return
    finally:
        view.stop()
    status = uc.exit_status(final)
    print_end(final, the_plan, console)
    if html and final.status != "interrupted":
        write_sweep_html(Path(the_plan.out), console)
    if status:
        raise typer.Exit(status)


def _open(
    flags: Flags,
    given: set[str],
    resume: str | None,
    config: str | None,
    retry_failed: bool,
    adaptive: bool,
    slo: str | None,
    plan: bool,
    ray: str | None,
) -> tuple[SweepPlan, SweepDir | None, SweepManifest | None] | SweepConfig:
    """What the flags ask for: a resumed sweep (its plan, directory and saved manifest), a new one (its plan), or
    an adaptive one (its config: the rounds are planned as they go); refused in one line."""
    from speedbench.usecases.sweep import plan as plan_uc

    if resume is not None:
        extra = sorted(given - RESUME_FLAGS)
        if extra:
            flag = "--" + extra[0].replace("_", "-")
            raise plan_uc.SweepConfigError(
                f"{flag} with --resume: a resumed sweep keeps its grid and settings (only --base-url, "
                "--metrics-url and --url may be given again, for their credentials); start a new sweep to change it"
            )
        try:
            again = plan_uc.SweepConfig.model_validate(flags_dict(flags, given & SECRET_URL_FLAGS))
        except ValidationError as e:
            raise InvalidInput.of(e) from None
        reopened = plan_uc.resume_plan(resume, again)
        if ray is not None and reopened[0].config.order != "grid":
            raise plan_uc.SweepConfigError(
                f"--ray with --resume {resume}: the sweep runs in --order {reopened[0].config.order}, whose cells "
                "interleave launch groups; resume it without --ray"
            )
        return reopened
    if retry_failed:
        raise plan_uc.SweepConfigError("--retry-failed goes with --resume DIR")
    data = plan_uc.read_toml(config) if config is not None else {}
    cfg = plan_uc.sweep_config(plan_uc.merge(data, flags_dict(flags, given)))
    protect_console(plan_uc.sweep_secrets(cfg))
    if adaptive or slo is not None:
        if not (adaptive and slo):
            raise plan_uc.SweepConfigError("--adaptive and --slo go together")
        if plan:
            raise plan_uc.SweepConfigError("--plan with --adaptive: the rounds depend on what is measured")
        if ray is not None:
            raise plan_uc.SweepConfigError("--ray with --adaptive: adaptive rounds run on this machine")
        if cfg.order != "grid":
            raise plan_uc.SweepConfigError(f"--order {cfg.order} with --adaptive: each round runs in grid order")
        return cfg
    if ray is not None and cfg.order != "grid":
        raise plan_uc.SweepConfigError(
            f"--order {cfg.order} with --ray: each launch group runs as one Ray task, so its cells cannot interleave "
            "with another group's; drop --ray or --order"
        )
    return plan_uc.build_plan(cfg), None, None


def _ray_resources(
    ray: str | None, ray_resource: list[str], ray_gpus: float, ray_shared_dir: str | None
) -> dict[str, float]:
    """--ray-resource NAME=AMOUNT as a dict; the --ray-* flags refused in one line without --ray, or a shared
    folder that is not there."""
    try:
        resources = {k: float(v) for k, v in pairs("--ray-resource", ray_resource)}
    except ValueError:
        fail(f"--ray-resource {ray_resource}: expected NAME=AMOUNT with a number, e.g. --ray-resource node_a=1")
        raise  # unreachable: fail exits
    if (resources or ray_gpus or ray_shared_dir) and ray is None:
        fail("--ray-resource, --ray-gpus and --ray-shared-dir go with --ray ADDRESS")
    if ray_shared_dir and not os.path.isdir(ray_shared_dir):
        fail(f"--ray-shared-dir {ray_shared_dir}: no such folder here (it must be a folder every node sees too)")
    return resources


def write_sweep_html(out: Path, console: Console) -> None:
    """SWEEP_DIR/report.html (what ``speedbench report SWEEP_DIR --html`` writes); a sweep whose cells have no
    figures, or a missing ``report`` extra, gets one line, never a failed sweep."""
    from rich.markup import escape

    from speedbench.usecases.report import SWEEP_PAGE, open_sweep, write_sweep_page

    errors: tuple[type[BaseException], ...] = (*user_errors(), OSError)
    try:
        report = open_sweep(out)
    except errors as e:
        console.print(escape(f"no report.html: {one_line(e)}"), soft_wrap=True)
        return
    print_page(lambda: write_sweep_page(report), str(out / SWEEP_PAGE), console, strict=False)


def _adaptive(cfg: Any, slo: str, max_cells: int, console: Console, progress: bool) -> None:
    from rich.markup import escape

    from speedbench.usecases.sweep import adaptive as ad
    from speedbench.usecases.sweep import plan as plan_uc

    out = cfg.out or plan_uc.default_out(f"{cfg.run.engine.kind}-adaptive")

    def say(line: str) -> None:
        console.print(escape(line), soft_wrap=True, highlight=False)

    def on_event(e: Any) -> None:  # one line per cell: the rounds' own progress
        if e.kind == "cell_done" and e.cell is not None:
            c = e.manifest.cell(e.cell)
            say(f"  [{e.done}/{e.total}] {c.id}: {c.status}" + (f" ({c.cause})" if c.cause else ""))

    say(f"speedbench sweep --adaptive: SLO {slo}, at most {max_cells} cells -> {out}")
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    result = ad.run_adaptive(cfg, slo, max_cells, out, on_event, say, signals)
    a = result.answer.answer if result.answer is not None else None
    if a is None:
        say(f"no configuration meets the SLO ({result.stop}); {result.cells_run} cells run")
    else:
        what = "SD off" if a.k == 0 else f"k {a.k}"
        say(
            f"answer: {what} at concurrency {a.concurrency}: output {a.output_tps[0]:,.1f} tok/s "
            f"[{a.output_tps[1]:,.1f}, {a.output_tps[2]:,.1f}], per user {a.user_tps[0]:,.1f} tok/s; "
            f"{'confirmed by measurement' if result.answer and result.answer.confirmed else 'NOT confirmed'} "
            f"({result.stop}); {result.cells_run} cells run"
        )
    say(f"rounds and answer: {out}/adaptive.json; each round a sweep directory (speedbench report / model on it)")
    if result.exit_status:
        raise typer.Exit(result.exit_status)


# ---------------------------------------------------------------------------------------------- flags


def flags_dict(flags: Flags, given: set[str]) -> dict[str, Any]:
    """The given flags as the TOML-shaped dict ``sweep_config`` reads (merged over the file's), each flag's text
    parsed into its field's value."""
    return nest(flags.field_values(sorted(given & set(flags.settings))))


# ---------------------------------------------------------------------------------------------- output


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    """Plain aligned text: ids are never cut or wrapped (greppable in a CI log)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def print_plan(plan: SweepPlan, console: Console, saved: SweepManifest | None = None) -> None:
    """The cells, the engine starts (launch groups) and the work; nothing is started."""
    from rich.markup import escape

    def say(text: str) -> None:
        console.print(escape(text), soft_wrap=True, highlight=False)

    cfg = plan.config
    e = cfg.run.engine
    status = {c.id: c.status for c in saved.cells} if saved is not None else {}
    say(
        f"sweep plan: engine={e.kind}{' --launch' if e.launch else ''}, {len(plan.cells)} cells in "
        f"{len(plan.groups)} launch groups"
        + (f" ({cfg.grid.repeats} repeats of each cell)" if cfg.grid.repeats > 1 else "")
        + f" -> {plan.out}"
    )
    if cfg.order == "abba":
        say(
            "order: abba (each SD cell next to its SD-off pair, alternating which runs first; the engines of the "
            "interleaved groups are held at once)"
        )
    say("launch groups (one engine start each):")
    rows = [
        [g.id, str(g.max_concurrency), str(len(g.cells)), plan.commands.get(g.id, "-" if not e.launch else "?")]
        for g in plan.groups
    ]
    for line in _columns(["group", "max_concurrency", "cells", "server command (its port is picked at start)"], rows):
        say("  " + line)
    say("cells (each an ordinary run directory under cells/):")
    header = ["cell", "sd", "k", "c", "dataset", "requests", "output_tokens", "group", "baseline"]
    rows = []
    for c in plan.cells:
        w = plan.work[c.id]
        row = [
            c.id,
            c.settings.sd,
            str(c.settings.k),
            str(c.settings.concurrency),
            c.settings.dataset,
            str(w.requests),
            f"{'' if w.exact_tokens else '<='}{w.output_tokens}",
            c.group,
            c.baseline or "-",
        ]
        rows.append([*row, status[c.id]] if status else row)
    for line in _columns([*header, "status"] if status else header, rows):
        say("  " + line)
    todo = [c.id for c in plan.cells if status.get(c.id, "pending") != "complete"]
    if not todo:
        say("work: nothing left to run (every cell complete)")
        say("nothing was started (--plan)")
        return
    works = [plan.work[c] for c in todo]
    requests = sum(w.requests for w in works)
    warmup = sum(w.warmup for w in works)
    tokens = sum(w.output_tokens for w in works)
    exact = all(w.exact_tokens for w in works)
    seconds = [w.seconds for w in works]
    time_text = (
        f"about {_duration(sum(s for s in seconds if s is not None))} ({plan.timing})"
        if all(s is not None for s in seconds)
        else plan.timing
    )
    starts = len({plan.cell(c).group for c in todo})
    say(
        f"work: {len(todo)} cells, {starts} engine starts, {requests:,} requests (+{warmup} warm-up), "
        f"{'' if exact else 'at most '}{tokens:,} output tokens"
        f"{' (ignore_eos: exact)' if exact else ' (ignore_eos off where a dataset is not throughput/synthetic)'}; "
        f"time: {time_text}"
    )
    say("nothing was started (--plan)")


def print_end(manifest: SweepManifest, plan: SweepPlan, console: Console) -> None:
    from rich.markup import escape

    counts = manifest.counts()
    total = len(manifest.cells)
    where = f"sweep directory: {plan.out} (sweep.json; cells/<cell id>/ are run directories)"
    if manifest.status == "interrupted":
        console.print(
            escape(
                f"sweep INTERRUPTED: {counts.get('complete', 0)} of {total} cells complete; finish with: "
                f"speedbench sweep --resume {plan.out}"
            ),
            style="yellow",
            soft_wrap=True,
        )
    elif manifest.status == "complete":
        console.print(f"sweep complete: {total} of {total} cells complete", style="bold green", soft_wrap=True)
    else:
        bad = [c for c in manifest.cells if c.status != "complete"]
        console.print(
            escape(
                f"sweep FAILED: {len(bad)} of {total} cells not complete: "
                + "; ".join(f"{c.id} {c.status}: {c.cause}" for c in bad[:5])
                + (" ..." if len(bad) > 5 else "")
                + f" (speedbench sweep --resume {plan.out} finishes interrupted cells; --retry-failed reruns failed)"
            ),
            style="bold red",
            soft_wrap=True,
        )
    line = cost_line(manifest, plan.config.run.engine)
    if line:
        console.print(escape(line), soft_wrap=True, highlight=False)
    console.print(escape(where), soft_wrap=True, highlight=False)


def cost_line(manifest: SweepManifest, engine: EngineSpec) -> str:
    """What the sweep cost the client: CPU seconds over the cells' wall time, peak memory; and the launched
    servers' CPU seconds, the engine's side, when speedbench started them."""
    cost = manifest.cost()
    wall, cpu, rss, server = cost["wall_s"], cost["client_cpu_s"], cost["client_max_rss_mb"], cost["server_cpu_s"]
    if not wall or cpu is None:
        return ""
    from speedbench.engines import registry

    text = f"client cost: {cpu:,.1f} CPU s over {wall:,.1f} s of cells ({cpu / wall:.0%} of one core)"
    text += f", peak memory {rss:,.0f} MiB" if rss else ""
    if registry.capabilities(engine.kind).in_process:
        text += f" (the in-process {engine.kind} engine's work included)"
    if server is not None:
        text += f"; launched servers: {server:,.1f} CPU s"
    return text


class ProgressView:
    """One line per cell start and finish (cells done / total, the cell's own figures, elapsed, ETA); on a terminal
    a live bar for the running cell, elsewhere (CI, nohup) at most a line a minute while a long cell runs."""

    def __init__(self, plan: SweepPlan, console: Console, live: bool) -> None:
        self.plan = plan
        self.console = console
        self.bar: Any = None
        self.task: Any = None
        self.last_line = 0.0
        if live:
            self.bar = progress_bar(console, transient=True)

    def start(self) -> None:
        if self.bar is not None:
            self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def say(self, text: str, style: str | None = None) -> None:
        from rich.markup import escape

        target = self.bar.console if self.bar is not None else self.console
        target.print(escape(text), style=style, soft_wrap=True, highlight=False)
        self.last_line = time.monotonic()

    def on_event(self, ev: SweepEvent) -> None:
        m = ev.manifest
        head = f"[{ev.done}/{ev.total}]"
        clock = f"elapsed {_duration(ev.elapsed_s)}, ETA {_duration(ev.eta_s)}"
        if ev.kind == "group_start" and ev.group is not None:
            g = m.group(ev.group)
            if self.plan.config.run.engine.launch:
                self.say(f"{head} launch group {g.id}: starting the server (max concurrency {g.max_concurrency})")
        elif ev.kind == "group_started" and ev.group is not None:
            g = m.group(ev.group)
            if self.plan.config.run.engine.launch:
                self.say(f"{head} launch group {g.id}: server up in {_num(g.startup_s, 1)} s")
            elif (g.startup_s or 0) >= 1.0:  # an in-process engine loading its model
                self.say(f"{head} launch group {g.id}: engine started in {_num(g.startup_s, 1)} s")
        elif ev.kind == "group_failed" and ev.group is not None:
            g = m.group(ev.group)
            self.say(f"{head} launch group {g.id}: {g.start_error}; its {len(g.cells)} cells failed", "bold red")
        elif ev.kind == "cell_start" and ev.cell is not None:
            c = m.cell(ev.cell)
            again = " (resumed)" if c.segments > 1 else ""
            self.say(f"{head} {c.id}: running{again}, {self.plan.work[c.id].requests} requests | {clock}")
            if self.bar is not None:
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(c.id, total=self.plan.work[c.id].requests, live="")
        elif ev.kind == "cell_progress" and ev.progress is not None and ev.cell is not None:
            p = ev.progress
            if self.bar is not None and self.task is not None:
                self.bar.update(self.task, completed=p.done, live=p.line())
            elif time.monotonic() - self.last_line >= HEARTBEAT_S:
                self.say(f"{head} {ev.cell}: {p.done}/{p.total} requests, {p.line()} | {clock}")
        elif ev.kind == "cell_done" and ev.cell is not None:
            if self.bar is not None and self.task is not None:
                self.bar.remove_task(self.task)
                self.task = None
            c = m.cell(ev.cell)
            if c.status == "complete":
                self.say(
                    f"{head} {c.id}: complete, {c.requests} requests, {c.errors} errors, AL "
                    f"{_num(c.acceptance_length)}, {_num(c.output_tps, 1)} output tok/s, "
                    f"{_num(c.duration_s, 1)} s | {clock}"
                )
            else:
                self.say(f"{head} {c.id}: {c.status.upper()}: {c.cause} | {clock}", "bold red")
