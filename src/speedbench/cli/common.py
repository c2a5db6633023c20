"""Helpers shared by the command modules: one-line user errors; a console that never prints the run's secrets; a
page written and said so."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from speedbench.config import Secrets
    from speedbench.usecases.report import PageWritten


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr (URLs' userinfo redacted), then exit."""
    from speedbench.config import redact_urls

    typer.echo(f"error: {redact_urls(message)}", err=True)
    raise typer.Exit(code)


class ScrubbedStream:
    """A text stream that scrubs what is written (``Secrets.scrub``: URLs' userinfo, the secret values) line by
    line before it reaches the stream it wraps; a partial line waits for its newline or a ``flush``."""

    def __init__(self, stream: TextIO, secrets: Secrets) -> None:
        self._stream = stream
        self._pending = ""
        self.secrets = secrets

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probes text streams with write(b"")
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        lines, sep, self._pending = (self._pending + text).rpartition("\n")
        if sep:
            self._stream.write(self.secrets.scrub(lines + sep))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self.secrets.scrub(self._pending))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":  # no way around the scrubbing (click would write bytes to it)
            raise AttributeError(name)
        return getattr(self._stream, name)


def protect_console(secrets: Secrets | None = None) -> None:
    """From now on, scrub everything this process prints on stdout and stderr (rich tables, error lines,
    warnings, a traceback as it dies): URLs' userinfo, plus ``secrets`` (added to those of earlier calls).
    Left in place until the process exits; click's test runner puts its own streams back after each command."""
    from speedbench.config import Secrets

    adding = secrets or Secrets()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, ScrubbedStream):
            stream.secrets = stream.secrets | adding
        elif stream is not None:
            setattr(sys, name, ScrubbedStream(stream, adding))


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


def print_page(write: Callable[[], PageWritten], out: str, console: Console, strict: bool = True) -> None:
    """Write an HTML page (``usecases/report.py``; its figures need the ``report`` extra) and say where it went and
    how big it is.  ``strict``: a failure exits 2 (the page was asked for); else it is one line (the page comes with
    a sweep or a model, whose own results stand)."""
    from rich.markup import escape

    from speedbench.extras import MissingExtra

    errors: tuple[type[BaseException], ...] = (*user_errors(), OSError, MissingExtra)
    try:
        written = write()
    except errors as e:
        if strict:
            fail(f"--html {out}: {one_line(e)}")
        console.print(escape(f"no {out}: {one_line(e)}"), soft_wrap=True, highlight=False)
        return
    console.print(escape(written.describe()), soft_wrap=True)
