"""The options of the commands that run an engine (`run`, `check-lossless`, `sweep`), generated from the flags
declared on the config fields (config/flags.py): a command names the settings it takes, in help order, and
``options`` builds their typer parameters; ``Flags`` turns what was typed into the RunConfig.  Engine lists and
SD methods in the help come from the registry's metadata (no engine module is imported)."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Optional, TypeVar, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError

from speedbench.config.flags import UNSET, Setting, by_param, nest
from speedbench.config.run import RunConfig
from speedbench.engines import registry
from speedbench.errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Any])

# flag (parameter name) -> the RunConfig setting it sets
RUN_SETTINGS: dict[str, Setting] = by_param(RunConfig)


def _help_text(text: str | None) -> str | None:
    """A flag's help with the registry's facts filled in."""
    if text is None or "{" not in text:
        return text
    return text.format(
        engines=", ".join(registry.BUILTIN),
        sd_methods=registry.sd_methods_help(),
        launchable=", ".join(registry.launchable()),
    )


def _option_type(setting: Setting) -> Any:
    """The type typer parses the flag as: the flag's own, else the field's (``X | None`` as ``Optional[X]``, which
    typer needs on Python 3.10)."""
    kind = setting.flag.type if setting.flag.type is not UNSET else setting.field.annotation
    if get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(get_args(kind)) == 2:
            return Optional[args[0]]  # noqa: UP045 - typer on Python 3.10
    return kind


def parameter(setting: Setting) -> inspect.Parameter:
    """The typer parameter of one flagged setting."""
    flag = setting.flag
    info = typer.Option(*flag.decls, help=_help_text(flag.help), min=flag.min)
    return inspect.Parameter(
        flag.param,
        inspect.Parameter.KEYWORD_ONLY,
        default=setting.default(),
        annotation=Annotated[_option_type(setting), info],
    )


def options(
    *order: str, settings: Mapping[str, Setting] = RUN_SETTINGS, but: Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[[F], F]:
    """Decorate a command with the options ``order`` names, in that order: one of the command's own parameters
    (it declares them), else the option a setting's flag declares (``but``: {name: changed facts} where this
    command words or defaults it differently); ``"..."`` stands for every setting not named, in declaration order
    (a setting added to RunConfig appears there with no other edit).  The command receives ``flags: Flags`` (the
    settings' values) and its own parameters."""
    changed = but or {}

    def decorate(fn: F) -> F:
        own = inspect.signature(fn, eval_str=True).parameters
        params: list[inspect.Parameter] = []
        if "ctx" in own:
            params.append(own["ctx"].replace(kind=inspect.Parameter.KEYWORD_ONLY))
        chosen: dict[str, Setting] = {}  # the command's settings, as it words them
        rest = [n for n in settings if n not in order and n not in own]
        for name in [n for item in order for n in (rest if item == "..." else [item])]:
            if name in own:
                params.append(own[name].replace(kind=inspect.Parameter.KEYWORD_ONLY))
            else:
                s = settings[name]
                if name in changed:
                    s = Setting(s.path, s.field, s.flag.but(**changed[name]))
                params.append(parameter(s))
                chosen[name] = s

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in chosen}
            return fn(flags=Flags(values, chosen, kwargs.get("ctx")), **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return typing.cast(F, command)

    return decorate


class Flags:
    """The values of a command's generated options, and what they make."""

    def __init__(self, values: dict[str, Any], settings: Mapping[str, Setting], ctx: Any) -> None:
        # ctx: typer's click Context (typer brings its own copy of click), None outside a command line
        self.values = values
        self.settings = settings
        self.ctx = ctx

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def field_values(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """{dotted field path: value} of the options ``names`` (None: every one), in that order, each flag's
        ``parse`` applied."""
        out = {}
        for name in self.values if names is None else names:
            flag, value = self.settings[name].flag, self.values[name]
            out[self.settings[name].path] = flag.parse(value) if flag.parse is not None else value
        return out

    def config(self, **fixed: Any) -> RunConfig:
        """The RunConfig the options describe (``fixed``: {dotted path: value} a command sets itself); every field
        with a flag is set, the command's own value or the flag's default."""
        values = {s.path: s.flag.parse(s.default()) if s.flag.parse else s.default() for s in RUN_SETTINGS.values()}
        values.update(self.field_values())
        values.update(fixed)
        try:
            return build(RunConfig, values)
        except ValidationError as e:  # the flags' values, refused in one line naming the field
            raise InvalidInput.of(e) from None

    def given(self) -> dict[str, str]:
        """The options the user typed (or set in the environment), as {dotted field path: "--flag"}."""
        names = typed(self.ctx) if self.ctx is not None else set()
        return {s.path: s.flag.long for name, s in self.settings.items() if name in names}


def typed(ctx: Any) -> set[str]:
    """The parameters of a command the user typed (or set in the environment)."""
    out = set()
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        # compared by name: typer may bring its own copy of click's ParameterSource enum
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            out.add(name)
    return out


def build(model: type[BaseModel], values: Mapping[str, Any]) -> Any:
    """``model`` validated from {dotted path: value}, its nested models first (so a bad value is named by the
    model that holds it: "validation error for EngineSpec")."""
    return _validate(model, nest(values))


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    for name, field in model.model_fields.items():
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel) and isinstance(data.get(name), dict):
            data[name] = _validate(inner, data[name])
    return model(**data)


# `serve-mock -E`: the same option as `run -E`
EngineOpt = parameter(RUN_SETTINGS["engine_opt"]).annotation
