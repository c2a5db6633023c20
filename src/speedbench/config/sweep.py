"""A sweep's settings (docs/sweep.md): ``SweepGrid`` (the axes) and ``SweepConfig`` (the grid, the base run config
every cell starts from, ``ignore_eos``, one attached server per SD setting, the sweep directory), built from a TOML
file with the flags merged over it.  The fields a command line sets carry their ``Flag`` (config/flags.py), and
with it the parsing of the flag's text (comma lists, KEY=VALUE pairs) into the field's value."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from speedbench.config.flags import Flag
from speedbench.config.run import RunConfig
from speedbench.errors import InvalidInput

DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_DRAFT_LENGTH = (1, 2, 3, 4, 5)


class SweepConfigError(InvalidInput):
    """A sweep configuration refused in one line naming the field."""


def ints(flag: str) -> Callable[[str], list[int]]:
    """A flag's comma list of integers (``1,2,4``)."""

    def parse(text: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise SweepConfigError(f"{flag} {text!r}: expected integers separated by commas (e.g. 1,2,4)") from None

    return parse


def words(text: str) -> list[str]:
    """A flag's comma list of words."""
    return [x.strip() for x in text.split(",") if x.strip()]


def pairs(flag: str, values: list[str]) -> list[tuple[str, str]]:
    """Repeated ``KEY=VALUE`` flags as (key, value) pairs; one line for one without ``=``."""
    out = []
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            raise SweepConfigError(f"{flag} {v!r}: expected KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return out


def _datasets(values: list[str]) -> list[str]:
    """``--dataset`` repeated or as a comma list (a path that exists is one dataset, commas and all)."""
    return [w for v in values for w in ([v] if os.path.exists(v) else words(v))]


def _grid_options(values: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for key, val in pairs("-G", list(values)):
        grid.setdefault(key, []).append(val)
    return grid


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _dedupe(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _option_text(value: Any) -> str:
    """An ``-E`` value as the engines read it (a string): TOML's ``1`` / ``true`` as ``-E k=1`` / ``-E k=true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SweepGrid(_Frozen):
    """The axes of a sweep.  Every SD setting (``sd`` x ``draft_length``) runs at every concurrency, on every
    dataset, with every combination of the ``engine_options`` values; with ``baseline`` (the default) the SD-off
    setting (sd none, k 0) runs once per (dataset, concurrency, engine options) as the pair of the SD cells; with
    ``repeats`` R > 1 all of it R times (repeat r of an SD cell pairs with repeat r of its baseline)."""

    concurrency: Annotated[
        list[int],
        Flag(
            "--concurrency",
            "-c",
            help="comma list (default 1,2,4,8,16,32,64)",
            type=str | None,
            default=None,
            parse=ints("--concurrency"),
        ),
    ] = Field(default_factory=lambda: list(DEFAULT_CONCURRENCY), min_length=1)
    draft_length: Annotated[
        list[int],
        Flag(
            "--draft-length",
            "-k",
            help="comma list (default 1,2,3,4,5); the baseline (k 0) is added",
            type=str | None,
            default=None,
            parse=ints("--draft-length"),
        ),
    ] = Field(default_factory=lambda: list(DEFAULT_DRAFT_LENGTH), min_length=1)
    sd: Annotated[
        list[str],
        Flag(
            "--sd",
            help="SD methods, comma list (default ngram); the SD-off baseline is added (--no-baseline)",
            type=str | None,
            default=None,
            parse=words,
        ),
    ] = Field(default_factory=lambda: ["ngram"], min_length=1)
    dataset: Annotated[
        list[str],
        Flag(
            "--dataset",
            "-d",
            help="dataset (repeatable or comma list; default starter)",
            type=list[str],
            default=[],
            parse=_datasets,
        ),
    ] = Field(default_factory=lambda: ["starter"], min_length=1)
    # -E options that vary: {key: [value, ...]}; the fixed ones are the base config's engine.options
    engine_options: Annotated[
        dict[str, list[str]],
        Flag(
            "-G",
            "--grid-opt",
            help="an engine option that varies: KEY=VALUE, repeated per value (-G fail_500=0 -G fail_500=0.5)",
            type=list[str],
            default=[],
            parse=_grid_options,
        ),
    ] = Field(default_factory=dict)
    baseline: Annotated[
        bool, Flag("--baseline/--no-baseline", help="run the SD-off pair of every SD cell (default on)")
    ] = True
    # every cell runs this many times (each repeat its own engine starts; the report pools them, docs/statistics.md)
    repeats: Annotated[
        int,
        Flag(
            "--repeats",
            help="run every cell N times (each repeat its own engine starts); the report's intervals then include "
            "the spread between repeats",
            type=int | None,
            default=None,
            min=1,
        ),
    ] = Field(1, ge=1)

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError(f"every concurrency must be >= 1, got {v}")
        return _dedupe(v)

    @field_validator("draft_length")
    @classmethod
    def _draft_length(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError(
                f"every draft length must be >= 1, got {v} (the SD-off baseline, k 0, is added by the sweep itself)"
            )
        return _dedupe(v)

    @field_validator("sd")
    @classmethod
    def _sd(cls, v: list[str]) -> list[str]:
        if any(not m.strip() for m in v):
            raise ValueError("an SD method name is empty")
        return _dedupe([m.strip().lower() for m in v])

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: list[str]) -> list[str]:
        if any(not d.strip() for d in v):
            raise ValueError("a dataset name is empty")
        return _dedupe([d.strip() for d in v])

    @field_validator("engine_options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[str, list[str]] = {}
        for key, values in v.items():
            vals = values if isinstance(values, list) else [values]
            if not vals:
                raise ValueError(f"{key}: no values")
            name = str(key).strip()
            if not name.startswith("body."):
                name = name.replace("-", "_")
            out[name] = _dedupe([_option_text(x) for x in vals])
        return out


class SweepConfig(BaseModel):
    """A sweep: the grid, and the base run config every cell starts from (a RunConfig, as in a run manifest's
    ``config``; the fields the grid sets are not given there).  Built by ``usecases.sweep.plan.sweep_config`` from
    the TOML file's tables with the flags merged over them."""

    model_config = ConfigDict(extra="forbid")

    grid: SweepGrid = Field(default_factory=SweepGrid)
    run: RunConfig = Field(default_factory=RunConfig)
    # None: true for throughput and synthetic datasets (FIXED_LENGTH_PREFIXES, or every prompt of category
    # "synthetic"), false for the others; a value: every cell
    ignore_eos: Annotated[
        bool | None,
        Flag(
            "--ignore-eos/--no-ignore-eos",
            help="default: on for throughput and synthetic datasets (token counts of a pair match), off otherwise",
        ),
    ] = None
    # attached, one server per SD setting: {"none": URL, "ngram:k3": URL, ...}; the SD settings are then its keys
    urls: Annotated[
        dict[str, str],
        Flag(
            "--url",
            help="attached: one server per SD setting, SETTING=URL (none=..., ngram:k3=...; repeatable); the SD "
            "settings are then these",
            type=list[str],
            default=[],
            parse=lambda values: dict(pairs("--url", list(values))),
            secret_url=True,
        ),
    ] = Field(default_factory=dict)
    out: Annotated[str | None, Flag("--out", help="sweep directory (default sweeps/<UTC time>-<engine>)")] = None
    # the order the cells run in (usecases/sweep/plan.py ``abba_order``): grid = launch group by launch group; abba =
    # each SD cell next to its SD-off pair, alternating which goes first (A B B A ...), so that drift over time
    # touches both sides alike (the engines of the interleaved groups are then held at once)
    order: Annotated[
        Literal["grid", "abba"],
        Flag(
            "--order",
            help="grid: launch group after launch group (default); abba: each SD cell next to its SD-off pair, "
            "alternating which runs first (A B B A ...), so drift over time hits both sides alike; the engines of "
            "the interleaved groups are held at once (docs/sweep.md)",
            type=str,
        ),
    ] = "grid"
