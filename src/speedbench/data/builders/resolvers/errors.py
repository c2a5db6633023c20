"""The resolvers' error, apart so that the loading and token modules need nothing else of the package."""

from __future__ import annotations

from speedbench.errors import SpeedbenchError

__all__ = ["ResolveError"]


class ResolveError(SpeedbenchError):
    """A row could not be rebuilt from its source; the fetcher adds the file, row and question_id."""
