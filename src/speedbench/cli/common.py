"""Helpers shared by the command modules: one-line user errors and internal errors with their traceback (the root
group, ``Commands``); a console that never prints the run's secrets; a page written and said so."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from speedbench.errors import UserError

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
    """What a command reports as one line (exit 2): bad input, never a bug (speedbench/errors.py)."""
    return (UserError,)


def one_line(e: BaseException) -> str:
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


ERROR_LOG = "error.log"
_error_log: list[Path] = []  # where the running command wants an internal error's traceback (log_errors_to)


def log_errors_to(folder: str | Path) -> None:
    """From now on in this command, an internal error's traceback is also appended to ``folder``/error.log (the
    run or sweep directory the command writes)."""
    _error_log[:] = [Path(folder) / ERROR_LOG]


def internal_error(e: Exception, log: Path | None) -> NoReturn:
    """A bug escaped a command: its traceback, then one line asking for a report (saying where the traceback was
    also saved), on stderr; exit 1.  Secrets are scrubbed from both, as from everything printed."""
    import datetime as dt
    import traceback

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    line = f"internal error, please report: {type(e).__name__}: {one_line(e)}"
    if log is not None:
        stream = sys.stderr
        scrub = stream.secrets.scrub if isinstance(stream, ScrubbedStream) else _redact
        try:
            with open(log, "a", encoding="utf-8") as f:
                f.write(scrub(f"{dt.datetime.now(dt.timezone.utc).isoformat()} {line}\n{text}\n"))
            line += f" (traceback saved in {log})"
        except OSError:
            pass
    typer.echo(text + line, err=True)
    raise typer.Exit(1)


def _redact(text: str) -> str:
    from speedbench.config import redact_urls

    return redact_urls(text)


class Commands(TyperGroup):
    """The root command group: a ``UserError`` escaping a command is one line (``fail``, exit 2); any other
    exception is a bug, shown with its traceback (``internal_error``, exit 1); click's own exits pass through."""

    def invoke(self, ctx: Any) -> Any:  # typer's click Context (typer._click.core)
        _error_log.clear()
        try:
            return super().invoke(ctx)
        except UserError as e:
            fail(one_line(e))
        except (typer.Exit, typer.Abort, TyperException):  # click's own: --help, usage errors, exit statuses
            raise
        except Exception as e:
            internal_error(e, _error_log[0] if _error_log else None)


def progress_bar(console: Any, transient: bool = False) -> Any:
    """The live bar of a run or a sweep cell: what, a bar, done of total, elapsed time, the live figures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[live]}"),
        console=console,
        transient=transient,
    )
