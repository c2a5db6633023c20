"""``speedbench data …``: inspect, fetch, build, select and audit datasets.  Heavy imports stay inside.

Every command takes dataset names through :func:`speedbench.data.readers.load_dataset` (the one resolver
``speedbench run --dataset`` uses too); a missing optional dependency is one line naming the extra."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from speedbench.cli.common import fail, one_line, user_errors
from speedbench.errors import InvalidInput

data_app = typer.Typer(add_completion=False, help="Fetch, build, select, audit and inspect datasets.")

# dataset names in help texts (rich markup: "\\[" shows a bracket)
NAMES = "starter, a .jsonl/.parquet file, speed:<config>\\[@rev], mtbench, humaneval or specbench:PATH"

EmbedderOpt = Annotated[
    str,
    typer.Option(
        help="minilm (offline all-MiniLM-L6-v2), openai:text-embedding-3-small|-3-large (OPENAI_API_KEY), "
        "tfidf (no model)"
    ),
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="do not read or write the embedding cache")]


def _console() -> Any:
    from speedbench.report.console import make_console

    return make_console()


def _split(values: list[str]) -> list[str]:
    """Repeatable options that also take comma lists: --from a,b --from c -> [a, b, c]."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


class _Status:
    """A rich status line that long work reports progress to (off: updates are dropped)."""

    def __init__(self, console: Any, text: str, enabled: bool = True) -> None:
        self.status = console.status(text) if enabled else None
        self.text = text

    def __enter__(self) -> _Status:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def update(self, text: str) -> None:
        if self.status is not None:
            self.status.update(text)

    def embedded(self, done: int, total: int) -> None:
        self.update(f"{self.text}: {done}/{total} texts embedded")


def _embedder(spec: str, no_cache: bool, status: _Status) -> Any:
    from speedbench.embed import get_embedder

    return get_embedder(spec, cache=not no_cache, progress=status.embedded)


def _pool(specs: list[str]) -> Any:
    from speedbench.data.builders.pools import build_pool

    pool = build_pool(specs)
    if pool.duplicates:
        typer.echo(
            f"note: {len(pool.duplicates)} prompts appear in two sources and are kept once "
            f"(e.g. {pool.duplicates[0][0]} = {pool.duplicates[0][1]})",
            err=True,
        )
    return pool


@data_app.command("show")
def data_show(dataset: Annotated[str, typer.Argument(help=NAMES)] = "starter") -> None:
    """Counts per category and turn statistics."""
    from speedbench.data.readers import load_dataset
    from speedbench.report.datasets import samples_table

    try:
        samples = load_dataset(dataset)
    except user_errors() as e:
        fail(one_line(e))
        return
    t = samples_table(dataset, samples)
    _console().print(t)


@data_app.command("build")
def data_build(
    sources: Annotated[list[str], typer.Option("--from", help=f"{NAMES} (repeatable or comma-separated)")],
    out: Annotated[str, typer.Option(help="output file (.jsonl with turns, or .parquet)")],
) -> None:
    """Pool offline real data into one candidate file with SPEED-Bench's categories."""
    from collections import Counter

    from speedbench.data.builders.writers import write_samples
    from speedbench.data.readers import content_hash

    try:
        pool = _pool(_split(sources))
        write_samples(pool.samples, out)
    except user_errors() as e:
        fail(one_line(e))
        return
    counts = Counter(s.category for s in pool.samples)
    typer.echo(
        f"wrote {out}: {len(pool.samples)} prompts ({content_hash(pool.samples)[:19]}…): "
        + ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
    )


@data_app.command("select")
def data_select(
    pool_specs: Annotated[list[str], typer.Argument(metavar="POOL...", help=f"candidate pool(s): {NAMES}")],
    out: Annotated[
        str, typer.Option(help="selected prompts (.jsonl or .parquet); the record goes to OUT.selection.json")
    ],
    k: Annotated[int, typer.Option("--k", "-k", help="prompts per category")] = 80,
    method: Annotated[
        str, typer.Option(help="greedy+swap (default), greedy, or qp (the relaxation baseline)")
    ] = "greedy+swap",
    embedder: EmbedderOpt = "minilm",
    seed: Annotated[int, typer.Option(help="seed of each category's first greedy pick")] = 0,
    max_iter: Annotated[int, typer.Option(help="most swaps per category")] = 10_000,
    allow_short: Annotated[
        bool, typer.Option("--allow-short", help="take all of a category that has fewer than k")
    ] = False,
    no_cache: NoCache = False,
) -> None:
    """Pick k prompts per category minimising the sum of pairwise cosine similarities."""
    from speedbench.report.datasets import selection_table
    from speedbench.usecases import data as uc

    console = _console()
    try:
        specs = _split(pool_specs)
        samples = _pool(specs).samples
        with _Status(console, f"embedding {len(samples)} prompts with {embedder}") as status:
            embedded = uc.embed(samples, embedder, no_cache, status.embedded)
        with console.status(f"selecting {k} per category ({method})"):
            picked, sel = uc.select(
                specs, samples, embedded, out, k=k, method=method, seed=seed, max_iter=max_iter, allow_short=allow_short
            )
    except user_errors() as e:
        fail(one_line(e))
        return
    table = selection_table(sel, method, k, embedded.embedder.id)
    console.print(table)
    console.print(
        f"wrote {out} ({len(picked)} prompts) and {out}.selection.json ({sel.selection_hash()[:19]}…); "
        f"embedding took {embedded.seconds:.1f} s",
        markup=False,
    )


@data_app.command("audit")
def data_audit(
    files: Annotated[list[str], typer.Argument(metavar="FILE...", help=f"prompt sets: {NAMES}")],
    pool: Annotated[
        Optional[str], typer.Option(help="the candidate pool the sets were chosen from (random subsets come from it)")
    ] = None,
    embedder: EmbedderOpt = "minilm",
    draws: Annotated[int, typer.Option(help="random subsets per baseline (>= 10)")] = 20,
    seed: Annotated[int, typer.Option()] = 0,
    threshold: Annotated[float, typer.Option(help="near-duplicate cosine threshold")] = 0.95,
    plot: Annotated[
        Optional[str], typer.Option(help="also draw the figures into this PNG (needs the report extra)")
    ] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="also write the figures as JSON")] = None,
    no_cache: NoCache = False,
) -> None:
    """Mean pairwise cosine per category and overall vs random subsets; near-duplicates; a plot with --plot."""
    from speedbench.report.datasets import audit_table
    from speedbench.usecases import data as uc

    console = _console()
    try:
        uc.check_plot(plot)  # before the embedding: a missing plotting library fails at once
        with _Status(console, f"embedding with {embedder}") as status:
            result, png = uc.audit(
                files, pool, _embedder(embedder, no_cache, status), draws=draws, seed=seed, threshold=threshold,
                plot=plot, json_out=json_out,
            )  # fmt: skip
    except user_errors() as e:
        fail(one_line(e))
        return
    t = audit_table(result)
    console.print(t)
    for f, pairs in result.near_duplicates.items():
        for a, b, cos in pairs[:10]:
            console.print(f"near-duplicate in {Path(f).name}: {a} ~ {b} (cos {cos:.3f})", markup=False)
        if len(pairs) > 10:
            console.print(f"… {len(pairs) - 10} more near-duplicate pairs in {Path(f).name} (see --json)", markup=False)
    if png is not None:
        console.print(f"plot: {png}", markup=False)


@data_app.command("fetch")
def data_fetch(
    config: Annotated[
        list[str],
        typer.Option(
            "--config", help="qualitative, throughput_1k|2k|8k|16k|32k or all (repeatable or comma-separated)"
        ),
    ] = ["qualitative"],  # noqa: B006
    revision: Annotated[
        Optional[str], typer.Option(help="nvidia/SPEED-Bench revision (default: the pinned commit)")
    ] = None,
    source: Annotated[Optional[str], typer.Option(help="a local copy of nvidia/SPEED-Bench instead of the Hub")] = None,
    sources_dir: Annotated[
        Optional[str], typer.Option(help="local copies of the upstream sources, as DIR/<repo id>")
    ] = None,
    out_dir: Annotated[
        Optional[str], typer.Option(help="cache folder (default: <speedbench cache>/datasets/speed-bench)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the per-row random choices some resolvers make")] = 0,
    source_revision: Annotated[
        list[str],
        typer.Option("--source-revision", help="NAME=REV: override one resolver's pinned source revision (repeatable)"),
    ] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Download SPEED-Bench, resolve its placeholder rows from their sources, write parquet + jsonl."""
    from speedbench.data.builders import speed_bench as sb

    console = _console()
    try:
        pins = {}
        for item in source_revision:
            name, sep, rev = item.partition("=")
            if not sep or not name or not rev:
                raise InvalidInput(f"--source-revision {item!r}: expected NAME=REV")
            pins[name.strip()] = rev.strip()
        configs = sb.expand_configs(_split(config))
        with _Status(console, "loading SPEED-Bench", enabled=progress) as status:

            def on_progress(cfg: str, resolver: str, done: int, total: int) -> None:
                status.update(f"{cfg}: resolving {resolver} {done}/{total}")

            result = sb.fetch(
                configs,
                revision=revision,
                source=source,
                sources_dir=sources_dir,
                out_dir=out_dir,
                seed=seed,
                progress=on_progress,
                source_revisions=pins or None,
            )
    except user_errors() as e:
        fail(one_line(e))
        return
    for c in result.configs.values():
        resolved = ", ".join(f"{k} {v}" for k, v in c.resolved.items()) or "none"
        console.print(
            f"{c.config}: {c.rows} rows ({c.content_hash[:19]}…), resolved from sources: {resolved}", markup=False
        )
        console.print(f"  {c.parquet}\n  {c.jsonl}", markup=False)
    names = ", ".join(f"speed:{c}" for c in result.configs)
    console.print(
        f"revision {result.revision}; use with `speedbench run --dataset {names.split(', ')[0]}`"
        + (f" (or {names})" if len(result.configs) > 1 else ""),
        markup=False,
    )


@data_app.command("build-throughput")
def data_build_throughput(
    out: Annotated[
        Optional[str], typer.Option(help="output folder: throughput_<bucket>.parquet (+ .meta.jsonl) per bucket")
    ] = None,
    bucket: Annotated[
        list[str],
        typer.Option("--bucket", "-b", help="1k, 2k, 8k, 16k, 32k (repeatable or comma-separated; default all)"),
    ] = [],  # noqa: B006
    tier: Annotated[list[str], typer.Option(help="low_entropy, mixed, high_entropy (default all)")] = [],  # noqa: B006
    count_per_tier: Annotated[
        int, typer.Option(help="prompts per bucket and tier (official: 512, 1,536 a bucket)")
    ] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    source: Annotated[list[str], typer.Option(help="limit to these offline text sources (see --list-sources)")] = [],  # noqa: B006
    list_sources: Annotated[
        bool, typer.Option("--list-sources", help="list the offline text sources and exit")
    ] = False,
    target_tokenizer: Annotated[
        Optional[str],
        typer.Option(help="HF tokenizer folder or smollm2: report the ISL the engine sees (chat template applied)"),
    ] = None,
    repad_to_target: Annotated[
        bool,
        typer.Option(
            "--repad-to-target", help="re-cut/re-pad so the templated ISL under --target-tokenizer equals the bucket"
        ),
    ] = False,
) -> None:
    """Build the throughput split offline: exactly N×1000 o200k_base tokens per prompt, three entropy tiers."""
    from speedbench.data.builders import offline_text
    from speedbench.data.builders.throughput import (
        BUCKETS,
        TIERS,
        build_throughput,
        throughput_report,
        write_throughput,
    )
    from speedbench.report.datasets import throughput_table

    console = _console()
    if list_sources:
        for t in TIERS:
            for name in offline_text.source_names(t):
                console.print(f"{t:13s} {name:24s} {offline_text.origin_of(name)}", markup=False)
        return
    if out is None:
        fail("--out is required: the folder to write throughput_<bucket>.parquet into")
        return
    buckets = _split(bucket) or list(BUCKETS)
    tiers = _split(tier) or list(TIERS)
    rows: list[dict[str, Any]] = []
    try:
        for b in buckets:
            if b not in BUCKETS:
                raise InvalidInput(f"--bucket {b!r}: use one of {', '.join(BUCKETS)}")
        for t in tiers:
            if t not in TIERS:
                raise InvalidInput(f"--tier {t!r}: use one of {', '.join(TIERS)}")
        with _Status(console, "building throughput prompts") as status:
            for b in buckets:

                def on_progress(done: int, total: int, label: str, b: str = b) -> None:
                    status.update(f"throughput_{b}: {done}/{total} prompts ({label})")

                build = build_throughput(
                    [b],
                    tiers,
                    count_per_tier,
                    seed=seed,
                    sources=_split(source) or None,
                    target_tokenizer=target_tokenizer,
                    repad_to_target=repad_to_target,
                    progress=on_progress,
                )
                dest = Path(out) / f"throughput_{b}.parquet"
                write_throughput(build, dest)
                rows += throughput_report(build)
                for note in build.notes:
                    console.print(f"note: {note}", markup=False)
                console.print(f"wrote {dest} ({len(build)} prompts, {build.timings.get(b, 0.0):.0f} s)", markup=False)
    except user_errors() as e:
        fail(one_line(e))
        return
    table = throughput_table(rows, target_tokenizer)
    console.print(table)


@data_app.command("synthetic")
def data_synthetic(
    isl: Annotated[int, typer.Option(help="prompt length in tokens of --tokenizer")],
    out: Annotated[str, typer.Option(help="output file (.jsonl or .parquet)")],
    count: Annotated[int, typer.Option(help="prompts")] = 512,
    tokenizer: Annotated[str, typer.Option(help="o200k_base, a HF tokenizer folder, or smollm2")] = "o200k_base",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Random-token prompts (vLLM-style, seeded) of exactly --isl tokens, for synthetic-vs-real comparisons."""
    from speedbench.usecases import data as uc

    try:
        samples = uc.synthetic(isl, out, count, tokenizer, seed)
    except user_errors() as e:
        fail(one_line(e))
        return
    typer.echo(f"wrote {out}: {len(samples)} random-token prompts of {isl} {tokenizer} tokens (seed {seed})")
