"""Prompt rendering shared by the engines and the analysis: one definition, so a baseline run, an SD run
and the scorer that re-reads their outputs all see the same text."""

from __future__ import annotations

__all__ = ["render_completion_prompt"]


def render_completion_prompt(messages: list[dict[str, str]]) -> str:
    """A plain transcript for the completions endpoint (used identically for baseline and SD runs)."""
    parts = [f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"
