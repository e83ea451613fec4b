"""Real-browser tests: the dashboard served by Streamlit and driven in Debian chromium through Playwright.

Screenshots land in tests/_artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fairmed_core.files import LEARNABLE_START
from tests.conftest import REPO_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "tests" / "_artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (apt install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(default_workspace):
    port = _free_port()
    env = {**os.environ, "FAIRMED_WORKSPACE": str(default_workspace)}
    log = (ARTIFACTS.mkdir(exist_ok=True) or ARTIFACTS) / "streamlit.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO_ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"streamlit did not start; see {log}") from None
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    # Tall viewport: Streamlit scrolls inside its own container, so a short one cuts screenshots off.
    context = browser.new_context(viewport={"width": 1400, "height": 3200})
    # CI machines have 2 cores and the app reruns after every click: give actions time beyond the 30 s default.
    context.set_default_timeout(90_000)
    yield context.new_page()
    context.close()


def _wait_for_charts(page, count: int) -> None:
    """Plotly draws after the page's text arrives; wait until ``count`` charts are drawn."""
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {count}", timeout=60_000
    )


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``."""
    box = page.get_by_label(label, exact=True)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()


_GRIDS_JS = """[...document.querySelectorAll('[data-testid=stDataFrame] [data-testid=data-grid-canvas]')].map(c => ({
    headers: [...c.querySelectorAll('th')].map(t => t.textContent),
    rows: [...c.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(t => t.textContent)),
}))"""
# A header in snake_case ("p_value_raw", "outside_band"): what a clinician should never have to read.
SNAKE_CASE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")


def _grids(page, count: int) -> list[dict]:
    """The tables on the page as a person's screen reader gets them: Streamlit draws a table on a canvas and
    keeps its drawn columns and rows (headers and cell text) in an accessible table inside it."""
    page.wait_for_function(
        "[...document.querySelectorAll('[data-testid=stDataFrame] [data-testid=data-grid-canvas]')]"
        f".filter(c => c.querySelector('th')).length >= {count}", timeout=120_000)
    return page.evaluate(_GRIDS_JS)


def _pick(page, label: str, option: str) -> None:
    """Add ``option`` in the Streamlit multiselect labelled ``label``. A rerun that redraws the page closes an
    open list, so the list is opened again until the option shows (three tries)."""
    for attempt in range(3):
        page.get_by_label(label, exact=True).click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError; try once more
            page.keyboard.press("Escape")
            if attempt == 2:
                page.screenshot(path=str(ARTIFACTS / "pick_failed.png"), full_page=True)
                raise
    page.keyboard.press("Escape")


def test_audit_page_changes_attribute_and_shows_the_chart(server, page):
    page.goto(f"{server}/fairness_audit", timeout=60_000)
    page.get_by_text("Metrics per group: sex", exact=True).wait_for(timeout=120_000)
    _wait_for_charts(page, 3)
    # A deep link as the server's first request still gets app.py's navigation and sidebar.
    sidebar = page.locator("[data-testid=stSidebar]").inner_text()
    assert "FairMed" in sidebar and "Overview" in sidebar, sidebar
    # Issue 15: the audit opens per source, with the verdict strip naming the near-constant source first.
    page.get_by_text("What this audit shows", exact=False).wait_for(timeout=60_000)
    body = page.locator("[data-testid=stMain]").inner_text()
    assert "ratio verdicts are suppressed" in body and "chest X-ray, sex:" in body, body[:2000]
    page.screenshot(path=str(ARTIFACTS / "audit_sex.png"), full_page=True)

    _choose(page, "Attribute to inspect", "age group")
    page.get_by_text("Metrics per group: age group", exact=True).wait_for(timeout=60_000)
    # The metric chart redraws with the age groups in its legend, decoded (SVG text, so read textContent).
    page.wait_for_function(
        "[...document.querySelectorAll('.js-plotly-plot .legendtext')]"
        ".some(t => t.textContent.startsWith('age 26-50'))",
        timeout=60_000,
    )
    chart = page.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text="Metrics per group")).first
    legend = chart.locator(".legendtext").all_text_contents()
    assert any(text.startswith("age 26-50") for text in legend), legend
    assert not any(text.startswith(("female ", "A2")) for text in legend), legend
    page.screenshot(path=str(ARTIFACTS / "audit_age_group.png"), full_page=True)


def test_junk_upload_shows_an_error_and_the_page_keeps_working(server, page, tmp_path):
    page.goto(f"{server}/fairness_audit", timeout=60_000)
    page.get_by_text("Metrics per group: sex", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Upload a predictions file", exact=True).click()
    junk = tmp_path / "predictions.csv"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2048))
    page.locator("input[type=file]").set_input_files(str(junk))
    error = page.get_by_text("Cannot use this input")
    error.wait_for(timeout=60_000)
    assert "predictions.csv" in page.locator("[data-testid=stAlert]").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "audit_junk_upload.png"), full_page=True)

    # The app keeps working: go back to the shipped predictions.
    page.get_by_text("Reference classifier on the embedded benchmark (shipped)", exact=True).click()
    page.get_by_text("Metrics per group: sex", exact=True).wait_for(timeout=60_000)


def test_valid_upload_is_mapped_and_audited(server, page, tmp_path):
    import pandas as pd

    from fairmed_core.runs.workspace import REFERENCE_PREDICTIONS

    frame = pd.read_csv(REFERENCE_PREDICTIONS).rename(
        columns={"y_true": "label", "y_pred": "prediction", "sex": "gender"})
    path = tmp_path / "my_model.csv"
    frame[["case_id", "label", "prediction", "gender", "age_group"]].to_csv(path, index=False)
    page.goto(f"{server}/fairness_audit", timeout=60_000)
    # Let the default audit finish drawing first: a click during a rerun can wait on a moving page.
    page.get_by_text("Metrics per group: sex", exact=True).wait_for(timeout=120_000)
    page.get_by_text("Upload a predictions file", exact=True).click()
    page.locator("input[type=file]").set_input_files(str(path))
    page.get_by_text("Column mapper").wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "audit_upload_mapper.png"), full_page=True)
    page.get_by_text("Metrics per group: gender", exact=True).wait_for(timeout=120_000)
    _wait_for_charts(page, 3)
    page.screenshot(path=str(ARTIFACTS / "audit_upload.png"), full_page=True)


def test_overview_shows_sample_images(server, page):
    page.goto(server, timeout=60_000)
    page.get_by_text("Sample images per group").wait_for(timeout=120_000)
    page.locator("[data-testid=stImage] img").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid=stImage] img").count() >= 4
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)


def test_inference_runs_a_case_beside_its_counterfactual_and_an_upload(server, page, tmp_path, default_manifest):
    from fairmed_core.data import read_manifest

    page.goto(f"{server}/inference", timeout=60_000)
    page.get_by_text("Run the model on this case").wait_for(timeout=120_000)
    sidebar = page.locator("[data-testid=stSidebar]").inner_text()
    assert "Model" in sidebar and "Inference" in sidebar, sidebar
    _choose(page, "Source", "dermoscopy")
    _choose(page, "Counterfactual: change", "Skin tone")
    page.get_by_text("Run the model on this case").click()
    page.get_by_text("Model on the counterfactual").wait_for(timeout=120_000)
    page.locator("[data-testid=stImage] img").nth(1).wait_for(timeout=60_000)
    main = page.locator("[data-testid=stMain]").inner_text()
    assert "True counterfactual: skin tone" in main and "Reasoning" in main, main
    assert main.count("Answer:") + main.count("Format failure") == 2, main
    assert main.count("Research tool, synthetic-data model, not a medical device") == 2, main
    page.screenshot(path=str(ARTIFACTS / "inference_counterfactual.png"), full_page=True)

    dataset = read_manifest(default_manifest)
    image = tmp_path / "chest.png"
    dataset.load_image(dataset.cases["case_id"].iloc[0]).save(image)
    page.get_by_role("tab", name="Upload an image").click()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_text("chest.png (PNG, 64x64)").wait_for(timeout=60_000)
    page.get_by_text("Run the model on this image").click()
    page.get_by_text("No ground truth for an upload").wait_for(timeout=120_000)
    assert "Out-of-distribution check passed" in page.locator("[data-testid=stMain]").inner_text()
    page.screenshot(path=str(ARTIFACTS / "inference_upload.png"), full_page=True)

    # Issue 15, observation 5: a flat grey image is flagged beside its answer, with the scope note.
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.new("L", (64, 64), 128).save(grey)
    page.locator("input[type=file]").set_input_files(str(grey))
    page.get_by_text("grey.png (PNG, 64x64)").wait_for(timeout=60_000)
    page.get_by_text("Run the model on this image").click()
    page.get_by_text("This image is unlike anything the model was trained on").wait_for(timeout=120_000)
    # the verdict is drawn first, the answer and its scope note after it
    page.locator("*:visible", has_text="Model on the uploaded image").last.wait_for(timeout=120_000)
    page.locator("[data-testid=stCaptionContainer]:visible",
                 has_text="Research tool, synthetic-data model, not a medical device").first.wait_for(timeout=60_000)
    main = page.locator("[data-testid=stMain]").inner_text()
    assert "its answer means nothing" in main and "Out-of-distribution check passed" not in main, main
    assert "Research tool, synthetic-data model, not a medical device" in main, main
    page.screenshot(path=str(ARTIFACTS / "inference_upload_grey.png"), full_page=True)


def test_fairgrad_page_trains_in_the_background_and_draws_the_pareto_plot(server, page):
    page.goto(f"{server}/fairgrad", timeout=60_000)
    page.get_by_text("Train side by side").wait_for(timeout=120_000)
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Tab")
    warmup = page.get_by_label("ERM warm-up epochs", exact=True)
    warmup.fill("0")
    warmup.press("Tab")
    page.get_by_text("Train side by side").click()
    page.get_by_text("Started 3 job(s)").wait_for(timeout=60_000)
    # The jobs table refreshes itself; when the three jobs end the comparison appears.
    page.get_by_text("Accuracy against disparity by sex").wait_for(timeout=400_000)
    _wait_for_charts(page, 1)
    page.screenshot(path=str(ARTIFACTS / "fairgrad_pareto.png"), full_page=True)


def test_fairgrad_page_trains_on_an_uploaded_table_and_compares_by_its_attribute(server, page, tmp_path,
                                                                                 default_workspace):
    from tests.test_fairgrad_tabular import clinic_table

    path = tmp_path / "clinic.csv"
    clinic_table().to_csv(path, index=False)
    page.goto(f"{server}/fairgrad", timeout=60_000)
    page.get_by_text("Train side by side").wait_for(timeout=120_000)
    page.get_by_text("A tabular CSV", exact=True).click()
    page.locator("input[type=file]").set_input_files(str(path))
    # The form is filled from the table: the label, its positive value, the attributes and the id column guessed.
    page.get_by_text("Outcome (label) column").wait_for(timeout=60_000)
    page.get_by_text("400 rows, 7 columns").wait_for(timeout=60_000)
    for label, value in (("Outcome (label) column", "outcome"), ("Its value meaning the outcome happened", "died")):
        assert page.get_by_label(label, exact=True).input_value() == value
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("60")  # 320 training rows, two steps an epoch: enough for ERM to stop answering "no" to all
    epochs.press("Enter")
    page.screenshot(path=str(ARTIFACTS / "fairgrad_table_form.png"), full_page=True)
    page.get_by_text("Train side by side").click()
    page.get_by_text("Started 3 job(s) on 400 rows").wait_for(timeout=60_000)
    runs = default_workspace / "runs"
    deadline = time.monotonic() + 300
    while len(list(runs.glob("fairgrad-clinic-*/run.json"))) < 3:
        assert time.monotonic() < deadline, "the three table jobs did not finish in 5 minutes"
        time.sleep(1)
    page.reload()
    page.get_by_text("Runs to compare").wait_for(timeout=120_000)
    # The newest runs' data is shown first, but which run.json was written last is a race between the jobs:
    # choose the table's runs by name, then the table's attribute.
    _choose(page, "Compare runs on", "Table clinic")
    _choose(page, "Attribute", "race")
    page.get_by_text("Accuracy against disparity by race").wait_for(timeout=120_000)
    _wait_for_charts(page, 2)
    # Trained models, not all collapsed: on this table (outcome tied to race and sex) the fixed-weight penalty
    # may collapse to answering "no" (the page warns), ERM does not.
    assert page.get_by_text("3 run/source pair(s) answer no").count() == 0
    page.screenshot(path=str(ARTIFACTS / "fairgrad_table_pareto.png"), full_page=True)


def test_training_page_opens_on_shipped_curves_and_lists_a_new_run_without_a_reload(server, page,
                                                                                     default_workspace):
    page.goto(f"{server}/training", timeout=60_000)
    page.get_by_text("Start training").wait_for(timeout=120_000)
    # Streamlit loads each widget's code lazily: on a slow machine the button can be drawn before the number
    # inputs are, so wait for what is asserted rather than reading the page once.
    page.get_by_text("Num generations", exact=True).wait_for(timeout=60_000)
    page.get_by_text("Training dynamics").wait_for(timeout=60_000)
    main = page.locator("[data-testid=stMain]").inner_text()
    assert "Training dynamics" in main and "Num generations" in main, main
    # A fresh workspace opens on the training records shipped with the GRPO- and FairGRPO-trained models from
    # the learnable start (the older shipped records stay in the list).
    page.get_by_text("Held-out F1 per step").first.wait_for(timeout=120_000)
    _wait_for_charts(page, 3)
    main = page.locator("[data-testid=stMain]").inner_text()
    assert f"{LEARNABLE_START.name}-grpo (shipped" in main, main
    assert f"{LEARNABLE_START.name}-fairgrpo (shipped" in main, main
    assert "under-calls" in main and "mammography masses" in main, main
    page.screenshot(path=str(ARTIFACTS / "training_shipped_curves.png"), full_page=True)
    # A run started in a shell after the page opened appears without a reload (the panel re-reads every 30 s
    # while nothing runs).
    run = default_workspace / "runs" / "shell-run"
    shipped = REPO_ROOT / "assets" / "models" / "tiny-fairmedgemma-grpo" / "training"
    try:
        run.mkdir(parents=True)
        lines = (shipped / "metrics.jsonl").read_text().splitlines()
        (run / "metrics.jsonl").write_text("\n".join(lines[:12]) + "\n")
        (run / "config.json").write_text((shipped / "config.json").read_text())
        page.get_by_text("shell-run (GRPO)").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "training_live_run.png"), full_page=True)
    finally:
        shutil.rmtree(run, ignore_errors=True)


@pytest.mark.skipif(not (REPO_ROOT / "assets" / "counterfactual" / "synth-sex" / "generator_config.json").is_file(),
                    reason="no shipped counterfactual generator")
def test_counterfactuals_page_generates_a_pair_and_shows_both_images(server, page):
    page.goto(f"{server}/counterfactuals", timeout=60_000)
    page.get_by_text("Generate pairs").wait_for(timeout=120_000)
    page.get_by_text("Generate pairs").click()
    page.get_by_text("Model on the generated").first.wait_for(timeout=300_000)
    images = page.locator("[data-testid=stImage] img")
    images.nth(1).wait_for(timeout=60_000)
    assert images.count() >= 3  # original, generated, difference (and the true counterfactual)
    sizes = [images.nth(i).evaluate("img => img.naturalWidth") for i in range(2)]
    assert all(size > 0 for size in sizes), sizes  # both decoded, not broken placeholders
    main = page.locator("[data-testid=stMain]").inner_text()
    assert "Original" in main and "Generated:" in main, main
    # Issue 15, observation 6: each badge states its unit and threshold, pass or fail, with an icon and a word;
    # the case is named, not numbered by its raw id; the verdict banner is there.
    assert "reconstruction error" in main and "grey levels (0-255), threshold 12" in main, main
    assert "pass:" in main or "fail:" in main, main
    assert page.locator("[data-testid=stMain] .stMarkdownBadge").count() >= 2
    assert ":material/" not in main and "Case " in main, main  # the icons render as icons, not as text
    assert any(words in main for words in ("counterfactually invariant", "Same answer on", "invalid generated",
                                           "No valid pair")), main
    page.screenshot(path=str(ARTIFACTS / "counterfactual_pair.png"), full_page=True)


def test_audit_reads_one_row_per_comparison_crosses_two_attributes_and_reopens_a_saved_audit(server, page,
                                                                                              default_workspace):
    """Issue 15, observations 2, 4, 8 and 9 (saved audits), as a reviewer goes through the audit page."""
    page.goto(f"{server}/fairness_audit", timeout=60_000)
    page.get_by_text("Gaps between groups", exact=True).wait_for(timeout=120_000)
    # Observation 8: the viewer toolbar, not the developer's ("Deploy", "Clear cache").
    assert page.get_by_text("Deploy", exact=True).count() == 0
    grids = _grids(page, 4)
    # Observation 2: one row per comparison; every row with an interval has its test.
    gap = next(grid for grid in grids if "comparison" in grid["headers"])
    column = {header: index for index, header in enumerate(gap["headers"])}
    assert {"group a", "group b", "95% low", "95% high", "p (raw)"} <= set(column), gap["headers"]
    rows = gap["rows"]
    keys = [(row[column["comparison"]], row[column["metric"]],
             frozenset((row[column["group a"]], row[column["group b"]]))) for row in rows]
    assert len(keys) == len(set(keys)), keys
    assert {row[column["comparison"]] for row in rows} == {"max-min", "vs-reference"}, rows
    for row in rows:
        if row[column["95% low"]] not in ("", "None"):
            assert row[column["p (raw)"]] not in ("", "None", "nan"), row
    # Observation 8: words and units, decoded groups; no "FairGRPO summary" over someone else's predictions.
    for grid in grids:
        assert not [header for header in grid["headers"] if SNAKE_CASE.search(header)], grid["headers"]
    assert {row[column["group a"]] for row in rows} <= {"female", "male", "not recorded"}, rows
    summary = next(grid for grid in grids if "source" in grid["headers"])
    assert "predictive parity (FDR gap, points 0-100)" in summary["headers"], summary["headers"]
    assert {row[0] for row in summary["rows"]} <= {"chest X-ray", "dermoscopy", "mammography",
                                                   "all sources pooled", "mean over sources"}, summary["rows"]
    main = page.locator("[data-testid=stMain]").inner_text()
    assert "FairGRPO summary" not in main and "Fairness summary per source and attribute" in main
    assert "UNK" not in main.replace("(UNK)", ""), main  # "not recorded", also where values are undefined
    # Streamlit scrolls inside its own container: the tables below the fold are shot one by one.
    for header, name in (("comparison", "audit_gap_table.png"), ("predictive parity: 95% interval",
                                                                 "audit_summary_table.png")):
        table = page.locator("[data-testid=stDataFrame]").filter(
            has=page.locator("th", has_text=re.compile(f"^{re.escape(header)}$"))).first
        table.scroll_into_view_if_needed()
        table.screenshot(path=str(ARTIFACTS / name))

    # Observation 4: with every attribute audited, crossing two gives the readable two-way map.
    _pick(page, "Intersectional groups: cross two attributes", "sex")
    _pick(page, "Intersectional groups: cross two attributes", "age group")
    page.get_by_text("Intersectional map: sex x age group", exact=True).wait_for(timeout=120_000)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .heatmaplayer').length >= 1",
                           timeout=60_000)
    labels = page.evaluate("""[...document.querySelectorAll('.js-plotly-plot')]
        .filter(plot => plot.querySelector('.heatmaplayer'))
        .flatMap(plot => [...plot.querySelectorAll('.xtick, .ytick')].map(tick => tick.textContent))""")
    assert "age 26-50" in labels and "female" in labels, labels
    assert not any(label.startswith(("A1", "A2", "F,")) for label in labels), labels
    main = page.locator("[data-testid=stMain]").inner_text()
    # empty cells hidden and counted once; undefined values summed up in one line, not a wall of warnings
    assert "empty cells hidden (no cases)" in main and "empty group (no rows)" not in main, main
    assert "values undefined, shown as n/a" in main and "F,A1" not in main and "UNK," not in main, main
    # Only two attributes can be crossed (a third would bring back the full product of empty cells).
    page.get_by_label("Intersectional groups: cross two attributes", exact=True).click()
    assert page.get_by_role("option", name="skin tone", exact=True).count() == 0
    page.keyboard.press("Escape")
    page.screenshot(path=str(ARTIFACTS / "audit_intersection.png"), full_page=True)

    # Observation 9: a saved audit reopens from a list.
    page.get_by_role("button", name="Save to workspace").click()
    page.get_by_text("Saved to ").wait_for(timeout=60_000)
    saved = list((default_workspace / "audits").glob("tiny-fairmedgemma-test-*"))
    assert saved, list((default_workspace / "audits").iterdir())
    page.get_by_text("A saved audit", exact=True).click()
    page.get_by_text("Reopened from ").wait_for(timeout=60_000)
    # the reopened audit keeps the crossed pair chosen above: it opens on its map
    page.locator("h3", has_text="Metrics per group: ").first.wait_for(timeout=120_000)
    page.get_by_text("What this audit shows", exact=False).wait_for(timeout=60_000)
    assert page.get_by_label("Saved audit", exact=True).count() == 1
    page.screenshot(path=str(ARTIFACTS / "audit_saved_reopened.png"), full_page=True)


def test_fairgrad_opens_on_shipped_runs_and_never_mixes_tables_and_images(server, page, default_workspace):
    """Issue 15, observations 7, 8 and 9 on the FairGrad page: it opens on the shipped runs with their curves,
    compares image runs and table runs apart, names runs that answer no or yes to everyone, in words."""
    # Earlier tests of this module train runs in the same workspace, and the page rightly prefers a workspace's
    # own runs: set them aside so that the page sees what a fresh workspace sees, and put them back afterwards.
    aside = default_workspace / "set-aside-fairgrad-runs"
    aside.mkdir(exist_ok=True)
    own = [folder for folder in (default_workspace / "runs").glob("*") if folder.name.startswith("fairgrad-")]
    for folder in own:
        folder.rename(aside / folder.name)
    try:
        _fairgrad_opens_on_shipped_runs(server, page, default_workspace)
    finally:
        for folder in own:
            (aside / folder.name).rename(folder)


def _fairgrad_opens_on_shipped_runs(server, page, default_workspace):
    page.goto(f"{server}/fairgrad", timeout=60_000)
    page.get_by_text("Runs to compare").wait_for(timeout=120_000)
    page.get_by_text("No FairGrad run in this workspace yet").wait_for(timeout=60_000)
    # pick the shipped runs' data by name
    _choose(page, "Compare runs on", "Benchmark images (synth-default, val split)")
    page.get_by_text("Accuracy against disparity by sex").wait_for(timeout=120_000)
    # the plot redraws for the chosen data (the title may be the same as before)
    page.wait_for_function(
        "[...document.querySelectorAll('.js-plotly-plot .legendtext')].some(t => t.textContent.endsWith('dermoscopy'))",
        timeout=120_000)
    _wait_for_charts(page, 2)
    main = page.locator("[data-testid=stMain]").inner_text()
    assert main.count("(shipped, ") >= 3, main
    legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
    assert "FairGrad, dermoscopy" in legend and "chest X-ray" in legend, legend  # Pareto plot, conflict curve
    assert not any("support2" in text or "synth_" in text for text in legend), legend
    assert "answer no to every case" in main and "fairgrad-images-fairgrad-s0 on dermoscopy" in main, main
    grid = next(g for g in _grids(page, 1) if "Runs" in g["headers"])
    assert "Accuracy (0-1)" in grid["headers"] and "FairGrad" in {row[1] for row in grid["rows"]}, grid
    assert not [header for header in grid["headers"] if SNAKE_CASE.search(header)], grid["headers"]
    page.screenshot(path=str(ARTIFACTS / "fairgrad_shipped_images.png"), full_page=True)

    _choose(page, "Compare runs on", "Table support2_like_sepsis")  # the attribute chosen (sex) is the table's too
    page.wait_for_function(
        "[...document.querySelectorAll('.js-plotly-plot .legendtext')].some(t => t.textContent.includes('support2'))",
        timeout=60_000)
    legend = page.locator(".js-plotly-plot").first.locator(".legendtext").all_text_contents()
    assert legend and all(text.endswith("support2_like_sepsis") for text in legend), legend
    # the gradient-conflict curve follows: the table's FairGrad run, one line (the table is one source)
    page.wait_for_function(
        "[...document.querySelectorAll('.js-plotly-plot .gtitle')]"
        ".some(t => t.textContent.includes('per epoch: fairgrad-support2-like-fairgrad-s0'))", timeout=120_000)
    page.wait_for_timeout(1_000)  # let the rerun's last elements settle before the screenshot
    page.screenshot(path=str(ARTIFACTS / "fairgrad_shipped_table.png"), full_page=True)

    # Observation 9: a run that answers yes to everyone is called collapsed, not fair.
    import pandas as pd

    from fairmed_core.files import SHIPPED_FAIRGRAD

    run = default_workspace / "runs" / "fg-yes-to-everyone"
    shutil.copytree(SHIPPED_FAIRGRAD / "fairgrad-images-erm-s0", run)
    try:
        predictions = pd.read_csv(run / "predictions.csv", keep_default_na=False, na_values=[""])
        predictions.assign(y_pred="yes").to_csv(run / "predictions.csv", index=False)
        page.reload()
        page.get_by_text("Runs to compare").wait_for(timeout=120_000)
        _choose(page, "Compare runs on", "Benchmark images (synth-default, val split)")
        page.get_by_text("answer yes to every case").wait_for(timeout=120_000)
        warning = page.locator("[data-testid=stAlert]").filter(has_text="answer yes to every case").inner_text()
        assert "fg-yes-to-everyone on chest X-ray" in warning and "positive rate 100%" in warning, warning
        page.screenshot(path=str(ARTIFACTS / "fairgrad_yes_to_everyone.png"), full_page=True)
    finally:
        shutil.rmtree(run, ignore_errors=True)
