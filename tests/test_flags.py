"""Settings declared once (config/flags.py, cli/options.py): the options of run / check-lossless / sweep are
generated from the Flag on each config field; the command-line surface is the one recorded before that change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from cli_surface import surface
from speedbench.cli.options import RUN_SETTINGS, Flags, by_param, options
from speedbench.config import RunConfig
from speedbench.config.flags import Flag, flag_fields, resume_changeable, walk
from speedbench.usecases.run import RESUME_CHANGEABLE

SURFACE = Path(__file__).parent / "fixtures" / "cli" / "options.json"


def test_every_commands_options_are_the_recorded_surface() -> None:
    """Names, short forms, defaults, help text, types of every option of every command, as before."""
    recorded = json.loads(SURFACE.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(surface()))
    assert sorted(now) == sorted(recorded)
    for command, params in recorded.items():
        assert now[command] == params, command


def test_each_flag_sets_one_field_and_the_maps_are_derived() -> None:
    FLAG_FIELDS = flag_fields(RunConfig)  # noqa: N806 - the table cli/options.py kept by hand before
    paths = {s.path for s in walk(RunConfig)}
    assert set(FLAG_FIELDS.values()) == paths and len(FLAG_FIELDS) == len(paths) == 33
    assert FLAG_FIELDS["timeout"] == "timeout_s" and FLAG_FIELDS["engine_opt"] == "engine.options"
    assert FLAG_FIELDS["ray"] == "client_ray" and FLAG_FIELDS["dataset"] == "dataset.name"
    assert {name: s.path for name, s in RUN_SETTINGS.items()} == FLAG_FIELDS
    # what --resume may change: the client side, in the order the refusal names them
    assert RESUME_CHANGEABLE == {
        "engine.base_url": "--base-url",
        "engine.metrics_url": "--metrics-url",
        "concurrency": "--concurrency",
        "warmup": "--warmup",  # a resumed run warms up again (its server may be cold again), as often as told
        "timeout_s": "--timeout",
        "max_failed": "--max-failed",
        "breaker": "--breaker",
        "client_procs": "--client-procs",
        "client_ray": "--ray",
    }


class _Toy(BaseModel):
    """A config with one nested section, to show that a flag is one field."""

    class Inner(BaseModel):
        name: Annotated[str, Flag("--name", "-N", help="a name")] = "x"

    inner: Inner = Field(default_factory=Inner)
    count: Annotated[int, Flag("--count", help="how many", resume=True)] = Field(3, ge=1)
    procs: Annotated[int, Flag("--procs", type=str, default="1", parse=lambda v: 0 if v == "auto" else int(v))] = 1
    unflagged: int = 0


def test_a_field_with_a_flag_is_an_option_with_no_other_edit() -> None:
    seen: dict[str, Any] = {}
    app = typer.Typer()

    @app.command()
    @options("...", "extra", settings=by_param(_Toy))
    def cmd(ctx: typer.Context, flags: Flags, extra: Annotated[int, typer.Option(help="own")] = 5) -> None:
        seen.update(values=flags.field_values(), given=flags.given(), extra=extra)

    runner = CliRunner()
    result = runner.invoke(app, ["--count", "7", "-N", "y", "--procs", "auto"])
    assert result.exit_code == 0, result.output
    assert seen == {"values": {"inner.name": "y", "count": 7, "procs": 0}, "extra": 5,
                    "given": {"inner.name": "--name", "count": "--count", "procs": "--procs"}}  # fmt: skip
    helped = runner.invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    assert helped.index("--name") < helped.index("--count") < helped.index("--procs") < helped.index("--extra")
    assert "how many" in helped and "--unflagged" not in helped
    assert resume_changeable(_Toy) == {"count": "--count"}


def test_flags_build_the_same_config_as_the_fields_defaults() -> None:
    values = {name: s.default() for name, s in RUN_SETTINGS.items()}
    assert Flags(values, RUN_SETTINGS, None).config() == RunConfig()
    changed = Flags({**values, "client_procs": "auto", "ray": "off", "engine_opt": ["step-ms=5"]}, RUN_SETTINGS, None)
    cfg = changed.config(**{"dataset.max_turns": 1})
    assert (cfg.client_procs, cfg.client_ray, cfg.dataset.max_turns) == (0, None, 1)
    assert cfg.engine.options == {"step_ms": "5"}


def test_the_sweeps_flag_paths_and_resume_flags_are_derived() -> None:
    """The tables cli/sweep.py kept by hand before, now derived from the fields' flags."""
    from speedbench.cli.sweep import RESUME_FLAGS, SWEEP_SETTINGS

    # flag -> where it goes in the sweep's TOML-shaped dict
    assert {name: s.path for name, s in SWEEP_SETTINGS.items()} == {
        "engine": "run.engine.kind",
        "base_url": "run.engine.base_url",
        "model": "run.engine.model",
        "metrics_url": "run.engine.metrics_url",
        "endpoint": "run.engine.endpoint",
        "draft_model": "run.engine.draft_model",
        "launch": "run.engine.launch",
        "server_bin": "run.engine.server_bin",
        "server_arg": "run.engine.server_args",
        "engine_opt": "run.engine.options",
        "request_seed": "run.engine.request_seed",
        "num_requests": "run.dataset.num_requests",
        "max_turns": "run.dataset.max_turns",
        "output_len": "run.output_len",
        "temperature": "run.temperature",
        "ignore_eos": "ignore_eos",
        "warmup": "run.warmup",
        "timeout": "run.timeout_s",
        "max_failed": "run.max_failed",
        "breaker": "run.breaker",
        "seed": "run.seed",
        "concurrency": "grid.concurrency",
        "draft_length": "grid.draft_length",
        "sd": "grid.sd",
        "dataset": "grid.dataset",
        "grid_opt": "grid.engine_options",
        "baseline": "grid.baseline",
        "repeats": "grid.repeats",
        "url": "urls",
        "out": "out",
        "order": "order",  # --order grid|abba: the sweep's own
    }
    resumable = set(RESUME_FLAGS)
    assert resumable == {
        "resume", "base_url", "metrics_url", "url", "retry_failed", "progress", "plan", "html", "ray", "ray_resource",
        "ray_gpus", "ray_shared_dir",
    }  # fmt: skip
