"""A sweep's configuration, grid and plan (docs/sweep.md): what ``speedbench sweep`` will run, built and checked
before anything starts; usecases/sweep/runner.py runs it.

``SweepConfig`` is the grid plus the base run config every cell starts from (flags merged over a TOML file);
``expand`` turns it into cells and launch groups; ``build_plan`` reads the datasets, builds (without starting)
each launch group's engine and counts the work; ``create`` / ``resume_plan`` make or reopen the sweep directory.

Launch groups: cells that share everything launch-time (engine, model, SD method, draft length, draft model,
server args, engine options) share one engine, started once with ``engines.build.open_engine`` and sized for the
group's largest concurrency; concurrency is set client-side per cell.  Where the batch cap itself changes what
is measured (``PER_CONCURRENCY_LAUNCH``) each concurrency gets its own start; with ``--repeats N`` each repeat
gets its own starts too (run-to-run noise includes the engine start).

Pairing: every SD cell has its baseline cell with the same dataset, -n and seed (so the same question ids), the
same output length, concurrency, engine options and repeat.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from speedbench.config import REDACTED, EngineSpec, RunConfig, Secrets, engine_secrets, redact, redact_urls, url_secrets
from speedbench.config.sweep import SweepConfig, SweepConfigError
from speedbench.data.readers import load_dataset, pick_stratified
from speedbench.engines import registry
from speedbench.engines.build import build_engine
from speedbench.results.rundir import RunDir, RunDirError
from speedbench.results.sweep_manifest import CellSettings, LaunchGroup, SweepCell, SweepDir, SweepManifest, read_sweep
from speedbench.usecases import run as run_uc

BASELINE = "none"

# Engines whose batch cap changes what a run measures, so a sweep starts them once per concurrency (the cap then
# equals the cell's concurrency) instead of once per launch group sized for its largest.  It applies when
# speedbench starts the engine itself (in-process, or --launch); an attached server is what it is.  Every other
# engine (vLLM --max-num-seqs, SGLang --max-running-requests, TRT-LLM, the mock) only caps the batch, which the
# client's concurrency never exceeds.  (A Capabilities field in engines/registry.py would be the place for this
# fact; it is kept here until one is added.)
PER_CONCURRENCY_LAUNCH: dict[str, str] = {
    "llamacpp": "-np C splits the context into C slots: each request's context is the total over C",
    "reference": "max_batch sizes the batched decoder: every step computes over all its slots",
}

# Engines whose every random choice follows one engine option (the mock: acceptance draws, faults, step-time
# noise): with --repeats, repeat r runs with that option set to r - 1 (unless the user fixed or varied it), so
# that its repeats differ as runs of a real engine do.  A real engine's runs differ by themselves.
REPEAT_SEED_OPTION: dict[str, str] = {"mock": "seed"}

# datasets run with ignore_eos and the fixed output length by default, so that the token counts of a pair match:
# the throughput split (speed:throughput_<N>k, throughput_<N>k.parquet) and random-token synthetic prompts
FIXED_LENGTH_PREFIXES = ("throughput", "synthetic")

# RunConfig fields the sweep sets per cell: refused in the base config ([run] of the TOML file)
SET_BY_SWEEP = {
    "concurrency": "grid.concurrency (--concurrency)",
    "draft_length": "grid.draft_length (--draft-length)",
    "engine.sd": "grid.sd (--sd)",
    "engine.draft_length": "grid.draft_length (--draft-length)",
    "engine.max_concurrency": "each launch group's largest concurrency",
    "engine.log_dir": "the sweep directory (groups/<group id>/)",
    "dataset.name": "grid.dataset (--dataset)",
    "out": "out (--out)",
}
# -E keys the grid owns (the mock's k): the draft length comes from grid.draft_length
GRID_OWNED_OPTIONS = ("k", "draft_length")


# ---------------------------------------------------------------------------------------------- configuration


def read_toml(path: str | Path) -> dict[str, Any]:
    """A sweep TOML file as a dict; one line for a missing file or invalid TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SweepConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepConfigError(f"--config {path}: invalid TOML: {str(e).splitlines()[0]}") from None


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: tables key by key (recursively), anything else replaced (flags override the
    file: a list given by a flag replaces the file's list; ``-E`` keys are merged into the file's options)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _has(table: Mapping[str, Any], dotted: str) -> bool:
    obj: Any = table
    for part in dotted.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return False
        obj = obj[part]
    return True


def _option_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


def validation_line(e: ValidationError) -> str:
    """A pydantic error in one line naming each field (``grid.concurrency.0: ...``)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def sweep_config(data: Mapping[str, Any]) -> SweepConfig:
    """The SweepConfig a TOML file's tables (with the flags merged over them) describe; refused in one line
    naming the field (an unknown key, a wrong type, a field the grid sets given in [run], ...)."""
    raw: dict[str, Any] = copy.deepcopy(dict(data))
    run = raw.get("run", {})
    if not isinstance(run, dict):
        raise SweepConfigError("run: a table is expected (the base run config)")
    for dotted, instead in SET_BY_SWEEP.items():
        if _has(run, dotted):
            raise SweepConfigError(f"run.{dotted}: set by the sweep ({instead}), not in the base config")
    if "ignore_eos" in run:  # an explicit choice: every cell; absent: chosen per dataset
        ignore = run.pop("ignore_eos")
        raw.setdefault("ignore_eos", ignore)  # the flag (top level) wins
    engine = run.get("engine")
    if isinstance(engine, dict) and isinstance(engine.get("options"), dict):
        engine["options"] = {str(k): _option_text(v) for k, v in engine["options"].items()}
    raw["run"] = run
    try:
        config = SweepConfig.model_validate(raw)
    except ValidationError as e:
        raise SweepConfigError(validation_line(e)) from None
    if config.urls and config.grid.model_fields_set & {"sd", "draft_length"}:
        raise SweepConfigError(
            "urls (--url): the SD settings are the URLs' keys (none, METHOD:kK); drop grid.sd / grid.draft_length "
            "(--sd / --draft-length)"
        )
    check(config)
    return config


@dataclass(frozen=True)
class Setting:
    """One SD setting: ``none`` / k 0 (the baseline) or a method and a draft length; ``url``: its attached server."""

    sd: str
    k: int
    url: str | None = None

    @property
    def key(self) -> str:
        return BASELINE if self.sd == BASELINE else f"{self.sd}:k{self.k}"


_URL_KEY = re.compile(r"^(?P<sd>[A-Za-z0-9_]+):k(?P<k>[0-9]+)$")


def parse_setting(key: str) -> tuple[str, int]:
    """``none`` or ``METHOD:kK`` (e.g. ``ngram:k3``) -> (sd, k)."""
    key = key.strip().lower()
    if key == BASELINE:
        return BASELINE, 0
    m = _URL_KEY.match(key)
    if not m or int(m["k"]) < 1 or m["sd"] == BASELINE:
        raise SweepConfigError(f"urls: {key!r}: expected 'none' or METHOD:kK (e.g. ngram:k3, k >= 1)")
    return m["sd"], int(m["k"])


def sd_settings(config: SweepConfig) -> list[Setting]:
    """The SD settings of a sweep: the baseline first (when the grid has one), then method x draft length; with
    one attached server per setting (``urls``), the URLs' keys."""
    if config.urls:
        parsed = [(parse_setting(key), url) for key, url in config.urls.items()]
        parsed.sort(key=lambda p: p[0][0] != BASELINE)
        return [Setting(sd, k, url) for (sd, k), url in parsed]
    out = [Setting(BASELINE, 0)] if config.grid.baseline or BASELINE in config.grid.sd else []
    out += [Setting(m, k) for m in config.grid.sd if m != BASELINE for k in config.grid.draft_length]
    return out


def attached(spec: EngineSpec) -> bool:
    """The engine talks to a server speedbench neither runs nor launches (its SD is whatever the server runs)."""
    return not spec.launch and not registry.capabilities(spec.kind).in_process


def check(config: SweepConfig) -> None:
    """The rules a grid must follow before anything is built (one line each)."""
    e = config.run.engine
    caps = registry.capabilities(e.kind)  # an unknown engine: one line with "did you mean"
    for key in GRID_OWNED_OPTIONS:
        if key in e.options or key in config.grid.engine_options:
            raise SweepConfigError(f"-E {key}: the grid sets the draft length (--draft-length / grid.draft_length)")
    both = sorted(set(e.options) & set(config.grid.engine_options))
    if both:
        raise SweepConfigError(f"-E {both[0]} is both fixed (-E) and varied (-G / grid.engine_options): give one")
    settings = sd_settings(config)
    keys = [s.key for s in settings]
    if not settings:
        raise SweepConfigError("the grid has no SD setting: give --sd, or keep the baseline")
    if len(set(keys)) != len(keys):
        raise SweepConfigError(f"urls: the same SD setting twice ({', '.join(keys)})")
    for s in settings:
        if s.sd != BASELINE and s.sd not in caps.sd_methods:
            raise SweepConfigError(
                f"--sd {s.sd!r} is not supported by engine {e.kind!r} (choose from: {', '.join(caps.sd_methods)})"
            )
    if config.urls:
        if not attached(e):
            raise SweepConfigError(
                "--url (one attached server per SD setting) is for attached engines: drop it, or drop --launch"
            )
        if e.base_url or e.metrics_url:
            raise SweepConfigError(
                "--url gives each SD setting its own server: drop --base-url and --metrics-url (each server's "
                "/metrics is read)"
            )
        if config.grid.baseline and BASELINE not in config.urls:
            raise SweepConfigError(
                "urls: no 'none' server (SD off): every SD cell needs its baseline; add --url none=URL or pass "
                "--no-baseline"
            )
    elif attached(e) and len(settings) > 1:
        raise SweepConfigError(
            f"attached to one server (--base-url): only concurrency and dataset can vary, but the grid has "
            f"{len(settings)} SD settings ({', '.join(keys)}); give one (--sd none, or --sd METHOD "
            "--draft-length K --no-baseline) or one server per setting (--url none=URL --url ngram:k3=URL ...)"
        )


# ---------------------------------------------------------------------------------------------- the grid


def relaunch_per_concurrency(spec: EngineSpec) -> bool:
    """Whether a sweep starts this engine once per concurrency (``PER_CONCURRENCY_LAUNCH``)."""
    return spec.kind in PER_CONCURRENCY_LAUNCH and not attached(spec)


def fixed_length_dataset(name: str) -> bool:
    """Throughput and synthetic datasets by name: ``speed:throughput_1k``, ``…/throughput_8k.parquet``,
    ``synthetic-isl1000.jsonl``."""
    base = name.split(":", 1)[1] if name.startswith("speed:") else Path(name).name
    return base.lower().startswith(FIXED_LENGTH_PREFIXES)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=]+", "-", text).strip("-.") or "x"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def slugs(values: Sequence[str], dataset: bool = False) -> dict[str, str]:
    """A file-name-safe id part per value (a dataset file by its stem); values whose parts collide get a short
    hash of the value."""
    base = {}
    for v in values:
        p = Path(v.split(":", 1)[1] if dataset and v.startswith("specbench:") else v)
        text = p.stem if dataset and p.suffix in (".jsonl", ".parquet", ".json") else v
        base[v] = _slug(text)[:40]
    seen = Counter(base.values())
    return {v: s if seen[s] == 1 else f"{s}-{_short_hash(v)}" for v, s in base.items()}


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: its settings, its launch group, its SD-off pair, and the run config it runs."""

    id: str
    settings: CellSettings
    group: str
    baseline: str | None
    cfg: RunConfig


@dataclass(frozen=True)
class Group:
    """A launch group: the cells one engine serves; ``spec`` is what the engine is built from."""

    id: str
    spec: EngineSpec
    cells: tuple[str, ...]
    per_concurrency: bool

    @property
    def max_concurrency(self) -> int:
        assert self.spec.max_concurrency is not None
        return self.spec.max_concurrency


def expand(
    config: SweepConfig, out: str | Path, fixed_length: set[str] | None = None
) -> tuple[list[Cell], list[Group]]:
    """The cells and launch groups of a grid (pure: nothing is built or read).  Cells come group by group (so one
    engine start serves consecutive cells), each group's by dataset then concurrency; with repeats, repeat 1 of
    every group first, then repeat 2 (each repeat its own groups, ids ending ``_r-<r>``, as the cells'); with
    ``--order abba`` the same cells interleaved (``abba_order``), the groups as they are.
    ``fixed_length``: the datasets that get ignore_eos by default (None: by name, ``fixed_length_dataset``)."""
    grid = config.grid
    base = config.run
    sdir = SweepDir(out)
    per_c = relaunch_per_concurrency(base.engine)
    keys = sorted(grid.engine_options)
    combos = [
        tuple(zip(keys, values, strict=True)) for values in itertools.product(*(grid.engine_options[k] for k in keys))
    ]
    ds_part = slugs(grid.dataset, dataset=True)
    opt_parts = {k: slugs(grid.engine_options[k]) for k in keys}
    key_part = slugs(keys)

    def opt_id(combo: tuple[tuple[str, str], ...]) -> str:
        return "".join(f"_E-{key_part[k]}={opt_parts[k][v]}" for k, v in combo)

    def setting_id(s: Setting) -> str:
        return f"sd-{_slug(s.sd)}_k-{s.k}"

    repeats = grid.repeats

    def rep_id(r: int) -> str:
        return f"_r-{r}" if repeats > 1 else ""

    def cell_id(s: Setting, c: int, ds: str, combo: tuple[tuple[str, str], ...], r: int) -> str:
        return f"{setting_id(s)}_c-{c}_ds-{ds_part[ds]}{opt_id(combo)}{rep_id(r)}"

    seed_option = REPEAT_SEED_OPTION.get(base.engine.kind)
    if seed_option is not None and (seed_option in base.engine.options or seed_option in grid.engine_options):
        seed_option = None  # the user's value holds for every repeat

    settings = sd_settings(config)
    has_baseline = any(s.sd == BASELINE for s in settings)
    Row = tuple[str, str, Setting, int, str, tuple[tuple[str, str], ...], int]
    raw: list[Row] = []
    for r in range(1, repeats + 1):  # repeat-major: a slow drift of the machine touches every setting alike
        for s in settings:
            for combo in combos:
                for ds in grid.dataset:
                    for c in grid.concurrency:
                        gid = f"{setting_id(s)}{opt_id(combo)}" + (f"_c-{c}" if per_c else "") + rep_id(r)
                        raw.append((gid, cell_id(s, c, ds, combo, r), s, c, ds, combo, r))
    order = list(dict.fromkeys(r[0] for r in raw))
    members: dict[str, list[Row]] = {g: [] for g in order}
    for row in raw:
        members[row[0]].append(row)
    cells: list[Cell] = []
    groups: list[Group] = []
    for gid in order:
        rows = members[gid]
        max_c = max(row[3] for row in rows)
        specs = []
        for _, cid, s, c, ds, combo, r in rows:
            ignore = config.ignore_eos
            if ignore is None:
                ignore = ds in fixed_length if fixed_length is not None else fixed_length_dataset(ds)
            engine = base.engine.model_copy(
                update={
                    "sd": s.sd,
                    "draft_model": None if s.sd == BASELINE else base.engine.draft_model,
                    "options": {
                        **base.engine.options,
                        **dict(combo),
                        **({seed_option: str(r - 1)} if seed_option and repeats > 1 else {}),
                    },
                    "base_url": s.url if s.url is not None else base.engine.base_url,
                    "draft_length": None,
                    "max_concurrency": max_c,
                    "log_dir": str(sdir.group_dir(gid)) if base.engine.launch else None,
                }
            )
            cfg = base.model_copy(
                update={
                    "engine": engine,
                    "dataset": base.dataset.model_copy(update={"name": ds}),
                    "concurrency": c,
                    "draft_length": s.k,
                    "ignore_eos": ignore,
                    "out": str(sdir.cell_dir(cid)),
                }
            )
            cfg = run_uc.resolve_output_len(cfg)
            # log_dir: a launched server's log goes to the group's folder; an in-process engine has none
            specs.append(cfg.engine_spec().model_copy(update={"log_dir": engine.log_dir}))
            settings_ = CellSettings(
                sd=s.sd,
                k=s.k,
                concurrency=c,
                dataset=ds,
                engine_options=dict(combo),
                base_url=redact_urls(s.url) if s.url else None,
                repeat=r,
            )
            pair = cell_id(Setting(BASELINE, 0), c, ds, combo, r) if has_baseline and s.sd != BASELINE else None
            cells.append(Cell(cid, settings_, gid, pair, cfg))
        # every cell of a group builds the same engine: that is what makes it a group
        assert all(sp == specs[0] for sp in specs), f"launch group {gid}: cells disagree on the engine spec"
        groups.append(Group(gid, specs[0], tuple(r[1] for r in rows), per_c))
    if config.order == "abba":
        cells = abba_order(cells)
    return cells, groups


def abba_order(cells: Sequence[Cell]) -> list[Cell]:
    """``--order abba``: the cells that differ only by SD setting (the same repeat, engine options, dataset and
    concurrency: an SD-off baseline and its SD cells) run one after another, in grid order (the baseline first)
    for the first such block, reversed for the next, and so on: A B | B A | A B ... (with several SD settings
    A B1 B2 | B2 B1 A ...), so that drift over time (a warming server, a busy machine) touches both sides alike.
    A block with one side only (``--no-baseline`` and one SD setting) runs as it is.  The blocks come repeat by
    repeat, then by engine options, dataset and concurrency, as a launch group's own cells do."""
    # grid order is group by group (repeat-major, the baseline's group first), so the blocks first appear in the
    # order of the first group's cells and each block holds its cells in the SD settings' order
    blocks: dict[tuple[Any, ...], list[Cell]] = {}
    for c in cells:
        s = c.settings
        key = (s.repeat, tuple(sorted(s.engine_options.items())), s.dataset, s.concurrency)
        blocks.setdefault(key, []).append(c)
    out: list[Cell] = []
    for i, block in enumerate(blocks.values()):
        out += block if i % 2 == 0 else block[::-1]
    return out


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Work:
    """What one cell will cost: conversations, requests (turns), warm-up requests, output tokens (at most; exactly
    with ignore_eos), and a rough time when the engine has a timing model (else None)."""

    conversations: int
    requests: int
    warmup: int
    output_tokens: int
    exact_tokens: bool
    seconds: float | None


@dataclass(frozen=True)
class SweepPlan:
    config: SweepConfig
    out: Path
    cells: list[Cell]
    groups: list[Group]
    work: dict[str, Work]
    timing: str  # what the time estimate rests on, or why there is none
    commands: dict[str, str] = field(default_factory=dict)  # launch group -> server command (launched engines)

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(cell_id)

    @property
    def seconds(self) -> float | None:
        values = [w.seconds for w in self.work.values()]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _mock_request_seconds(description: Mapping[str, Any], output_len: int) -> float | None:
    """The mock's own timing settings: TTFT, then one step per expected AL tokens."""
    settings = description.get("settings") or {}
    ttft, step, al = settings.get("ttft_ms"), settings.get("step_ms"), description.get("expected_acceptance_length")
    if not isinstance(ttft, (int, float)) or not isinstance(step, (int, float)):
        return None
    tokens = settings.get("output_len") or output_len
    steps = max(tokens - 1, 0) / (al if isinstance(al, (int, float)) and al > 0 else 1.0)
    return float(ttft + steps * step) / 1000.0


# engines with a timing model good enough for a rough plan figure; any other engine's time is unknown until cells
# finish (the progress line's ETA)
TIMING_MODELS: dict[str, Callable[[Mapping[str, Any], int], float | None]] = {"mock": _mock_request_seconds}


def default_out(kind: str) -> str:
    return f"sweeps/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{kind}"


def build_plan(config: SweepConfig, out: str | Path | None = None) -> SweepPlan:
    """Everything a sweep will do, checked before anything starts: the datasets are read (names, prompts
    selected), every launch group's engine is built (its constructor checks -E options, --sd, the model and
    server paths) but not started, and the work is counted."""
    check(config)
    out = Path(out or config.out or default_out(config.run.engine.kind))
    base = config.run
    selected: dict[str, tuple[int, int]] = {}
    fixed: set[str] = set()
    for name in config.grid.dataset:
        samples = run_uc.limit_turns(
            pick_stratified(load_dataset(name), base.dataset.num_requests, base.seed), base.dataset.max_turns
        )
        selected[name] = (len(samples), sum(len(s.turns) for s in samples))
        if fixed_length_dataset(name) or (samples and all(s.category == "synthetic" for s in samples)):
            fixed.add(name)
    cells, groups = expand(config, out, fixed)
    timing_model = TIMING_MODELS.get(base.engine.kind)
    per_request: dict[str, float | None] = {}
    commands: dict[str, str] = {}
    for g in groups:
        try:
            engine = build_engine(g.spec)
        except (ValueError, ImportError, LookupError, RuntimeError) as e:  # bad input: one line naming the group
            text = validation_line(e) if isinstance(e, ValidationError) else str(e).splitlines()[0] if str(e) else ""
            raise SweepConfigError(f"launch group {g.id}: {text or type(e).__name__}") from None
        described = engine.describe() if (timing_model is not None or g.spec.launch) else {}
        command = (described.get("server") or {}).get("command")
        if command:
            commands[g.id] = str(command)
        if timing_model is not None:
            first = next(c for c in cells if c.group == g.id)
            assert first.cfg.output_len is not None
            per_request[g.id] = timing_model(described, first.cfg.output_len)
    work: dict[str, Work] = {}
    for c in cells:
        conversations, requests = selected[c.settings.dataset]
        assert c.cfg.output_len is not None
        seconds = None
        t = per_request.get(c.group)
        # the warm-up each cell's run sends (--warmup, default one full wave at its concurrency), all at once
        warmup = run_uc.warmup_count(c.cfg)
        if t is not None:
            waves = -(-warmup // max(1, c.settings.concurrency))
            seconds = requests * t / max(1, min(c.settings.concurrency, conversations)) + waves * t
        work[c.id] = Work(conversations, requests, warmup, requests * c.cfg.output_len, c.cfg.ignore_eos, seconds)
    timing = (
        f"rough: the {base.engine.kind} engine's own timing settings"
        if timing_model is not None and all(w.seconds is not None for w in work.values())
        else f"unknown: no timing model for engine {base.engine.kind!r} (the progress line gives an ETA once cells "
        "finish)"
    )
    return SweepPlan(config, out, cells, groups, work, timing, commands)


def sweep_secrets(config: SweepConfig) -> Secrets:
    """The sweep's secret values (API key, URL passwords of --base-url, --metrics-url and every --url)."""
    found = engine_secrets(config.run.engine, os.environ)
    for url in config.urls.values():
        found = found | Secrets.of(*url_secrets(url))
    return found


def new_manifest(plan: SweepPlan) -> SweepManifest:
    cells = [
        SweepCell(id=c.id, settings=c.settings, group=c.group, baseline=c.baseline, dir=str(Path("cells") / c.id))
        for c in plan.cells
    ]
    groups = [
        LaunchGroup(
            id=g.id,
            engine=redact(g.spec.model_dump(mode="json")),
            max_concurrency=g.max_concurrency,
            per_concurrency=g.per_concurrency,
            cells=list(g.cells),
            server_command=plan.commands.get(g.id),
        )
        for g in plan.groups
    ]
    c = plan.config
    return SweepManifest.new(c.grid, c.run, c.ignore_eos, dict(c.urls), groups, cells, c.order)


def create(plan: SweepPlan) -> tuple[SweepDir, SweepManifest]:
    """A new sweep directory with its sweep.json (every cell pending); refused in one line when ``out`` already
    holds a sweep or cannot be written."""
    sdir = SweepDir(plan.out, sweep_secrets(plan.config))
    if sdir.exists():
        raise RunDirError(
            f"{plan.out} already holds a sweep (sweep.json): finish it with speedbench sweep --resume {plan.out}, "
            "or pick another --out"
        )
    cells_dir = plan.out / "cells"
    if cells_dir.exists() and any(cells_dir.iterdir()):
        raise RunDirError(f"{cells_dir} already holds run directories: pick another --out")
    RunDir(plan.out).check_writable()
    return sdir, sdir.write(new_manifest(plan))


def with_credentials(config: SweepConfig, given: SweepConfig | None, where: str) -> SweepConfig:
    """A saved sweep's config with the URL credentials (saved as ``***@``) taken back from the flags given again:
    the same URL once redacted; refused in one line when they are missing."""
    e = config.run.engine
    update: dict[str, Any] = {}
    for fld in ("base_url", "metrics_url"):
        saved = getattr(e, fld)
        again = getattr(given.run.engine, fld) if given is not None else None
        if again is not None and saved is not None and redact_urls(again) == saved:
            update[fld] = again
        elif saved and f"://{REDACTED}@" in saved:
            flag = "--" + fld.replace("_", "-")
            raise RunDirError(f"{where} ran against {flag} {saved}, whose credentials are not saved: pass {flag} again")
    urls = dict(config.urls)
    for key, saved in config.urls.items():
        again = given.urls.get(key) if given is not None else None
        if again is not None and redact_urls(again) == saved:
            urls[key] = again
        elif f"://{REDACTED}@" in saved:
            raise RunDirError(f"{where}: --url {key}={saved} has credentials that are not saved: pass it again")
    engine = e.model_copy(update=update)
    return config.model_copy(update={"run": config.run.model_copy(update={"engine": engine}), "urls": urls})


def resume_plan(path: str | Path, given: SweepConfig | None = None) -> tuple[SweepPlan, SweepDir, SweepManifest]:
    """The plan of a saved sweep (its grid and base config from sweep.json), its directory and its manifest as
    saved (nothing is written: ``run_sweep(..., resume=True)`` marks it resumed); ``given``: the URLs given again
    (credentials are never saved)."""
    saved = read_sweep(path)
    config = SweepConfig(
        grid=saved.grid,
        run=saved.base,
        ignore_eos=saved.ignore_eos,
        urls=dict(saved.urls),
        out=str(path),
        order=saved.order,
    )
    config = with_credentials(config, given, str(path))
    plan = build_plan(config, path)
    if [c.id for c in plan.cells] != [c.id for c in saved.cells]:
        raise RunDirError(
            f"{SweepDir(path).sweep_path}: its cells differ from the ones its grid gives now (another speedbench "
            "version?): cannot resume"
        )
    return plan, SweepDir(path, sweep_secrets(config)), saved
