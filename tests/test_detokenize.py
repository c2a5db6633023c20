"""The incremental detokenizer: streamed deltas + flush() == the one-shot decode, for any chunking.

Tokenizers: SmolLM2's (byte-level BPE: a CJK character or an emoji is split across tokens) and a
SentencePiece-style one built here (Metaspace + byte fallback + a decoder that strips the leading
space of whatever it decodes, as Llama's does), also with transformers' clean_up_tokenization_spaces."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("transformers")
from speedbench.engines.detokenize import REPLACEMENT, IncrementalDetokenizer  # noqa: E402

TEXTS = [
    "请用通俗易懂的语言解释什么是复利，并举一个每月定期存款的例子（假设年利率为3%）。",
    "来週、会社の同僚の送別会で短いスピーチをします。한국어 문단을 영어로 번역하세요.",
    "family 👨‍👩‍👧‍👦 coder 👩🏽‍💻 thumbs 👍🏿👍🏻 flags 🇯🇵🇫🇷 rainbow 🏳️‍🌈 keycap 1️⃣ done",
    "combining: e\u0301 a\u0308 n\u0303 o\u0302\u0323 Z\u0335\u0321\u0322a\u0337lgo; precomposed é ä ñ",
    "plain ASCII: the quick brown fox jumps over the lazy dog. It's fine, isn't it? Yes !",
    "mixed 你好, world 🌍! 混合 text with 😀 and ümlauts, ½ ∑ → ∞, then 終わり end",
]


def llama_like(cleanup: bool = False):
    """A tiny SentencePiece-style BPE: '▁' for spaces, bytes for anything outside its English vocab."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    corpus = ["the quick brown fox jumps over the lazy dog. it's a test, isn't it? yes! we've done, they're e"]
    base.train_from_iterator(corpus * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    model = json.loads(base.to_str())["model"]
    vocab = dict(model["vocab"])
    for i in range(256):  # byte fallback tokens are ordinary vocabulary, not special
        vocab.setdefault(f"<0x{i:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = base.normalizer
    tok.pre_tokenizer = base.pre_tokenizer
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", clean_up_tokenization_spaces=cleanup
    )
    if cleanup:  # transformers skips the clean-up for BPE models unless told otherwise
        fast.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    return fast


@pytest.fixture(scope="module")
def smollm2_tok(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))


@pytest.fixture(scope="module", params=["smollm2", "llama_like", "llama_like_cleanup"])
def tokenizer(request):
    if request.param == "smollm2":
        return request.getfixturevalue("smollm2_tok")
    return llama_like(cleanup=request.param.endswith("cleanup"))


def chunkings(n: int, seed: int = 0):
    for size in (1, 2, 3, 5):
        yield [size] * ((n + size - 1) // size)
    rng = random.Random(seed)
    for _ in range(12):
        sizes, left = [], n
        while left > 0:
            sizes.append(min(left, rng.choice([1, 1, 2, 3, 4, 7])))
            left -= sizes[-1]
        yield sizes


def stream(tok, ids, sizes):
    d = IncrementalDetokenizer(tok)
    deltas, i = [], 0
    for s in sizes:
        deltas.append(d.push(ids[i : i + s]))
        i += s
    return deltas, d.flush()


def id_lists(tok):
    """Each text's ids, with special tokens inside, and cut in the middle of its last character."""
    eos, bos = tok.eos_token_id, tok.bos_token_id
    out = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append(ids)
        mid = len(ids) // 2
        out.append(ids[:mid] + [eos] + ids[mid:] + [eos])  # skipped special tokens inside and at the end
        out.append([bos] + ids)
    emoji = tok("ends in an emoji 👩🏽‍💻", add_special_tokens=False)["input_ids"]
    out.append(emoji[:-1])  # the one-shot decode itself ends with U+FFFD here
    return out


def test_deltas_add_up_to_the_one_shot_decode(tokenizer):
    split_chars = 0
    for n, ids in enumerate(id_lists(tokenizer)):
        full = tokenizer.decode(ids, skip_special_tokens=True)
        for sizes in chunkings(len(ids), seed=n):
            deltas, rest = stream(tokenizer, ids, sizes)
            assert "".join(deltas) + rest == full, (full, sizes, deltas, rest)
            if REPLACEMENT not in full:
                assert not any(REPLACEMENT in d for d in deltas + [rest]), (sizes, deltas)
            if full and full[-1].isascii() and full[-1].isalpha():
                assert rest == "", (sizes, rest)  # nothing complete is held back until the end
        split_chars += sum(REPLACEMENT in tokenizer.decode([i]) for i in ids)
    assert split_chars > 10  # the texts do split characters across tokens with this tokenizer


def test_naive_delta_arithmetic_corrupts_the_same_ids(smollm2_tok):
    """What the engine did before: decode everything, send text[len(sent):]; it breaks on these texts."""
    ids = smollm2_tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    sent, text_so_far = [], ""
    for i in range(len(ids)):
        text = smollm2_tok.decode(ids[: i + 1], skip_special_tokens=True)
        sent.append(text[len(text_so_far) :])
        text_so_far = text
    assert "".join(sent) != smollm2_tok.decode(ids, skip_special_tokens=True)
    deltas, rest = stream(smollm2_tok, ids, [1] * len(ids))
    assert "".join(deltas) + rest == smollm2_tok.decode(ids, skip_special_tokens=True)


def test_the_window_stays_small(smollm2_tok):
    """Each push decodes a few tokens from prefix_offset, not the whole reply."""
    ids = smollm2_tok(" ".join(TEXTS) * 4, add_special_tokens=False)["input_ids"]
    d = IncrementalDetokenizer(smollm2_tok)
    widest = 0
    for t in ids:
        d.push([t])
        widest = max(widest, len(d.ids) - d.prefix_offset)
    assert widest <= 8 and len(ids) > 400
    assert d.flush() == "" and d.text == smollm2_tok.decode(ids, skip_special_tokens=True)
    with pytest.raises(RuntimeError):
        d.push([ids[0]])


def test_keeps_special_tokens_when_asked(smollm2_tok):
    ids = smollm2_tok("héllo 你好", add_special_tokens=False)["input_ids"] + [smollm2_tok.eos_token_id]
    d = IncrementalDetokenizer(smollm2_tok, skip_special_tokens=False)
    text = "".join(d.push([t]) for t in ids) + d.flush()
    assert text == smollm2_tok.decode(ids, skip_special_tokens=False) and text.endswith(smollm2_tok.eos_token)
