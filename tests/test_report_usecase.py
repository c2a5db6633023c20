"""The report use case (usecases/report.py): what a directory is, two runs refused unless like for like, the
page written with its figure files, and the command modules importing no other command module."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from speedbench.cli import app
from speedbench.report.html import Page
from speedbench.usecases import report as uc

runner = CliRunner()
MOCK = ["--engine", "mock", "-E", "cost=batch", "-E", "clock=virtual", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    a, b = root / "a", root / "b"
    for out, extra in ((a, []), (b, ["--temperature", "0.5"])):
        res = runner.invoke(app, ["run", *MOCK, "-n", "4", "--output-len", "16", "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
    return a, b


def test_a_directory_is_a_sweep_when_it_holds_sweep_json(tmp_path: Path, runs: tuple[Path, Path]):
    assert not uc.is_sweep(runs[0]) and not uc.is_sweep(tmp_path)
    (tmp_path / "sweep.json").write_text("{}")
    assert uc.is_sweep(tmp_path)


def test_open_runs_rewrites_summaries_and_refuses_unlike_runs(runs: tuple[Path, Path]):
    a, b = runs
    (a / "summary.json").unlink()
    one = uc.open_runs([str(a)])
    assert one.pairing is None and one.comparison is None and one.unlike() == ""
    assert (a / "summary.json").is_file()  # recomputed and written back
    with pytest.raises(uc.ReportError, match=r"are not like for like: temperature .*pass --force"):
        uc.open_runs([str(a), str(b)])
    both = uc.open_runs([str(a), str(b)], force=True, resamples=1000)
    assert both.comparison is not None and both.comparison.pairing is both.pairing
    assert "temperature" in both.unlike() and both.comparison.rows[-1].category == "overall"


def test_a_page_is_written_with_its_figure_files(tmp_path: Path):
    class Fake(Page):
        def figure_files(self) -> dict[str, bytes]:
            return {"f.svg": b"<svg/>", "f.png": b"png"}

    out = tmp_path / "deep" / "page.html"
    written = uc.write_html(lambda: Fake("t", figures_dir=tmp_path / "figs"), out)
    text = out.read_text(encoding="utf-8")
    assert written.size == len(text.encode("utf-8")) and written.charts == 0
    assert sorted(p.name for p in written.saved) == ["f.png", "f.svg"] and (tmp_path / "figs" / "f.png").read_bytes()
    assert (
        written.describe()
        == f"wrote {out} ({written.size / 1e6:.2f} MB, 0 figures; 2 figure files in {tmp_path / 'figs'})"
    )


def test_command_modules_import_no_other_command_module():
    from test_import_graph import build_graph

    shared = {"speedbench.cli", "speedbench.cli.common", "speedbench.cli.options"}
    graph = build_graph()
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.startswith("speedbench.cli.") and m not in shared
        for t in targets
        if t.startswith("speedbench.cli.") and t not in shared
    )
    assert bad == []


def test_the_use_cases_import_no_heavy_library():
    """The report, model, analyze and data use cases load matplotlib, torch and the like only when a page is drawn or
    a model embeds (the ``report`` and ``embed`` extras)."""
    from test_import_lean import HEAVY, _modules

    mods = _modules("import speedbench.usecases.report, speedbench.usecases.analyze, speedbench.usecases.data")
    assert [m for m in mods if m.split(".")[0] in HEAVY] == []
