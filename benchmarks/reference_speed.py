#!/usr/bin/env python
"""Reference engine speed on this machine (figures printed, never asserted).

1. ``hf``: batch size 1, greedy, the same prompts and model (SmolLM2-135M-Instruct): our
   ``ngram`` and ``none`` vs transformers' own ``generate`` with and without prompt lookup
   (``prompt_lookup_num_tokens=k``).  Each side: prefill + decode of every prompt, tokens/s =
   generated tokens / wall time.  Outputs are compared token for token.
2. ``batch``: ``none`` and ``ngram`` through the engine and the load generator at concurrency
   1, 8 and 32 on the first turns of the starter set: aggregate output tok/s and AL.

    python benchmarks/reference_speed.py                 # both parts
    python benchmarks/reference_speed.py --part hf --prompts 8 --output-len 64
    python benchmarks/reference_speed.py --part batch --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import time
import warnings

warnings.filterwarnings("ignore")


def first_turn_samples(n: int):
    from speedbench.data.readers import load_dataset, pick_stratified

    out = []
    for s in pick_stratified(load_dataset("starter"), n, seed=0):
        out.append(s.__class__(**{**s.to_dict(), "turns": s.turns[:1], "multiturn": False}))
    return out


def part_hf(n_prompts: int, output_len: int, k: int, threads: int) -> None:
    import torch

    from speedbench.engines import hf_models
    from speedbench.engines.reference_batch import BatchDecoder, Seq

    torch.set_num_threads(threads)
    model, tok, _ = hf_models.load(None)
    samples = first_turn_samples(n_prompts)
    prompts = []
    for s in samples:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": s.turns[0]}], add_generation_prompt=True, tokenize=True
        )
        prompts.append([int(x) for x in (ids["input_ids"] if hasattr(ids, "keys") else ids)])

    eos = frozenset([int(tok.eos_token_id)])

    def ours(method: str) -> tuple[float, list[list[int]]]:
        outs: list[list[int]] = []
        t0 = time.perf_counter()
        for p in prompts:
            dec = BatchDecoder(model, method, k)
            got: list[int] = []
            dec.add(
                Seq(
                    0,
                    list(p),
                    len(p),
                    output_len,
                    0.0,
                    eos,
                    False,
                    torch.Generator(),
                    lambda t, f, r, got=got: got.extend(t),
                )
            )
            while dec.active:
                dec.step()
            outs.append(got)
        return time.perf_counter() - t0, outs

    def hf(lookup: bool) -> tuple[float, list[list[int]]]:
        outs = []
        t0 = time.perf_counter()
        for p in prompts:
            ids = torch.tensor([p])
            kw = {"prompt_lookup_num_tokens": k} if lookup else {}
            with torch.inference_mode():
                out = model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=output_len, do_sample=False, **kw
                )
            outs.append(out[0, len(p) :].tolist())
        return time.perf_counter() - t0, outs

    runs = {}
    for name, fn in (
        ("hf none", lambda: hf(False)),
        ("hf prompt lookup", lambda: hf(True)),
        ("ours none", lambda: ours("none")),
        ("ours ngram", lambda: ours("ngram")),
    ):
        fn_time, outs = fn()
        runs[name] = (fn_time, outs)
    n_tokens = sum(len(o) for o in runs["ours ngram"][1])
    print(
        f"\n[hf] SmolLM2-135M-Instruct, batch 1, greedy, {len(prompts)} prompts x {output_len} tokens, "
        f"k={k}, torch threads {threads}"
    )
    print(f"{'run':<18} {'wall s':>8} {'tok/s':>8}")
    for name, (t, outs) in runs.items():
        print(f"{name:<18} {t:8.2f} {sum(len(o) for o in outs) / t:8.2f}")
    ours_tps = n_tokens / runs["ours ngram"][0]
    hf_tps = sum(len(o) for o in runs["hf prompt lookup"][1]) / runs["hf prompt lookup"][0]
    print(f"ours ngram / hf prompt lookup: {ours_tps / hf_tps:.2f}x (goal >= 1.0x)")
    same = sum(a == b for a, b in zip(runs["ours ngram"][1], runs["hf none"][1], strict=True))
    print(f"token-identical to hf greedy: {same}/{len(prompts)} prompts")


def part_batch(levels: list[int], output_len: int, k: int, threads: int, n: int) -> None:
    from speedbench.config import EngineSpec
    from speedbench.engines.reference import ReferenceEngine
    from speedbench.load.drivers.inprocess import run_load
    from speedbench.load.generator import LoadSettings
    from speedbench.metrics.aggregate import summarize
    from speedbench.metrics.sources import DecodeBasis

    samples = first_turn_samples(n)
    print(
        f"\n[batch] SmolLM2-135M-Instruct through the engine and load generator, {len(samples)} first turns, "
        f"output {output_len}, k={k}, torch threads {threads}"
    )
    print(f"{'sd':<6} {'conc':>5} {'out tok/s':>10} {'AL':>6} {'wall s':>8}")
    base: dict[str, float] = {}
    for sd in ("none", "ngram"):
        for c in levels:
            records = []
            eng = ReferenceEngine(
                EngineSpec(
                    kind="reference", sd=sd, draft_length=k, options={"threads": str(threads)}, max_concurrency=c
                )
            )

            async def go(eng=eng, c=c, records=records):
                await eng.start()
                try:
                    await run_load(
                        eng,
                        samples,
                        LoadSettings(concurrency=c, output_len=output_len, warmup=0, timeout_s=3600),
                        records.append,
                    )
                finally:
                    await eng.close()

            t0 = time.perf_counter()
            asyncio.run(go())
            wall = time.perf_counter() - t0
            s = summarize(records, DecodeBasis(k))
            tps = s["overall"]["output_tps"] or 0.0
            base.setdefault(sd, tps)
            al = s["overall"]["acceptance_length"]
            print(
                f"{sd:<6} {c:>5} {tps:>10.1f} {al if al is not None else float('nan'):>6.3f} {wall:>8.1f}"
                f"   ({tps / base[sd]:.2f}x conc {levels[0]})"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["hf", "batch", "all"], default="all")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--batch-requests", type=int, default=32)
    a = ap.parse_args()
    if a.part in ("hf", "all"):
        part_hf(a.prompts, a.output_len, a.k, a.threads)
    if a.part in ("batch", "all"):
        part_batch([int(x) for x in a.concurrency.split(",")], a.output_len, a.k, a.threads, a.batch_requests)


if __name__ == "__main__":
    main()
