"""The command-line surface of speedbench as data: every command's options (names, short forms, secondary
names, defaults, help, type, multiple) from the click command typer builds.  tests/fixtures/cli/options.json holds
the surface as it was before the options were generated from the config fields (issue 22); regenerate it only for a
deliberate change of the surface: ``python tests/cli_surface.py > tests/fixtures/cli/options.json``."""

from __future__ import annotations

import json
from typing import Any

import typer


def _walk(cmd: Any, prefix: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if hasattr(cmd, "commands"):  # a group (typer may bring its own copy of click)
        for name, sub in sorted(cmd.commands.items()):
            out.update(_walk(sub, f"{prefix} {name}".strip()))
        return out
    params = []
    for p in cmd.params:
        params.append(
            {
                "name": p.name,
                "opts": list(p.opts),
                "secondary_opts": list(p.secondary_opts),
                "default": repr(p.default),
                "help": getattr(p, "help", None),
                "type": getattr(getattr(p, "type", None), "name", None),
                "multiple": getattr(p, "multiple", None),
                "is_flag": getattr(p, "is_flag", False),
                "required": getattr(p, "required", None),
            }
        )
    out[prefix] = params
    return out


def surface() -> dict[str, list[dict[str, Any]]]:
    from speedbench.cli import app

    return _walk(typer.main.get_command(app), "")


if __name__ == "__main__":
    print(json.dumps(surface(), indent=1, sort_keys=True))
