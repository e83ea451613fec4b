"""The audit page's statistics convention selector (FairMed's default beside the FairGRPO paper's protocol)
and its format-failure rates per group, under Streamlit's AppTest."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fairmed_core.fairness import FORMAT_FAILURE, paper_protocol
from fairmed_core.runs.workspace import TINY_MODEL
from tests.conftest import REPO_ROOT

PAPER = "FairGRPO paper protocol (Table 1 convention)"


@pytest.fixture()
def app(default_workspace, monkeypatch):
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(default_workspace))
    monkeypatch.chdir(REPO_ROOT)
    return AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=180)


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _table(at: AppTest, column: str) -> pd.DataFrame:
    """The one table on the page with ``column``."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def test_the_paper_protocol_is_shown_by_name_beside_fairmeds_default(app):
    app.switch_page("pages/fairness_audit.py").run()
    _no_errors(app)
    selector = app.radio(key="audit_protocol")
    assert selector.value == "fairmed"  # FairMed's clinical convention is the default
    assert PAPER not in [s.value for s in app.subheader]
    selector.set_value("fairgrpo_paper").run()
    _no_errors(app)
    subheaders = [s.value for s in app.subheader]
    assert "Fairness summary per source and attribute" in subheaders and PAPER in subheaders
    shown = _table(app, "PP (pp)").iloc[0]
    frame = pd.read_csv(TINY_MODEL / "evaluation" / "predictions.csv", keep_default_na=False)
    expected = paper_protocol(frame["y_true"], frame["y_pred"], sources=frame["source"],
                              attributes={a: frame[a] for a in ("sex", "age_group", "skin_tone")}).aggregate
    assert shown["PP (pp)"] == pytest.approx(expected.predictive_parity)
    assert shown["F1_ES"] == pytest.approx(expected.f1_es)
    attributes = _table(app, "in_aggregate")
    assert not attributes[attributes["attribute"] == "skin_tone"]["in_aggregate"].any()


def test_format_failures_are_scored_as_chosen_and_their_rate_is_shown_per_group(app, default_workspace):
    run = default_workspace / "runs" / "eval-with-failures"
    shutil.copytree(TINY_MODEL / "evaluation", run)
    predictions = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    failed = predictions.index % 10 == 0
    predictions.loc[failed, "y_pred"] = FORMAT_FAILURE
    predictions.loc[failed, "format_ok"] = False
    predictions.to_csv(run / "predictions.csv", index=False)
    app.session_state["audit_preselect_run"] = "eval-with-failures"
    app.switch_page("pages/fairness_audit.py").run()
    _no_errors(app)
    assert any("could not be parsed" in w.value for w in app.warning)
    app.selectbox(key="audit_view_source").set_value("ALL").run()  # the page opens per source
    rates = _table(app, "failures")
    overall = rates[rates["attribute"] == "overall"].iloc[0]
    assert overall["failures"] == int(failed.sum()) and overall["n"] == len(predictions)
    by_sex = rates[rates["attribute"] == "sex"].set_index("group")
    assert by_sex.loc["female", "failures"] == int((failed & (predictions["sex"] == "F")).sum())
    app.selectbox(key="audit_format_failures").set_value("abstain").run()
    _no_errors(app)
    assert any("left out of the metrics" in m.value for m in app.markdown)
