"""Helpers shared by the command modules: one-line user errors."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr, then exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from speedbench.data.sample import DatasetError
    from speedbench.embed.base import EmbedderError, EmbedderUnavailable
    from speedbench.engines.errors import EngineStartError
    from speedbench.engines.hf_models import ModelLoadError
    from speedbench.engines.registry import EngineNotFound, EngineUnavailable
    from speedbench.results.rundir import RunDirError

    return (
        DatasetError,
        EmbedderError,
        EmbedderUnavailable,
        EngineNotFound,
        EngineUnavailable,
        EngineStartError,
        ModelLoadError,
        RunDirError,
        ValidationError,
        ValueError,
    )


def one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "value"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    from speedbench.engines.errors import EngineStartError

    if isinstance(e, EngineStartError):  # a launched server's failure quotes its log below the first line
        return str(e)
    return str(e).splitlines()[0] if str(e) else type(e).__name__
