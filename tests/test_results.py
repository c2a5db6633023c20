"""Typed results: RunSummary/Manifest serialise to the summary.json/manifest.json contract, one loader reads
run directories (a directory written by main at c6e6c23, before the typed form, included) and refuses what
it cannot read with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from speedbench.metrics.aggregate import group_acceptance, group_stats, group_timing, summarize
from speedbench.metrics.models import SUMMARY_SCHEMA_VERSION, GroupStats, RunSummary
from speedbench.metrics.sources import DecodeBasis
from speedbench.results.loader import load_run
from speedbench.results.manifest import MANIFEST_SCHEMA_VERSION, CounterWindow, DatasetInfo, Manifest
from speedbench.results.rundir import RunDir, RunDirError

OLD_RUN = Path(__file__).parent / "fixtures" / "rundir-c6e6c23"  # `speedbench run --engine mock` on main c6e6c23


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    dst = tmp_path / "old"
    shutil.copytree(OLD_RUN, dst)
    return dst


def _leaves(obj: object, path: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for key, value in obj.items():
            out.update(_leaves(value, f"{path}.{key}"))
        return out
    return {path: obj}


def test_every_figure_main_wrote_at_c6e6c23_keeps_its_value(old_run: Path) -> None:
    """Against the summary.json main itself wrote at c6e6c23 (kept verbatim): every key it had keeps its value in
    today's recomputed summary (acceptance_length included), in the same order; only the invariants' wording and
    verdicts may change (issue 11's allowances), and only keys may be added."""
    written = json.loads((OLD_RUN / "summary-as-written-at-c6e6c23.json").read_text())
    now = load_run(old_run).summary.to_dict()
    old_invariants, new_invariants = written.pop("invariants"), now.pop("invariants")
    assert [i["name"] for i in new_invariants] == [i["name"] for i in old_invariants]
    old, new = _leaves(written), _leaves(now)
    assert {k: new.get(k, "<missing>") for k in old} == old
    assert [k for k in new if k in old] == list(old)  # same order
    assert (
        old[".overall.acceptance_length"]
        == new[".overall.acceptance_length"]
        == written["overall"]["acceptance_length"]
    )


def test_summary_of_a_run_written_before_the_typed_form_is_byte_identical(old_run: Path) -> None:
    """Recomputed from records + manifest, the typed summary serialises to exactly the pinned summary.json
    (same keys, same order, same values), plus the schema version.  The pinned file is what main wrote at
    c6e6c23, regenerated once when the engine-independent step figures were added: every key main wrote kept its
    value; the new keys (acceptance_length_drafted_steps..., tokens_per_decode_step, undrafted_step_share, their
    sources) were added, and the counter cross-checks now allow the reset request's streamed steps (two checks
    that cried "other traffic" pass, saying so)."""
    result = load_run(old_run)
    before = json.loads((OLD_RUN / "summary.json").read_text())
    after = result.summary.to_dict()
    assert after.pop("schema_version") == SUMMARY_SCHEMA_VERSION
    assert json.dumps(after) == json.dumps(before)
    assert result.manifest.schema_version == 0 and result.manifest.k == 3
    assert result.summary.overall.errors == 4 and result.summary.errors_by_cause == {
        "http_500": 2,
        "prior_turn_failed": 1,
        "reset": 1,
    }
    RunDir(old_run).write_summary(result.summary)
    assert (old_run / "summary.csv").read_text() == (OLD_RUN / "summary.csv").read_text()


def test_report_reads_a_run_written_by_main_before_the_typed_form(old_run: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "speedbench.cli", "report", str(old_run)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "Acceptance per category" in p.stdout and "http_500=2" in p.stdout
    assert json.loads((old_run / "summary.json").read_text())["schema_version"] == SUMMARY_SCHEMA_VERSION


def _one_line_refusal(path: Path, *needles: str) -> None:
    with pytest.raises(RunDirError) as e:
        load_run(path)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    p = subprocess.run(
        [sys.executable, "-m", "speedbench.cli", "report", str(path)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_loader_refuses_what_it_cannot_read(old_run: Path, tmp_path: Path) -> None:
    _one_line_refusal(tmp_path / "nowhere", "manifest.json: not found")
    no_records = tmp_path / "no-records"
    shutil.copytree(old_run, no_records)
    (no_records / "records.jsonl").unlink()
    _one_line_refusal(no_records, "records.jsonl: not found", "--resume")
    future = tmp_path / "future"
    shutil.copytree(old_run, future)
    m = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**m, "schema_version": MANIFEST_SCHEMA_VERSION + 1}))
    _one_line_refusal(future, "newer speedbench", f"schema {MANIFEST_SCHEMA_VERSION + 1}")
    broken = tmp_path / "broken"
    shutil.copytree(old_run, broken)
    (broken / "manifest.json").write_text("{not json")
    _one_line_refusal(broken, "manifest.json: not valid JSON")
    wrong = tmp_path / "wrong"
    shutil.copytree(old_run, wrong)
    del m["dataset"]
    (wrong / "manifest.json").write_text(json.dumps(m))
    _one_line_refusal(wrong, "field dataset")


def test_manifest_round_trips_and_state_changes_return_new_manifests(old_run: Path, tmp_path: Path) -> None:
    old = load_run(old_run).manifest
    # the old manifest's keys survive a write by the typed form (add, never remove)
    rd = RunDir(tmp_path / "copy")
    rd.write_manifest(old)
    written = json.loads(rd.manifest_path.read_text())
    assert set(json.loads((OLD_RUN / "manifest.json").read_text())) <= set(written)
    assert written["counter_windows"] == json.loads((OLD_RUN / "manifest.json").read_text())["counter_windows"]

    fresh = Manifest.new(
        old.config, DatasetInfo(name="starter", content_hash="sha256:x", rows=1, selected=1, question_ids=["q"])
    )
    assert fresh.schema_version == MANIFEST_SCHEMA_VERSION and fresh.status == "created"
    running = fresh.started({"engine": "mock", "k": 0, "settings": {"api_token": "secret"}})
    assert fresh.engine is None and running.status == "running" and running.k == 0
    assert running.engine is not None and running.engine.model_dump()["settings"] == {"api_token": "***"}
    done = running.finished(True, CounterWindow(segment=0), ["w: http_500"], None)
    assert running.status == "running" and done.status == "complete" and done.warmup_errors == ["w: http_500"]
    assert done.next_segment == 1 and done.finished_utc is not None
    again = done.resumed().finished(False, CounterWindow(segment=1))
    assert again.status == "interrupted" and again.next_segment == 2 and len(again.resumed_utc) == 1


def test_group_functions_work_on_any_subset(old_run: Path) -> None:
    """The analysis layer calls the per-group functions on a category or a bootstrap resample."""
    result = load_run(old_run)
    basis = DecodeBasis(result.manifest.k)
    for cat, stats in result.summary.per_category.items():
        subset = [r for r in result.records if r.category == cat]
        assert group_stats(subset, basis) == stats
    resample = result.records + result.records  # every record twice: same means, twice the counts
    acc = group_acceptance(resample, basis)
    once = group_acceptance(result.records, basis)
    assert result.summary.sources.acceptance == "per_request" and once.steps == result.summary.overall.steps
    assert acc.steps == 2 * once.steps and acc.accepted == 2 * once.accepted
    assert acc.acceptance_length == pytest.approx(once.acceptance_length)
    assert acc.acceptance_length_token_weighted == pytest.approx(once.acceptance_length_token_weighted)
    assert group_timing(resample, basis).output_tokens == 2 * result.summary.overall.output_tokens
    assert group_stats([], basis) == GroupStats()


def _annotations_with_any(model: type[BaseModel], seen: set[type]) -> list[str]:
    bad: list[str] = []
    if model in seen:
        return bad
    seen.add(model)
    for name, field in model.model_fields.items():
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if t is typing.Any:
                bad.append(f"{model.__name__}.{name}")
            elif isinstance(t, type) and issubclass(t, BaseModel):
                bad += _annotations_with_any(t, seen)
            stack.extend(typing.get_args(t))
            if isinstance(t, types.UnionType):
                stack.extend(t.__args__)
    return bad


def test_run_summary_is_typed_all_the_way_down() -> None:
    assert _annotations_with_any(RunSummary, set()) == []


def test_summarize_returns_typed_results_that_validate_from_their_json(old_run: Path) -> None:
    result = load_run(old_run)
    s = summarize(
        result.records,
        DecodeBasis(3),
        counter_windows=result.manifest.counter_window_dicts(),
        label=result.manifest.label,
    )
    assert isinstance(s, RunSummary) and s == result.summary
    assert RunSummary.model_validate(json.loads(json.dumps(s.to_dict()))) == s
