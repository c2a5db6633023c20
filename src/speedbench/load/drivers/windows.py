"""Per-category counter windows (``--per-category-windows``): each category measured in its own window.

An engine's SD counters (vLLM's ``vllm:spec_decode_*``, SGLang's, TensorRT-LLM's) count the whole server; when its
replies carry no per-request SD stats, a mixed run can give acceptance per category only from chunks, which cannot
tell a step that drafted nothing from one whose drafts were all rejected.  Here the categories run one after
another: wait until nothing is in flight, snapshot the counters, run the category's conversations at the run's
concurrency (with whichever driver ``clients`` names), wait until they are done, snapshot again.  Each category's
acceptance is then its own counter delta (metrics/aggregate.py ``window_acceptance``).

``measure`` is the one entry point for a run's load: it decides the mode (``decide``: ``on``, ``off``, or ``auto``
from the warm-up's replies and the engine's counters), tells the caller (``on_mode``), and drives either one mixed
window (``drivers.drive``) or the windows, reporting each as it opens and closes (``on_window``) so that an
interrupted run keeps the windows it finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

from speedbench.data.sample import Sample
from speedbench.engines.base import Engine
from speedbench.load.drivers import decide_procs, drive
from speedbench.load.drivers.base import Clients
from speedbench.load.generator import LoadResult, LoadSettings, pending_samples, warm_up
from speedbench.records import RequestRecord

Mode = Literal["auto", "on", "off"]
Decided = Literal["mixed", "per_category_windows"]
# (category, counters before, counters after, finished): a window opened (finished False, no snapshots yet) or
# closed (finished True, with the snapshots the engine gave: None where it has no counters)
OnWindow = Callable[[str, "dict[str, Any] | None", "dict[str, Any] | None", bool], None]

SETTLE_TRIES = 5  # counter reads after a window's last reply, until two agree
SETTLE_PAUSE_S = 0.02


def categories(samples: Sequence[Sample]) -> list[str]:
    """The categories in the order their first conversation appears (the run's stratified order)."""
    return list(dict.fromkeys(s.category for s in samples))


async def settled_counters(engine: Engine, first: dict[str, Any] | None) -> dict[str, Any] | None:
    """The counters once they stop moving: a server may count a step's stats just after it streamed the step's
    tokens, so the window's last reply can arrive before the counters say so.  In-process engines count
    synchronously: their first read stands."""
    if engine.capabilities.in_process or first is None:
        return first
    prev: dict[str, Any] | None = first
    for _ in range(SETTLE_TRIES):
        await asyncio.sleep(SETTLE_PAUSE_S)
        now = await engine.counters()
        if now == prev:
            return now
        prev = now
    return prev


def decide(
    mode: Mode, engine: Engine, warm: Sequence[RequestRecord] | None, counters: dict[str, Any] | None
) -> tuple[Decided, str]:
    """Mixed or per-category windows, and why.  ``auto``: windows where the engine has SD counters but its replies
    carry no per-request SD stats (read from the warm-up's replies ``warm``; without a warm-up, from the engine's
    declared capabilities)."""
    if mode == "on":
        return "per_category_windows", "--per-category-windows on"
    if mode == "off":
        return "mixed", "--per-category-windows off"
    if counters is None:
        return "mixed", "auto: the engine gave no SD counters (SD off, or no metrics endpoint)"
    ok = [r for r in warm or () if r.ok]
    if ok:
        if all(r.sd is not None and r.sd.source == "per_request" for r in ok):
            return "mixed", "auto: the replies carry per-request SD stats"
        return (
            "per_category_windows",
            "auto: the engine counts SD steps but its replies carry no per-request SD stats",
        )
    if engine.capabilities.per_request_sd_stats:
        return "mixed", "auto: no warm-up reply to read; the engine declares per-request SD stats"
    return "per_category_windows", "auto: no warm-up reply to read; the engine declares SD counters only"


async def measure(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord],
    clients: Clients,
    mode: Mode | Decided,
    on_mode: Callable[[Decided, str], None],
    on_window: OnWindow,
) -> LoadResult:
    """Send the run's load in one mixed window or in per-category windows (``mode``: a flag's value, or the mode a
    resumed run already decided).  ``done`` as for every driver; with windows, the conversations of a category
    whose window finished are kept, any other is sent (``--resume`` turns an unfinished window's records into
    retries before this is called)."""
    if mode in ("mixed", "off") or (mode == "auto" and not engine.capabilities.counters):
        why = {"mixed": "as the run started", "off": "--per-category-windows off"}.get(
            mode, "auto: the engine has no SD counters"
        )
        on_mode("mixed", why)
        return await drive(engine, samples, settings, on_record, done, clients)

    # the warm-up, once before the first window (the windows then send none)
    warm: list[RequestRecord] | None = None
    pending = pending_samples(samples, done)
    clients, _, sent = await decide_procs(engine, samples, done, settings, clients)  # auto: from its warm-up
    if not sent:  # none sent: --client-procs given, or an in-process engine
        sent = await warm_up(engine, pending, settings)
        warm = sent or None
    settings = dataclasses.replace(settings, warmup=0)

    if mode in ("auto", "on"):
        decided, why = decide(mode, engine, warm, await engine.counters() if mode == "auto" else None)
    else:
        decided, why = "per_category_windows", "as the run started"
    on_mode(decided, why)
    if decided == "mixed":
        result = await drive(engine, samples, settings, on_record, done, clients)
        return result.warmed(sent)
    return await _windows(engine, samples, settings, on_record, done, clients, on_window, sent)


async def _windows(
    engine: Engine,
    samples: Sequence[Sample],
    settings: LoadSettings,
    on_record: Callable[[RequestRecord], None],
    done: dict[tuple[str, int], RequestRecord],
    clients: Clients,
    on_window: OnWindow,
    warm: list[RequestRecord],
) -> LoadResult:
    merged = LoadResult().warmed(warm)
    for category in categories(samples):
        own = [s for s in samples if s.category == category]
        own_done = {key: r for key, r in done.items() if r.category == category}
        if not pending_samples(own, own_done):
            continue  # finished in an earlier segment: its window stands
        on_window(category, None, None, False)
        result = await drive(engine, own, settings, on_record, own_done, clients)
        after = await settled_counters(engine, result.counters_after)
        on_window(category, result.counters_before, after, result.stopped is None)
        if merged.counters_before is None:
            merged.counters_before, merged.measure_start_ns = result.counters_before, result.measure_start_ns
        merged.counters_after, merged.measure_end_ns = after, result.measure_end_ns
        merged.merged_warmup(result)
        if result.arrivals is not None:
            result.arrivals.category = category
            merged.window_arrivals.append(result.arrivals)
            merged.arrivals = result.arrivals
        if result.stopped is not None:
            merged.stopped = result.stopped
            break
    return merged
