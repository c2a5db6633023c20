"""Throughput-config sources whose prompts are sized to the config's token budget.

Reference (speed.py ``_fetch_all_turns_data``), tokens counted with o200k_base (see ``tokens.py``):
- BAMBOO: the row's ``source`` is the jsonl file; every ``_<n>`` of src_id is a row; their ``content``
  goes into the "long dialogue completer" prompt, padded or cut to the budget.
- Ada-LEval StackSelect: the row's ``source`` is the json file; the row whose ``question_id`` equals src_id
  gives question, ``all_answers`` and ``answer``; answers are kept while each fits the budget, shuffled,
  numbered A1.., then padded or cut.
- Ada-LEval TextSort: src_id's 2nd ``_`` field is the row; its ``prompt`` with the instruction swapped,
  padded or cut.
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
    ints_after_underscores,
    src_id_of,
)
from speedbench.data.builders.resolvers.loading import row_at, row_by, source_file
from speedbench.data.builders.resolvers.tokens import Tokenizer, pad_or_truncate


class Bamboo(Resolver):
    name = "bamboo"
    match = "RUCAIBox/BAMBOO"
    default_pin = SourcePin("RUCAIBox/BAMBOO", None, from_row=True, note="GitHub jsonl named by the row's source URL")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ids = ints_after_underscores(src_id_of(row))
        if not ids:
            raise ResolveError(f"src_id {row['src_id']!r} names no rows")
        ds = ctx.sources.files(self.name, [source_file(str(row["source"]), self.pin.repo_id)])
        contents = [str(field_of(row_at(ds, i), "content")) for i in ids]
        return [pad_or_truncate(prompts.writing_prompt(contents), ctx.num_tokens, ctx.tokenizer)]


def stackselect_prompt(question: str, answers: list[str], answer: str, budget: int, tok: Tokenizer, rng: Any) -> str:
    """The StackSelect prompt. As in the reference, each candidate answer is tested against the budget on
    its own (the running total is not increased), the correct answer is always kept, and the kept answers
    are shuffled before numbering."""
    head = prompts.STACKSELECT_INSTRUCTION + "The question is given below.\n" + question + "\n\n"
    head += "Possible answers are given below.\n"
    try:
        correct = int(answer.strip("A")) - 1
        correct_text = answers[correct]
    except (ValueError, IndexError):
        raise ResolveError(f"answer {answer!r} does not name one of {len(answers)} answers") from None
    fixed = (
        len(tok.encode(head))
        + len(tok.encode(prompts.STACKSELECT_END))
        + len(tok.encode(f"{answer}:\n\n{correct_text}\n\n"))
    )
    stop = 0
    for i, text in enumerate(answers):
        if i == correct:
            continue
        if fixed + len(tok.encode(f"A{i + 1}:\n\n{text}\n\n")) > budget:
            break
        stop = i
    kept = list(answers[: stop + 1]) if stop >= correct else [correct_text, *answers[: stop + 1]]
    rng.shuffle(kept)
    body = "".join(f"A{i}:\n\n{text}\n\n" for i, text in enumerate(kept, start=1))
    return head + body + prompts.STACKSELECT_END


class AdaLEvalStackSelect(Resolver):
    name = "adaleval_stackselect"
    match = "AdaLEval/stackselect"
    default_pin = SourcePin("AdaLEval", None, from_row=True, note="json file named by the row's source URL")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ref = source_file(str(row["source"]), self.pin.repo_id)
        ds = ctx.sources.files(self.name, [ref])
        src = row_by(ctx.sources, (self.name, ref.url), ds, "question_id", src_id_of(row), where=ref.url)
        budget = ctx.num_tokens
        prompt = stackselect_prompt(
            str(field_of(src, "question")),
            [str(a) for a in field_of(src, "all_answers")],
            str(field_of(src, "answer")),
            budget,
            ctx.tokenizer,
            ctx.rng(self.name, str(row["question_id"])),
        )
        return [pad_or_truncate(prompt, budget, ctx.tokenizer)]


class AdaLEvalTextSort(Resolver):
    name = "adaleval_textsort"
    match = "AdaLEval/textsort"
    default_pin = SourcePin("AdaLEval", None, from_row=True, note="json file named by the row's source URL")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        ds = ctx.sources.files(self.name, [source_file(str(row["source"]), self.pin.repo_id)])
        src = row_at(ds, index_part(src_id_of(row), "second"))
        text = str(field_of(src, "prompt")).replace(prompts.TEXTSORT_ORIGINAL, prompts.TEXTSORT_REPLACEMENT, 1)
        return [pad_or_truncate(text, ctx.num_tokens, ctx.tokenizer)]
