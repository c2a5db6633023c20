"""Pool several question sets into one candidate file (``speedbench data build``).

Any name :func:`speedbench.data.readers.load_dataset` takes can be pooled (``mtbench``, ``humaneval``,
``specbench:PATH``, files, ``speed:<config>``); a prompt that appears in two sources (Spec-Bench contains
MT-Bench) is kept once, the first time it is seen, and the dropped ids are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from speedbench.data.readers import load_dataset
from speedbench.data.sample import DatasetError, Sample


@dataclass
class Pool:
    samples: list[Sample]
    sources: list[str]
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped id, kept id)


def build_pool(specs: list[str]) -> Pool:
    """Pool several sources; the same prompt text twice is kept once (the first)."""
    samples: list[Sample] = []
    seen_text: dict[tuple[str, ...], str] = {}
    seen_id: set[str] = set()
    dups: list[tuple[str, str]] = []
    for spec in specs:
        for s in load_dataset(spec):
            if s.question_id in seen_id:
                raise DatasetError(spec, None, "question_id", f"{s.question_id!r} appears in two sources")
            if s.turns in seen_text:
                dups.append((s.question_id, seen_text[s.turns]))
                continue
            seen_text[s.turns] = s.question_id
            seen_id.add(s.question_id)
            samples.append(s)
    return Pool(samples=samples, sources=list(specs), duplicates=dups)
