"""Sources whose SPEED-Bench row keeps its own prompt template and names one upstream row.

Reference (speed.py ``_fetch_all_turns_data``): CNN/DailyMail fills ``{article}`` from the row whose ``id``
equals src_id; LiveCodeBench fills ``{question}``/``{starter_code}`` from ``question_content`` /
``starter_code`` of the row whose ``question_id`` equals src_id; CodeContests fills ``{question}`` from the
``description`` of the row whose ``name`` equals src_id; OPUS-100 reads src_id as ``<x>_<lang-pair>_<row>``
and fills ``{question}`` with that row's ``translation`` dict.
"""

from __future__ import annotations

from typing import Any

from speedbench.data.builders.resolvers.base import (
    ResolveContext,
    ResolveError,
    Resolver,
    SourcePin,
    field_of,
    fill,
    first_turn,
    src_id_of,
    template_of,
)
from speedbench.data.builders.resolvers.loading import SourceFile, row_at, row_by


def _by_key(ctx: ResolveContext, name: str, ds: Any, column: str, key: str) -> dict[str, Any]:
    return row_by(ctx.sources, (name, "index", column), ds, column, key)


class CnnDailyMail(Resolver):
    name = "cnn_dailymail"
    match = "abisee/cnn_dailymail"
    default_pin = SourcePin(
        "abisee/cnn_dailymail", None, note="config 3.0.0, split test; the reference loads it unpinned"
    )
    CONFIG = "3.0.0"

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ds = ctx.sources.dataset(self.name, self.pin.repo_id, self.pin.revision, config=self.CONFIG)
        src = _by_key(ctx, self.name, ds, "id", src_id_of(row))
        return [fill(template_of(first_turn(row)), article=field_of(src, "article"))]


LCB_FILES = ("test", "test2", "test3", "test4", "test5", "test6")


class LiveCodeBench(Resolver):
    name = "livecodebench"
    match = "livecodebench/code_generation_lite"
    default_pin = SourcePin(
        "livecodebench/code_generation_lite",
        "0fe84c3912ea0c4d4a78037083943e8f0c4dd505",
        note="files test.jsonl, test2..test6.jsonl",
    )

    def files(self) -> list[SourceFile]:
        rev = self.pin.revision or "main"
        base = f"https://huggingface.co/datasets/{self.pin.repo_id}/resolve/{rev}"
        return [SourceFile(self.pin.repo_id, self.pin.revision, f"{n}.jsonl", f"{base}/{n}.jsonl") for n in LCB_FILES]

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ds = ctx.sources.files(self.name, self.files())
        src = _by_key(ctx, self.name, ds, "question_id", src_id_of(row))
        return [
            fill(
                template_of(first_turn(row)),
                question=field_of(src, "question_content"),
                starter_code=field_of(src, "starter_code"),
            )
        ]


class CodeContests(Resolver):
    name = "code_contests"
    match = "deepmind/code_contests"
    default_pin = SourcePin("deepmind/code_contests", "802411c3010cb00d1b05bad57ca77365a3c699d6", note="split test")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ds = ctx.sources.dataset(self.name, self.pin.repo_id, self.pin.revision)
        src = _by_key(ctx, self.name, ds, "name", src_id_of(row))
        return [fill(template_of(first_turn(row)), question=field_of(src, "description"))]


class Opus100(Resolver):
    name = "opus100"
    match = "Helsinki-NLP/opus-100"
    default_pin = SourcePin(
        "Helsinki-NLP/opus-100",
        "805090dc28bf78897da9641cdf08b61287580df9",
        note="config = language pair from src_id, split test",
    )

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        parts = src_id_of(row).split("_")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ResolveError(f"src_id {row['src_id']!r} is not <name>_<lang-pair>_<row>")
        ds = ctx.sources.dataset(self.name, self.pin.repo_id, self.pin.revision, config=parts[1])
        src = row_at(ds, int(parts[2]))
        return [fill(template_of(first_turn(row)), question=field_of(src, "translation"))]
