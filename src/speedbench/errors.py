"""The one error base of speedbench (imports nothing, so every layer may raise these).

- ``SpeedbenchError``: every exception class speedbench defines derives from it (a test walks them).
- ``UserError``: bad input, not a bug: a malformed dataset, an unknown engine, an unreachable server, a bad flag.
  The command line prints its first line as ``error: ...`` and exits 2 (cli/common.py); a class that callers also
  catch as a built-in keeps that base too (``class DatasetError(UserError, ValueError)``).
- ``InvalidInput``: a value the user gave (a flag, an ``-E`` option, a config field) refused in one line naming it;
  ``InvalidInput.of(e)`` is a pydantic ``ValidationError`` of user input in that one line.

Any other exception that escapes a command is a bug: the command line shows its traceback as an internal error.
"""

from __future__ import annotations

from typing import Any


class SpeedbenchError(Exception):
    """The base of every exception speedbench raises on purpose (user errors and internal control flow)."""


class UserError(SpeedbenchError):
    """Bad input: one clear line on stderr and exit status 2, never a traceback."""


class InvalidInput(UserError, ValueError):
    """A value given on the command line, in a config file or an ``-E`` option, refused in one line naming it."""

    @classmethod
    def of(cls, e: Any) -> InvalidInput:
        """A pydantic ``ValidationError`` (of what the user gave) as one line: ``field.path: message; ...``."""
        return cls("; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'value'}: {err['msg']}" for err in e.errors()))
