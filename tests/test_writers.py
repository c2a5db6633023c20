"""Atomic writers: the destination holds the old file or the new one, never a part."""

from __future__ import annotations

import json

import pytest

from speedbench.data.builders.writers import write_messages_jsonl, write_samples
from speedbench.data.readers import read_file
from speedbench.data.sample import Sample

S = [
    Sample("a", "coding", "x", ("write code", "now test it"), "src", "1", None, True),
    Sample("b", "math", None, ("2+2?",), None, None, "easy", False),
]


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet"])
def test_round_trip(tmp_path, name) -> None:
    write_samples(S, tmp_path / name)
    assert read_file(tmp_path / name) == S
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_messages_form(tmp_path) -> None:
    write_messages_jsonl(S, tmp_path / "m.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows[0]["messages"] == [
        {"role": "user", "content": "write code"},
        {"role": "user", "content": "now test it"},
    ]
    assert "turns" not in rows[0] and rows[1]["difficulty"] == "easy"
    assert read_file(tmp_path / "m.jsonl") == S


def test_failure_mid_write_keeps_the_old_file(tmp_path) -> None:
    dest = tmp_path / "out.jsonl"
    write_samples(S[:1], dest)
    before = dest.read_bytes()

    def rows():
        yield S[1].to_dict()
        raise KeyboardInterrupt

    from speedbench.data.builders.writers import write_jsonl

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(rows(), dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
