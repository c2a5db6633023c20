"""The command-line facts of a setting, declared on the setting itself.

A config field that a command line sets carries one ``Flag`` in its ``Annotated`` metadata::

    concurrency: Annotated[int, Flag("--concurrency", "-c", resume=True)] = Field(32, ge=1)

and everything else is derived from it: the typer options of ``run``, ``check-lossless`` and ``sweep``
(cli/options.py), which flag sets which field (``flag_fields``), which flags ``run --resume`` may change
(``resume_changeable``) and where a flag goes in a sweep's TOML-shaped dict.  ``walk`` lists the flags of a
model, nested models included, with the field's dotted path.  This module imports nothing of speedbench.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, init=False)
class Flag:
    """One command-line option of a config field.

    ``decls``: the option's names as typer declares them, in help order (``"--engine", "-e"``; a boolean pair
    ``"--progress/--no-progress"``); the first ``--`` name is the flag (and, dashes as underscores, the
    command's parameter).  ``help`` may name ``{engines}``, ``{sd_methods}`` and ``{launchable}``, filled from the
    engine registry when the options are built.  ``type`` / ``default``: the flag's own where they differ from the
    field's (``--client-procs`` takes ``auto``), ``parse`` turning the flag's value into the field's.  ``resume``:
    ``run --resume`` may change it (the client side; recorded per segment).  ``secret_url``: a URL whose
    credentials are never saved, so a resumed run or sweep takes it again.  ``min``: the smallest value typer
    accepts (checked before the config is built)."""

    decls: tuple[str, ...]
    help: str | None = None
    type: Any = UNSET
    default: Any = UNSET
    parse: Callable[[Any], Any] | None = None
    resume: bool = False
    secret_url: bool = False
    min: float | None = None

    def __init__(
        self,
        *decls: str,
        help: str | None = None,  # noqa: A002 - typer's word
        type: Any = UNSET,  # noqa: A002
        default: Any = UNSET,
        parse: Callable[[Any], Any] | None = None,
        resume: bool = False,
        secret_url: bool = False,
        min: float | None = None,  # noqa: A002
    ) -> None:
        for name, value in (
            ("decls", decls), ("help", help), ("type", type), ("default", default), ("parse", parse),
            ("resume", resume), ("secret_url", secret_url), ("min", min),
        ):  # fmt: skip
            object.__setattr__(self, name, value)

    @property
    def long(self) -> str:
        """The flag as a user types it: ``--base-url``."""
        return next(d for d in self.decls if d.startswith("--")).split("/")[0]

    @property
    def param(self) -> str:
        """The command's parameter name: ``base_url``."""
        return self.long[2:].replace("-", "_")

    def but(self, **changes: Any) -> Flag:
        """This flag with some facts changed (a command that words or defaults it differently)."""
        facts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "decls"}
        return Flag(*self.decls, **{**facts, **changes})


@dataclass(frozen=True)
class Setting:
    """A config field with a flag: its dotted path in the model (``engine.base_url``), the field and the flag."""

    path: str
    field: FieldInfo
    flag: Flag

    def default(self) -> Any:
        """The flag's default: its own, else the field's (a factory called)."""
        if self.flag.default is not UNSET:
            return self.flag.default
        if self.field.default_factory is not None:
            return self.field.default_factory()  # type: ignore[call-arg]
        return self.field.default


def flag_of(field: FieldInfo) -> Flag | None:
    return next((m for m in field.metadata if isinstance(m, Flag)), None)


def walk(model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()) -> Iterator[Setting]:
    """Every flagged field of ``model`` and of the models nested in it (but those named in ``skip``), in
    declaration order."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{name}"
        flag = flag_of(field)
        if flag is not None:
            yield Setting(path, field, flag)
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from walk(inner, f"{path}.")


def by_param(model: type[BaseModel], skip: tuple[str, ...] = ()) -> dict[str, Setting]:
    """{parameter name: setting} of a model's flags (one flag per parameter; ``skip``: nested models left out)."""
    out: dict[str, Setting] = {}
    for s in walk(model, skip=skip):
        if s.flag.param in out:
            raise AssertionError(f"two fields declare {s.flag.long}: {out[s.flag.param].path} and {s.path}")
        out[s.flag.param] = s
    return out


def flag_fields(model: type[BaseModel]) -> dict[str, str]:
    """{parameter name: dotted field path}: which field each flag sets."""
    return {p: s.path for p, s in by_param(model).items()}


def resume_changeable(model: type[BaseModel]) -> dict[str, str]:
    """{dotted field path: "--flag"} of the flags ``run --resume`` may change, in declaration order."""
    return {s.path: s.flag.long for s in walk(model) if s.flag.resume}


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted path: value} as nested dicts: ``{"run.engine.kind": "mock"}`` -> ``{"run": {"engine": {...}}}``."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
