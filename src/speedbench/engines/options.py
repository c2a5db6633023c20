"""``-E key=value`` options, validated the same way for every engine.

Each engine declares its options as a pydantic model (a subclass of ``EngineOptions``, or any model with
``extra="forbid"``); ``parse_options`` turns the spec's string pairs into it and refuses an unknown key or a
wrong value in one line that names the key and the keys the engine accepts.  HTTP engines also take
``-E body.FIELD=VALUE`` (config.BODY_PREFIX): a field passed into each request body (``split_body``), and
``-E enable_thinking=BOOL``, sent as ``chat_template_kwargs.enable_thinking`` (``with_thinking``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from speedbench.config import BODY_PREFIX
from speedbench.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


class EngineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def accepted_keys(model: type[BaseModel], body: bool = False) -> str:
    keys = sorted(model.model_fields)
    return ", ".join(keys + ([f"{BODY_PREFIX}FIELD"] if body else [])) or "none"


def _message(err: Any, engine: str, options: Mapping[str, Any], accepted: str) -> str:
    loc = err.get("loc") or ()
    key = str(loc[0]) if loc else ""
    if key and key in options:
        shown = f"-E {key}={options[key]}"
    elif key:
        shown = f"-E {key}"
    else:
        shown = "-E " + " ".join(f"{k}={v}" for k, v in options.items())
    if err.get("type") == "extra_forbidden":
        return f"{shown}: unknown option for engine {engine!r} (accepted: {accepted})"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{shown}: {msg} (engine {engine!r} accepts: {accepted})"


def parse_options(model: type[M], engine: str, options: Mapping[str, Any], body: bool = False) -> M:
    """``options`` (the spec's ``-E`` pairs, ``body.*`` fields already split off) -> ``model``; one
    InvalidInput line for an unknown key or a wrong value."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as e:
        raise InvalidInput(_message(e.errors()[0], engine, options, accepted_keys(model, body))) from None


def split_body(options: Mapping[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """(the engine's own options, the ``body.*`` request fields with JSON values parsed: ``body.top_p=0.9``
    -> ``{"top_p": 0.9}``; a value that is not JSON stays a string)."""
    own: dict[str, str] = {}
    body: dict[str, Any] = {}
    for k, v in options.items():
        if k.startswith(BODY_PREFIX):
            body[k[len(BODY_PREFIX) :]] = _json_or_str(v)
        else:
            own[k] = v
    return own, body


def _json_or_str(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def with_thinking(body: Mapping[str, Any], enable: bool | None) -> dict[str, Any]:
    """The ``body.*`` request fields with ``-E enable_thinking`` added as ``chat_template_kwargs.enable_thinking``
    (what Qwen3-style chat templates read; vLLM and SGLang pass ``chat_template_kwargs`` to the template).

    ``None``: the fields unchanged (the server's default).  An explicit ``-E body.chat_template_kwargs={...}``
    is merged with it: its other keys are kept, the same ``enable_thinking`` is accepted, and a different one
    (or a ``chat_template_kwargs`` that is not a JSON object) is refused in one InvalidInput line, since neither
    can be sent as asked."""
    out = dict(body)
    if enable is None:
        return out
    kwargs = out.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise InvalidInput(
            f"-E enable_thinking={str(enable).lower()}: -E {BODY_PREFIX}chat_template_kwargs is not a JSON object "
            f"({kwargs!r}), so enable_thinking cannot be added to it"
        )
    given = kwargs.get("enable_thinking")
    if given is not None and given != enable:
        raise InvalidInput(
            f"-E enable_thinking={str(enable).lower()} contradicts -E {BODY_PREFIX}chat_template_kwargs "
            f"(enable_thinking={json.dumps(given)}): give one of them"
        )
    out["chat_template_kwargs"] = {**kwargs, "enable_thinking": enable}
    return out
