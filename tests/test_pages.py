"""Every dashboard page under Streamlit's AppTest: it renders, reacts to its controls, and shows bad input
as an error box while the rest keeps working."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "app.py")


@pytest.fixture()
def app(default_workspace, monkeypatch):
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(default_workspace))
    monkeypatch.chdir(REPO_ROOT)
    return AppTest.from_file(APP, default_timeout=180)


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_overview_shows_the_data_card_group_sizes_first(app):
    app.run()
    _no_errors(app)
    assert app.title[0].value == "Overview"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Cases"] == "6,000"
    assert metrics["Sources"] == "3"
    subheaders = [s.value for s in app.subheader]
    assert subheaders.index("Group sizes") < subheaders.index("Sample images per group")
    sizes = app.dataframe[0].value
    assert list(sizes.columns) == ["chest X-ray", "dermoscopy", "mammography", "all sources"]
    assert int(sizes["all sources"].sum()) == 6000
    assert (sizes[["chest X-ray", "dermoscopy", "mammography"]].sum(axis=1) == sizes["all sources"]).all()
    assert set(sizes.index) == {"female", "male", "not recorded"}  # decoded group names (issue 15)
    markdown = " ".join(m.value for m in app.markdown)
    assert "chest X-ray: opacity" in markdown and "mammography: mass" in markdown  # the finding named



def test_the_workspace_is_the_servers_and_cannot_be_typed_into_the_page(app, default_workspace, tmp_path):
    """Issue 13: a visitor could type any folder as the workspace and make the server write there."""
    app.run()
    _no_errors(app)
    assert not app.sidebar.text_input  # nothing to type a path into
    assert [c.value for c in app.sidebar.code] == [str(default_workspace)]
    # Even a forged session value (the old widget's key) does not move it: nothing is written elsewhere. A fresh
    # session, because AppTest drops the sidebar (written before st.navigation runs the page) on a rerun.
    elsewhere = tmp_path / "visitor-choice"
    forged = AppTest.from_file(APP, default_timeout=180)
    forged.session_state["workspace_root"] = str(elsewhere)
    forged.run()
    _no_errors(forged)
    assert [c.value for c in forged.sidebar.code] == [str(default_workspace)]
    assert not elsewhere.exists()

def test_overview_switches_attribute_and_source(app):
    app.run()
    app.selectbox(key="overview_attribute").set_value("skin_tone").run()
    app.selectbox(key="overview_source").set_value("synth_derm").run()
    _no_errors(app)
    markdown = " ".join(m.value for m in app.markdown)
    assert "skin tone: dark skin" in markdown and "skin tone: light skin" in markdown
    app.selectbox(key="overview_source").set_value("synth_cxr").run()
    _no_errors(app)
    assert any("does not record skin_tone" in i.value for i in app.info)


def test_audit_page_audits_the_shipped_predictions(app):
    app.switch_page("pages/fairness_audit.py").run()
    _no_errors(app)
    assert app.title[0].value == "Fairness audit"
    # The default is the shipped tiny FairMedGemma's evaluation of the test split.
    assert app.radio(key="audit_source_kind").value.startswith("Tiny FairMedGemma")
    assert any("All 2,400 answers parsed" in c.value for c in app.caption)
    charts = app.get("plotly_chart")
    assert len(charts) == 3
    subheaders = [s.value for s in app.subheader]
    assert subheaders.index("Group sizes: sex") < subheaders.index("Metrics per group: sex")
    tables = [d.value for d in app.dataframe]
    gap_table = next(t for t in tables if "comparison" in t.columns)
    assert {"difference", "ci_low", "ci_high", "p_value", "test_method", "minimum_detectable_gap"} <= set(
        gap_table.columns
    )
    assert set(gap_table["comparison"]) == {"max-min", "vs-reference"}
    assert gap_table["test_method"].str.startswith("permutation").all()
    detail = next(t for t in tables if "interval_method" in t.columns and "denominator" in t.columns)
    defined = detail[detail["estimate"].notna()]
    assert set(defined["interval_method"]) <= {"wilson", "wilson on the Jaccard index"}
    assert (detail["minimum_detectable_gap"].dropna() > 0).all()


def test_audit_page_opens_per_source_with_a_verdict_strip_and_checks_pooled_gaps(app):
    """Issue 15, observations 1-3: the audit opens on one source; the strip names the near-constant chest X-ray
    source; the pooled sex recall gap is shown beside its within-source version; one row per comparison."""
    app.switch_page("pages/fairness_audit.py").run()
    _no_errors(app)
    assert app.selectbox(key="audit_view_source").value == "synth_cxr"
    strip = " ".join(m.value for m in app.markdown)
    assert "group-vs-reference comparisons are outside the 0.8-1.25 ratio band" in strip
    assert "finds 1.1% of the 285 positive cases" in strip and "ratio verdicts are suppressed" in strip
    app.selectbox(key="audit_view_source").set_value("ALL").run()
    app.selectbox(key="audit_view_attribute").set_value("sex").run()
    _no_errors(app)
    tables = [d.value for d in app.dataframe]
    pooled = next(t for t in tables if "within sources" in t.columns)
    recall = pooled[pooled["metric"].str.startswith("Recall")].iloc[0]
    assert recall["reading"] != "persists within sources"
    app.multiselect(key="audit_gap_kinds").set_value(["vs-reference", "pairwise"]).run()
    gaps = next(t for t in [d.value for d in app.dataframe] if "comparison" in t.columns)
    pairs = [frozenset((a, b, m)) for a, b, m in zip(gaps["group_a"], gaps["group_b"], gaps["metric"])]
    assert len(pairs) == len(set(pairs))  # no comparison twice
    assert set(gaps["group_a"]) <= {"female", "male"}  # decoded group names


def test_audit_page_crosses_two_chosen_attributes(app):
    app.switch_page("pages/fairness_audit.py").run()
    app.multiselect(key="audit_crossed").set_value(["sex", "age_group"]).run()
    _no_errors(app)
    assert app.selectbox(key="audit_view_attribute").value == "sex x age_group"
    assert "Intersectional map: sex x age group" in [s.value for s in app.subheader]


def test_audit_page_follows_attribute_source_and_intersection(app):
    app.switch_page("pages/fairness_audit.py").run()
    app.selectbox(key="audit_view_source").set_value("synth_mammo").run()
    app.selectbox(key="audit_view_attribute").set_value("sex").run()
    _no_errors(app)
    assert "Group sizes: sex" in [s.value for s in app.subheader]
    # Mammography has very few men: the page must say the group is too small to support a claim.
    assert any("Too small to support a claim" in w.value and "**male**" in w.value for w in app.warning)
    app.multiselect(key="audit_crossed").set_value(["sex", "skin_tone"]).run()
    _no_errors(app)
    options = app.selectbox(key="audit_view_attribute").options
    assert "sex x skin tone" in options  # shown in words


def test_audit_page_asks_for_a_metric_instead_of_failing(app):
    app.switch_page("pages/fairness_audit.py").run()
    app.multiselect(key="audit_metrics").set_value([]).run()
    assert not app.exception
    assert any("at least one attribute and one metric" in w.value for w in app.warning)


def test_audit_page_upload_mode_waits_for_a_file(app):
    app.switch_page("pages/fairness_audit.py").run()
    app.radio(key="audit_source_kind").set_value("Upload a predictions file").run()
    _no_errors(app)
    assert any("Upload a predictions file" in i.value for i in app.info)


def test_audit_page_saves_the_audit_to_the_workspace(app, default_workspace):
    import json

    app.switch_page("pages/fairness_audit.py").run()
    save = next(b for b in app.button if b.label == "Save to workspace")
    save.click().run()
    _no_errors(app)
    saved = sorted((default_workspace / "audits").glob("tiny-fairmedgemma-test-*/audit.json"))
    assert saved, "no audit written"
    payload = json.loads(saved[-1].read_text())
    assert {"groups", "gaps", "summary", "settings"} <= set(payload)
    assert (saved[-1].parent / "groups.csv").is_file() and (saved[-1].parent / "predictions.csv").is_file()
    # Issue 15, observation 9: a saved audit reopens from a list.
    app.radio(key="audit_source_kind").set_value("A saved audit").run()
    _no_errors(app)
    assert app.selectbox(key="audit_saved_choice").value.startswith(saved[-1].parent.name)
    assert any("Group sizes" in s.value for s in app.subheader)


def test_audit_page_maps_a_two_attribute_intersection(app):
    app.switch_page("pages/fairness_audit.py").run()
    app.multiselect(key="audit_attributes_tiny-fairmedgemma-test").set_value(["sex", "age_group"]).run()
    app.multiselect(key="audit_crossed").set_value(["sex", "age_group"]).run()
    app.selectbox(key="audit_view_attribute").set_value("sex x age_group").run()
    _no_errors(app)
    assert "Intersectional map: sex x age group" in [s.value for s in app.subheader]
    assert len(app.get("plotly_chart")) == 4


def test_audit_page_audits_the_reference_classifier_and_saved_runs(app, default_workspace):
    import shutil

    from fairmed_core.runs.workspace import TINY_MODEL

    app.switch_page("pages/fairness_audit.py").run()
    app.radio(key="audit_source_kind").set_value("Reference classifier on the embedded benchmark (shipped)").run()
    _no_errors(app)
    assert len(app.get("plotly_chart")) == 3
    app.radio(key="audit_source_kind").set_value("A saved evaluation run").run()
    _no_errors(app)
    runs = default_workspace / "runs"
    # The shipped models' test evaluations are always listed (read-only), before any run of the workspace.
    options = app.selectbox(key="audit_run_choice").options
    assert any("shipped/tiny-fairmedgemma" in option for option in options), options
    # A run stored in the workspace (here: a copy of the shipped model's evaluation) is listed and audited.
    shutil.copytree(TINY_MODEL / "evaluation", runs / "eval-copied-run")
    app.run()
    _no_errors(app)
    assert any("eval-copied-run" in option for option in app.selectbox(key="audit_run_choice").options)
    app.selectbox(key="audit_run_choice").set_value(
        next(o for o in app.selectbox(key="audit_run_choice").options if "eval-copied-run" in o)).run()
    _no_errors(app)
    assert len(app.get("plotly_chart")) == 3


def test_audit_page_warns_where_a_model_answers_no_to_every_case(app, default_workspace):
    import shutil

    import pandas as pd

    from fairmed_core.runs.workspace import TINY_MODEL

    # The shipped model's evaluation with every chest X-ray answer turned into "no": its gaps there become 0.
    run = default_workspace / "runs" / "eval-silent-cxr"
    shutil.copytree(TINY_MODEL / "evaluation", run)
    predictions = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    n_cxr = int((predictions["source"] == "synth_cxr").sum())
    predictions.loc[predictions["source"] == "synth_cxr", "y_pred"] = "no"
    predictions.to_csv(run / "predictions.csv", index=False)
    app.session_state["audit_preselect_run"] = "eval-silent-cxr"
    app.switch_page("pages/fairness_audit.py").run()
    app.radio(key="audit_source_kind").set_value("A saved evaluation run").run()
    _no_errors(app)
    warnings = [w.value for w in app.warning if "answers 'no' to all" in w.value]
    assert warnings == [f"In the chest X-ray source, the model answers 'no' to all {n_cxr:,} cases: its true and false positive "
                        "rates are the same in every group, so its equal opportunity and equalized odds gaps are 0 "
                        "because it tells no case apart, not because it is fair. Read accuracy, recall and "
                        "prevalence there."]


def test_audit_page_compares_the_shipped_grpo_and_fairgrpo_models(app):
    """Issue 15: two evaluations on the same cases side by side, with paired intervals."""
    app.switch_page("pages/fairness_audit.py").run()
    _no_errors(app)
    chosen = app.multiselect(key="audit_compare_runs").value
    assert len(chosen) == 2 and any("fairgrpo" in c for c in chosen)
    tables = [d.value for d in app.dataframe]
    changes = next(t for t in tables if "candidate_value" in t.columns)
    assert set(changes["outcome"]) <= {"better", "worse", "no clear change", "changed", "undefined"}
    defined = changes[changes["outcome"] != "undefined"]
    assert len(defined) and (defined["ci_low"] <= defined["change"]).all()
    assert (defined["change"] <= defined["ci_high"]).all()
    gaps = next(t for t in tables if "candidate_gap" in t.columns)
    assert set(gaps["outcome"]) <= {"narrowed", "widened", "no clear change", "undefined"}
