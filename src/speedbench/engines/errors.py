"""Errors shared by the engine adapters."""

from __future__ import annotations

from speedbench.errors import UserError


class EngineStartError(UserError, RuntimeError):
    """The engine could not be reached or started; the message says what to do (and, for a launched
    server, quotes the last lines of its log after the first line)."""
