"""The HTML report (docs/report.md): pages of a run, a comparison, a sweep and a fitted model, written by
`speedbench report --html`, `sweep` and `model`; then opened in headless Chromium as a person would see them:
no console or page error, no request leaving the file, every figure laid out with a size, drawn content and a
caption, and a screenshot kept (tests/browser.py).

The browser tests need Debian's `chromium` and Playwright (scripts/test installs both); they skip without them
unless SPEEDBENCH_REQUIRE_BROWSER=1 (CI), where a missing browser fails.  Screenshots go to
$SPEEDBENCH_ARTIFACTS/html (default: the test's temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speedbench.analysis.stats import al_by_category
from speedbench.cli import app
from speedbench.metrics.sources import DecodeBasis
from speedbench.records import RequestRecord, SDStats
from speedbench.report.figures import Band, Series, lines
from speedbench.report.html import DEFINITIONS, Chart, Page
from speedbench.results.loader import load_run

runner = CliRunner()
MOCK = ["--engine", "mock", "-E", "step_ms=2", "-E", "ttft_ms=5", "--no-progress", "--warmup", "0"]
COST = ["-E", "cost=batch", "-E", "clock=virtual", "-E", "base_ms=10", "-E", "per_token_ms=0.5", "-E", "noise=0.1"]


# ---- hand-computed pieces ------------------------------------------------------------------------------------


def _rec(qid: str, category: str, turn: int, accepted: int, steps: int) -> RequestRecord:
    """A request of ``steps`` verification steps (one chunk each after the first token) accepting ``accepted``
    drafts in all: AL = 1 + accepted / steps."""
    tokens = 1 + steps + accepted
    return RequestRecord(
        qid,
        category,
        turn,
        start_ns=0,
        end_ns=(steps + 1) * 1_000_000,
        chunk_ns=[(i + 1) * 1_000_000 for i in range(steps + 1)],
        chunk_tokens=[1, 1 + accepted] + [1] * (steps - 1),
        completion_tokens=tokens,
        sd=SDStats(drafted=3 * steps, accepted=accepted, steps=steps),
    )


def test_al_by_category_by_hand():
    # AL per request: a0 1 + 4/4 = 2, a1 1 + 2/4 = 1.5 (one conversation of two turns); b 1 + 0/2 = 1;
    # c (another category) 1 + 6/3 = 3.  Macro AL of "x" = (2 + 1.5 + 1) / 3 = 1.5; overall (2+1.5+1+3)/4 = 1.875
    recs = [_rec("a", "x", 0, 4, 4), _rec("a", "x", 1, 2, 4), _rec("b", "x", 0, 0, 2), _rec("c", "y", 0, 6, 3)]
    out = al_by_category(recs, DecodeBasis(3), resamples=500, seed=1)
    assert out["x"].point == pytest.approx(1.5)
    assert out["overall"].point == pytest.approx(1.875)
    # x has two conversations: sums (3.5, 2 requests) and (1, 1): resamples range from 1 (b twice) to 1.75 (a twice)
    assert out["x"].lo is not None and out["x"].hi is not None
    assert 1.0 <= out["x"].lo <= 1.5 <= out["x"].hi <= 1.75
    # one conversation: a point, no interval
    assert (out["y"].point, out["y"].lo, out["y"].hi) == (3.0, None, None)
    # every conversation alike: the interval collapses on the point
    same = [_rec(q, "z", 0, 2, 4) for q in "pqrs"]
    z = al_by_category(same, DecodeBasis(3))["z"]
    assert (z.point, z.lo, z.hi) == (1.5, 1.5, 1.5)


def _chart(cid: str, definition: str = "al") -> Chart:
    fig = lines([Series("s", [1, 2, 3], [Band(1.0, 0.9, 1.1), Band(None), Band(2.0)])], "x (unit)", "y (unit)")
    return Chart(cid, "A title", "What it shows.", definition, "somewhere", fig)


def test_page_renders_inline_svg_captions_and_only_the_definitions_it_uses():
    page = Page("T <&>", "sub")
    page.facts([("k", "v")])
    page.chart(_chart("one"))
    page.chart(_chart("two", "ttft"))
    html = page.render()
    assert html.count("<svg") == 2 and "T &lt;&amp;&gt;" in html
    assert 'id="def-al"' in html and 'id="def-ttft"' in html and 'id="def-tpot"' not in html
    assert html.count('href="#def-') == 2
    # nothing to fetch: no src attribute, no link but in-page anchors (the SVG namespace is not a request)
    assert " src=" not in html and "<script" not in html and "<link" not in html
    assert not [h for h in re.findall(r'href="([^"]*)"', html) if not h.startswith("#")]
    # the ids matplotlib gives clip paths are salted per chart: two figures never share one
    ids = re.findall(r'<clipPath id="([^"]+)"', html)
    assert ids and len(ids) == len(set(ids))
    with pytest.raises(KeyError):
        page.chart(_chart("three", "no such definition"))
    with pytest.raises(ValueError):
        page.chart(_chart("one"))
    assert set(DEFINITIONS) >= {"al", "position", "ttft", "tpot", "itl", "speedup", "pareto", "model"}


def test_a_missing_value_is_left_out_not_drawn_as_zero():
    fig = lines([Series("s", [1, 2, 3], [Band(1.0), Band(None), Band(float("nan"))])], "x", "y")
    (line,) = fig.axes[0].get_lines()[:1]
    assert list(line.get_xdata()) == [1.0]


# ---- the pages, written by the commands ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("html")
    out: dict[str, Path] = {}
    base, sd = root / "run-off", root / "run-sd"
    res = runner.invoke(app, ["run", *MOCK, "--sd", "none", "-n", "12", "--output-len", "24", "--out", str(base)])
    assert res.exit_code == 0, res.output
    # 10% injected 500s: the run exits 1 (too many failures) but is complete, with an errors-by-cause figure
    res = runner.invoke(app, ["run", *MOCK, "-E", "fail_500=0.1", "-n", "12", "--output-len", "24", "--out", str(sd)])
    assert res.exit_code == 1, res.output
    res = runner.invoke(app, ["report", str(sd), "--html", str(root / "run.html"), "--figures", str(root / "figs")])
    assert res.exit_code == 0, res.output
    assert "wrote " + str(root / "run.html") in res.output.replace("\n", "")
    out["run"] = root / "run.html"
    out["figs"] = root / "figs"
    res = runner.invoke(
        app, ["report", str(base), str(sd), "--html", str(root / "compare.html"), "--resamples", "1000"]
    )
    assert res.exit_code == 0, res.output
    out["compare"] = root / "compare.html"
    sweep = root / "sweep"
    args = ["sweep", "--engine", "mock", *COST, "--sd", "ngram", "-k", "1,2,3", "-c", "1,2,4,8", "-n", "16"]
    args += ["--output-len", "32", "--ignore-eos", "--warmup", "0", "--out", str(sweep), "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (sweep / "report.html").is_file()  # the sweep writes its page itself
    res = runner.invoke(app, ["model", str(sweep), "--holdout", "c=8"])
    assert res.exit_code == 0, res.output
    out["model"] = sweep / "model.html"
    # with model.json there, the sweep's page shows the model too
    res = runner.invoke(app, ["report", str(sweep), "--html", str(sweep / "report.html"), "--resamples", "1000"])
    assert res.exit_code == 0, res.output
    out["sweep"] = sweep / "report.html"
    return out


EXPECTED = {
    "run": {
        "al-per-category",
        "acceptance-histogram",
        "conditional-acceptance",
        "joint-acceptance",
        "ttft-cdf",
        "tpot-cdf",
        "itl-cdf",
        "errors-by-cause",
    },
    "compare": {"speedup-per-category", "al-a-vs-b", "ttft-cdf", "tpot-cdf", "itl-cdf"},
    "sweep": {
        "t0-speedup-vs-concurrency",
        "t0-al-vs-k",
        "pareto",
        "m-validation",
        "m-step-time",
        "m-predicted-speedup",
        "m-model-rates",
        "m-tau",
    },
    "model": {"validation", "step-time", "predicted-speedup", "model-rates", "tau"},
}


def _chart_ids(html: str) -> set[str]:
    return set(re.findall(r'data-chart="([^"]+)"', html))


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_page_holds_its_figures_with_provenance(pages: dict[str, Path], kind: str):
    html = pages[kind].read_text(encoding="utf-8")
    assert _chart_ids(html) == EXPECTED[kind]
    assert html.count("<figcaption>") == len(EXPECTED[kind])
    assert html.count('Definition: <a href="#def-') == len(EXPECTED[kind])
    assert len(html.encode()) < 3_000_000
    if kind in ("run", "compare"):
        for fact in ("engine", "speculative decoding", "dataset", "speedbench", "date (UTC)", "host"):
            assert f">{fact}<" in html
    if kind == "run":
        run = load_run(pages["run"].parent / "run-sd")
        assert "sha256:" in html and run.manifest.dataset.content_hash[:20] in html
        assert "http_500" in html  # errors by cause, named
        assert "Invariants and cross-checks" in html
    if kind == "model":
        assert "held out" in html and "c=8" in html


def test_figures_folder_holds_each_figure_as_svg_and_png(pages: dict[str, Path]):
    files = sorted(p.name for p in pages["figs"].iterdir())
    assert files == sorted(f"{c}.{ext}" for c in EXPECTED["run"] for ext in ("svg", "png"))
    png = (pages["figs"] / "al-per-category.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_run_without_sd_has_no_acceptance_figures(pages: dict[str, Path], tmp_path: Path):
    out = tmp_path / "off.html"
    res = runner.invoke(app, ["report", str(pages["run"].parent / "run-off"), "--html", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text(encoding="utf-8")
    assert _chart_ids(html) == {"ttft-cdf", "tpot-cdf", "itl-cdf"}
    assert "Speculative decoding was off" in html and "No request failed." in html
    assert ">off<" in html  # the provenance says SD was off


def test_figures_need_html(tmp_path: Path):
    res = runner.invoke(app, ["report", str(tmp_path), "--figures", str(tmp_path / "f")])
    assert res.exit_code == 2 and "--figures goes with --html" in res.output


# ---- in a real browser -----------------------------------------------------------------------------------------


def _browser_or_skip() -> None:
    from browser import chromium_binary

    required = os.environ.get("SPEEDBENCH_REQUIRE_BROWSER") == "1"
    try:
        import playwright  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("SPEEDBENCH_REQUIRE_BROWSER=1 but playwright is not installed (pip install playwright)")
        pytest.skip("playwright is not installed")
    if chromium_binary() is None:
        if required:
            pytest.fail("SPEEDBENCH_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH")


def _artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("SPEEDBENCH_ARTIFACTS")
    return (Path(root) if root else tmp_path) / "html"


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_page_in_headless_chromium(pages: dict[str, Path], kind: str, tmp_path: Path):
    _browser_or_skip()
    from browser import view_page

    shot = _artifacts(tmp_path) / f"{kind}.png"
    view = view_page(pages[kind], shot)
    assert view.console_errors == [] and view.page_errors == []
    assert view.external_requests == [], view.external_requests
    assert view.title.startswith("speedbench ")
    assert {f.id for f in view.figures} == EXPECTED[kind]
    for f, caption in zip(view.figures, view.captions, strict=True):
        # laid out at a readable size, with axes, ticks and labels drawn (the sparsest figure, two bars of counts
        # with integer ticks, has 23 drawable SVG elements; a figure that failed to draw has none), and ink
        assert f.width >= 400 and f.height >= 150, f
        assert f.svg_elements >= 20 and f.texts >= 6, f
        assert 0.01 <= f.ink <= 0.8 and f.colours >= 4, f
        assert "Definition:" in caption and "Source:" in caption
    assert shot.is_file() and shot.stat().st_size > 50_000
