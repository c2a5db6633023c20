"""Humanity's Last Exam (``cais/hle``, gated): the one source needing an access preflight.

Reference (speed.py ``_fetch_all_turns_data``, HLE branch), ``test`` split at the pinned revision:
- qualitative: the turn is the ``question`` of the row whose ``id`` equals src_id;
- throughput: the split is halved with ``train_test_split(test_size=0.5, shuffle=True, seed=42)``; the
  example is the test-half row with that ``id``; demonstrations ``Question: ..\\n\\nAnswer: <rationale>``
  are drawn (with replacement) from train-half rows of the same ``category`` that have no image, until
  header + demonstrations + question reach the budget; the result is the first
  ``budget - len(question) + 1`` tokens of header + demonstrations, then the question's tokens.
  The reference draws with one shared RNG (seed 42) across rows; here each row has its own.
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
    src_id_of,
)
from speedbench.data.builders.resolvers.loading import index_by, row_at, row_by

HLE_PAGE = "https://huggingface.co/datasets/cais/hle"


class HLE(Resolver):
    name = "hle"
    match = "cais/hle"
    default_pin = SourcePin("cais/hle", "021a3d71f516a7ac28ceb8d284969902edf1edeb", note="split test; gated")
    gated = True

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ds = ctx.sources.dataset(self.name, self.pin.repo_id, self.pin.revision)
        key = src_id_of(row)
        if "qualitative" in ctx.config:
            src = row_by(ctx.sources, (self.name, "index"), ds, "id", key, where="cais/hle")
            return [str(field_of(src, "question"))]
        if "throughput" in ctx.config:
            return [self._throughput(row, key, ds, ctx)]
        raise ResolveError(f"HLE rows are only defined for qualitative and throughput configs, not {ctx.config!r}")

    def _halves(self, ds: Any, ctx: ResolveContext) -> tuple[Any, Any, dict[Any, int]]:
        """(train half, test half, test-half index by id), computed once per fetch."""

        def build() -> tuple[Any, Any, dict[Any, int]]:
            split = ds.train_test_split(test_size=0.5, shuffle=True, seed=42)
            return split["train"], split["test"], index_by(split["test"], "id")

        return ctx.sources.derived((self.name, "halves"), build)

    def _pool(self, train: Any, category: str, ctx: ResolveContext) -> list[list[int]]:
        def build() -> list[list[int]]:
            tok = ctx.tokenizer
            return [
                tok.encode(prompts.HLE_DEMO.format(question=r["question"], rationale=r["rationale"]))
                for r in train
                if r["category"] == category and not r["image"]
            ]

        return ctx.sources.derived((self.name, "pool", category, ctx.tokenizer.name), build)

    def _throughput(self, row: dict[str, Any], key: str, ds: Any, ctx: ResolveContext) -> str:
        train, test, test_index = self._halves(ds, ctx)
        if key not in test_index:
            raise ResolveError(f"no row with id == {key!r} in the test half of cais/hle")
        example = row_at(test, test_index[key])
        category = str(field_of(example, "category"))
        tok, budget = ctx.tokenizer, ctx.num_tokens
        head = tok.encode(prompts.HLE_HEAD.format(category=category))
        question = tok.encode(str(example["question"]))
        pool = self._pool(train, category, ctx)
        rng = ctx.rng(self.name, str(row["question_id"]))
        ids, total = list(head), len(head) + len(question)
        while total < budget:
            if not pool:
                raise ResolveError(f"no text-only train-half HLE rows in category {category!r} to pad with")
            demo = rng.choice(pool)
            ids.extend(demo)
            total += len(demo)
        return tok.decode(ids[: budget - len(question) + 1] + question)
