"""Sources whose upstream row supplies the turns themselves.

Reference (speed.py ``_fetch_all_turns_data``):
- MT-Bench-101: the row's ``source`` is the jsonl file; src_id's last ``_`` field is the row; turns are
  the ``user`` entries of its ``history``.
- ChatRAG-Bench: the ``test`` splits of configs ``hybridial`` then ``sqa`` concatenated; src_id's last
  ``_`` field indexes that concatenation; turn 1 wraps the joined ``ctxs`` texts and the first user
  message, later turns are the later user messages.
- MMLU-Pro: src_id holds ``(<start>, ...)``; rows start..start+len(turns) of the ``test`` split become
  the turns, the first with the MMLU-Pro CoT header for the row's ``sub_category``.
"""

from __future__ import annotations

from typing import Any

from speedbench.data.builders.resolvers import prompts
from speedbench.data.builders.resolvers.base import (
    ResolveContext,
    ResolveError,
    Resolver,
    SourcePin,
    field_of,
    index_part,
    n_turns,
    src_id_of,
)
from speedbench.data.builders.resolvers.loading import row_at, source_file


class MTBench101(Resolver):
    name = "mtbench101"
    match = "mtbench101/mt-bench-101"
    default_pin = SourcePin(
        "mtbench101/mt-bench-101", None, from_row=True, note="GitHub jsonl named by the row's source URL"
    )

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ds = ctx.sources.files(self.name, [source_file(str(row["source"]), self.pin.repo_id)])
        src = row_at(ds, index_part(src_id_of(row), "last"))
        history = field_of(src, "history") or []
        return [str(entry["user"]) for entry in history]


class ChatRAGBench(Resolver):
    name = "chatrag_bench"
    match = "nvidia/ChatRAG-Bench"
    default_pin = SourcePin(
        "nvidia/ChatRAG-Bench",
        "af6c7d420ddddf21f54f8ab3394bbf462aad2577",
        note="configs hybridial + sqa (concatenated), split test",
    )
    CONFIGS = ("hybridial", "sqa")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        i = index_part(src_id_of(row), "last")
        for config in self.CONFIGS:
            ds = ctx.sources.dataset(self.name, self.pin.repo_id, self.pin.revision, config=config)
            if i < len(ds):
                return self._turns(row_at(ds, i))
            i -= len(ds)
        raise ResolveError(f"row index in src_id {row['src_id']!r} is past the end of {'+'.join(self.CONFIGS)}")

    @staticmethod
    def _turns(src: dict[str, Any]) -> list[str]:
        context = "\n\n".join(str(c["text"]) for c in field_of(src, "ctxs"))
        questions = [str(m["content"]) for m in field_of(src, "messages") if m["role"] == "user"]
        if not questions:
            raise ResolveError("source conversation has no user message")
        return [prompts.CHATRAG_FIRST.format(context=context, question=questions[0]), *questions[1:]]


def _mmlu_block(question: str, options: list[str]) -> str:
    lines = "\n".join(f"({chr(ord('A') + i)}) {opt}" for i, opt in enumerate(options))
    return f"Question: {question}\n\nOptions: {lines}\n\n"


class MMLUPro(Resolver):
    name = "mmlu_pro"
    match = "TIGER-Lab/MMLU-Pro"
    default_pin = SourcePin("TIGER-Lab/MMLU-Pro", "30527804ea8854662078e457808040d872ecdf29", note="split test")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        src_id = src_id_of(row)
        try:
            start = int(src_id.split("(")[1].split(",")[0])
        except (IndexError, ValueError):
            raise ResolveError(f"src_id {src_id!r} has no '(<row>, ...)'") from None
        ds = ctx.sources.dataset(self.name, self.pin.repo_id, self.pin.revision)
        blocks = []
        for i in range(start, start + n_turns(row)):
            src = row_at(ds, i)
            blocks.append(_mmlu_block(str(field_of(src, "question")), list(field_of(src, "options"))))
        subject = row.get("sub_category") or ""
        return [prompts.MMLU_PRO_HEAD.format(subject=subject) + blocks[0], *blocks[1:]]
