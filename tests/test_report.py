"""The HTML report: built from a store written through the store API (every section) and from an empty
one; strings from the store escaped; figures exported; and the page checked in headless Chromium."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from meap_scale.report.build import CPU_BANNER, build_report
from meap_scale.report.data import downsample
from synthetic_store import write_synthetic_store

SI = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
XSS_NAME = "<script>alert(1)</script>"
XSS_ERROR = "<img src=x onerror=alert(1)> CUDA out of memory"
SECTIONS = ("summary", "scaling", "fits", "extrapolation", "meap_vs_ntp", "mask_ratio", "retrieval",
            "retrieval_laws", "curves", "runs", "provenance")
FIGURES = ("loss_vs_compute", "isoflop_profiles", "extrapolation_check", "compute_multiplier", "retrieval_vs_compute",
           "mask_ratio_loss", "mask_ratio_retrieval", "parameter_importance", "needle_heatmap", "lost_in_the_middle",
           "attention_summary", "attention_entropy", "retrieval_laws", "training_curves")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    store = write_synthetic_store(str(folder / "store"), failures=((XSS_NAME, XSS_ERROR),))
    built = build_report(store.url, str(folder / "report.html"), bootstrap=30)
    return built, (folder / "report.html").read_text()


@pytest.fixture(scope="module")
def empty_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("empty")
    built = build_report(str(folder / "store"), str(folder / "report.html"))
    return built, (folder / "report.html").read_text()


def test_a_store_with_every_kind_of_data_gets_every_section_and_figure(full_report):
    built, page = full_report
    assert built.sections == SECTIONS and built.missing == ()
    assert built.figures == FIGURES
    assert 'id="fig-needle_heatmap"' in page and "Curves are downsampled for display" in page
    assert "approach 3" in page and "approach 2" in page  # the fitted-parameter table has both laws
    assert CPU_BANNER not in page  # synthetic runs are GPU runs


def test_an_empty_store_gives_a_page_that_says_what_is_missing(empty_report):
    built, page = empty_report
    assert built.sections == ("provenance",) and built.figures == ()
    assert set(built.missing) == {"summary", "scaling", "fits", "extrapolation", "meap_vs_ntp", "mask_ratio",
                                  "retrieval", "retrieval_laws", "curves"}
    assert "has no runs" in page and "Not shown" in page and "finished runs with a validation loss" in page


def test_strings_from_the_store_are_escaped(full_report):
    _, page = full_report
    assert XSS_NAME not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the failures table, as text
    assert "\\u003cscript\\u003ealert(1)" in page  # the runs table's JSON, unable to close its element


def test_the_page_loads_nothing_from_the_network(full_report):
    _, page = full_report
    assert 'src="http' not in page and "href=\"http" not in page and "<link" not in page


def test_figures_are_written_as_svg_and_png(tmp_path):
    from meap_scale.report.build import export_figures
    from meap_scale.report.figures import Figure, axis, chart

    figure = Figure("line", "A line", chart("A line", [{"x": 1, "y": 2}, {"x": 2, "y": 3}],
                                            [{"mark": "line", "encoding": {"x": axis("x", "x"), "y": axis("y", "y")}}]))
    written = export_figures({figure.name: figure.spec}, str(tmp_path / "figures"))
    assert sorted(p.rsplit(".", 1)[1] for p in written) == ["png", "svg"]
    assert (tmp_path / "figures" / "line.svg").read_text().lstrip().startswith("<svg")
    assert (tmp_path / "figures" / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_downsampling_keeps_the_first_and_last_points():
    kept = downsample(np.arange(1000), points=60)
    assert len(kept) == 60 and kept[0] == 0 and kept[-1] == 999
    assert list(downsample(np.arange(10), points=60)) == list(range(10))


def test_report_command_writes_the_page_and_figures(tmp_path, capsys):
    from meap_scale.cli import main

    store = write_synthetic_store(str(tmp_path / "store"))
    out, figures = tmp_path / "r.html", tmp_path / "figs"
    assert main(["report", "--store", store.url, "--out", str(out), "--study", "synthetic-sweep",
                 "--figures", str(figures), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "mask_ratio" in printed
    assert (figures / "mask_ratio_loss.svg").exists() and (figures / "mask_ratio_loss.png").exists()
    assert "meap-scale report: synthetic-sweep" in out.read_text()


# --- in a real browser ---------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("Chromium is not installed: .ci/run installs Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(browser, path):
    """The page, with every console error, page error, dialog and non-file request it caused."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seen = {"errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda message: seen["errors"].append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("request", lambda request: None if request.url.startswith("file://") else seen["requests"].append(
        request.url))
    page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, seen


def _figure_marks(page, name: str) -> int:
    page.wait_for_selector(f"#fig-{name} svg", timeout=20_000)
    return page.eval_on_selector(f"#fig-{name} svg", "svg => svg.querySelectorAll('path, rect, text, line').length")


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#runs tbody tr td:nth-child({index + 1})", "cells => cells.map(c => c.textContent)")


@pytest.mark.slow
def test_the_report_renders_in_chromium_offline_with_every_figure_and_a_sortable_table(browser, full_report,
                                                                                        tmp_path):
    from meap_scale.report.sections import RUN_COLUMNS

    built, _ = full_report
    page, seen = _open(browser, Path(built.path))
    for name in FIGURES:
        assert _figure_marks(page, name) > 10, f"figure {name} did not render"
    loss = RUN_COLUMNS.index("val_loss")
    page.click(f"#runs thead th:nth-child({loss + 1})")
    values = [float(v) for v in _column(page, loss) if v]
    assert len(values) > 100 and values == sorted(values)
    page.click(f"#runs thead th:nth-child({loss + 1})")
    values = [float(v) for v in _column(page, loss) if v]
    assert values == sorted(values, reverse=True)
    page.fill("#runs-filter", "alert")
    names = _column(page, RUN_COLUMNS.index("name"))
    assert names == [XSS_NAME]  # the run named like a script tag is shown as its text
    assert _column(page, RUN_COLUMNS.index("error")) == [XSS_ERROR]
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 50_000
    assert seen == {"errors": [], "requests": [], "dialogs": []}


@pytest.mark.slow
def test_reference_lines_are_labelled_legends_list_only_objectives_with_data_and_numbers_never_wrap(
        browser, full_report):
    built, _ = full_report
    page, seen = _open(browser, Path(built.path))
    _figure_marks(page, "retrieval_vs_compute")
    texts = page.eval_on_selector("#fig-retrieval_vs_compute svg",
                                  "svg => [...svg.querySelectorAll('text')].map(t => t.textContent)")
    assert any(t.startswith("chance (needle)") for t in texts)  # written on the figure, not only in a tooltip
    _figure_marks(page, "needle_heatmap")
    title = page.eval_on_selector("#fig-needle_heatmap svg",
                                  "svg => [...svg.querySelectorAll('text')].map(t => t.textContent).join(' ')")
    assert "no-needle control" in title and "chance" in title  # the baselines a cell must beat
    _figure_marks(page, "loss_vs_compute")
    legend = page.eval_on_selector("#fig-loss_vs_compute svg",
                                   "svg => [...svg.querySelectorAll('text')].map(t => t.textContent)")
    assert "ntp" in legend and "meap" in legend and "meap_sft" not in legend
    _figure_marks(page, "mask_ratio_loss")
    sweep = page.eval_on_selector("#fig-mask_ratio_loss svg",
                                  "svg => [...svg.querySelectorAll('text')].map(t => t.textContent)")
    assert any("lr 0.0002" in t for t in sweep) and any("lr 0.0004" in t for t in sweep)  # one series per lr
    wrapping = page.eval_on_selector_all("#runs tbody td", "cells => cells.filter(c => "
                                         "getComputedStyle(c).whiteSpace !== 'nowrap').length")
    assert wrapping == 0
    from meap_scale.report.sections import RUN_COLUMNS

    column = RUN_COLUMNS.index("flops_6nd") + 1
    shown = page.eval_on_selector_all(f"#runs tbody tr td:nth-child({column})",
                                      "cells => cells.filter(c => c.textContent).map(c => [c.textContent, c.title])")
    assert shown and all(re.fullmatch(r"[0-9.]+[kMGTPE]", text) for text, _ in shown)  # SI prefixes
    assert all(abs(float(text[:-1]) * SI[text[-1]] / float(exact) - 1) < 0.01 for text, exact in shown)
    assert seen == {"errors": [], "requests": [], "dialogs": []}


def test_groups_that_cannot_be_fitted_are_one_line_per_reason_and_no_multiplier_is_promised(tmp_path):
    from meap_scale.store import ResultsStore

    store = ResultsStore(str(tmp_path / "store"))
    store.append("runs", [{"run_id": f"{objective}-{ratio}-{lr}-{seed}", "status": "finished", "study": "one-size",
                           "objective": objective, "mask_ratio": ratio, "model_size": "debug", "lr": lr, "seed": seed,
                           "params_total": 10**6, "tokens_seen": 10**6, "flops_6nd": 6e12, "val_loss": 5.0 + seed / 100,
                           "unigram_entropy": 7.0, "data_source": f"corpus-{lr}"}
                          for objective, ratio in (("ntp", 0.0), ("meap", 0.1), ("meap", 0.2)) for lr in (1e-3, 3e-3)
                          for seed in (0, 1)])
    built = build_report(store.url, str(tmp_path / "report.html"), bootstrap=0)
    page = Path(built.path).read_text()
    assert page.count("Laws not fitted for 6 of 6 group(s)") == 1 and "not fitted (" not in page
    assert "No compute multiplier is drawn" in page and "The compute multiplier is how much" not in page


@pytest.mark.slow
def test_the_empty_report_opens_cleanly_in_chromium(browser, empty_report):
    built, _ = empty_report
    page, seen = _open(browser, Path(built.path))
    assert "has no runs" in page.inner_text("body")
    assert seen == {"errors": [], "requests": [], "dialogs": []}


def test_the_report_shows_the_intervals_meap_scale_fit_stored_and_says_which_laws_have_new_runs(tmp_path, capsys):
    """One store, one set of intervals: the report fits approach 3 with the stored fits' bootstrap count, seed and
    options, so each law's intervals are those `meap-scale fit` printed and stored; a law whose runs changed since
    is named."""
    import json

    from test_scaling import synthetic_store

    from meap_scale.cli import main as cli
    from meap_scale.report.build import _fits
    from meap_scale.scaling.from_store import stored_fits
    from meap_scale.store import ResultsStore

    store = synthetic_store(tmp_path / "store")
    assert stored_fits(store, None) is None
    out = tmp_path / "before.html"
    build_report(store.url, str(out), bootstrap=20)
    assert "the report fitted them itself with 20 bootstrap refits" in out.read_text()
    assert cli(["fit", "--store", store.url, "--bootstrap", "30", "--seed", "7"]) in (0, 1)
    capsys.readouterr()
    stored = stored_fits(ResultsStore(store.url), None)
    assert (stored.bootstrap, stored.seed, stored.n_convention) == (30, 7, "total")
    rows = {r["objective"]: json.loads(r["intervals_json"]) for r in store.read("fits").to_pylist()
            if r["law"] == "chinchilla-approach-3"}
    for result in _fits(store, None, 100, 3, stored):
        assert stored.same_runs(result)
        assert {k: list(v) for k, v in result.fit.intervals().items()} == rows[result.group["objective"]]
    out = tmp_path / "after.html"
    build_report(store.url, str(out), bootstrap=100)
    page = out.read_text()
    assert "follow meap-scale fit&#x27;s stored fits" in page or "follow meap-scale fit's stored fits" in page
    assert "30 bootstrap refits, seed 7" in page and "Runs changed since" not in page
    store.append("runs", [{"run_id": "ntp-extra", "status": "finished", "objective": "ntp", "mask_ratio": 0.0,
                           "params_total": 3 * 10 ** 8, "params_non_embedding": 2 * 10 ** 8,
                           "tokens_seen": 6 * 10 ** 9, "val_loss": 2.5}])
    build_report(store.url, str(out), bootstrap=100)
    assert "Runs changed since for: objective=ntp" in out.read_text()
