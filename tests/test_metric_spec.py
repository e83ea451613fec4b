"""Adding a metric is one row of the spec table: the negative predictive value (NPV), added as one row of
``fairmed_core.fairness._metric_spec.METRIC_SPECS``, is computed, given an interval and a test, explained and
offered on the audit page with nothing else written for it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fairmed_core.fairness import GLOSSARY, METRIC_SPECS, METRICS, SPEC_BY_NAME, audit
from fairmed_core.viz import METRIC_LABELS
from tests.conftest import REPO_ROOT


def _table() -> pd.DataFrame:
    # Group A: TN 30, FN 10 (NPV 0.75) and 20 answered positive; group B: every case answered positive, so it has
    # no predicted negatives and its NPV is undefined.
    a = pd.DataFrame({"y": [0] * 30 + [1] * 10 + [1] * 12 + [0] * 8, "pred": [0] * 40 + [1] * 20, "sex": "A"})
    b = pd.DataFrame({"y": [1] * 15 + [0] * 5, "pred": [1] * 20, "sex": "B"})
    return pd.concat([a, b], ignore_index=True)


def test_every_row_of_the_spec_table_is_a_metric_with_a_label_and_a_meaning():
    assert tuple(spec.name for spec in METRIC_SPECS) == METRICS
    for spec in METRIC_SPECS:
        assert METRIC_LABELS[spec.name] == spec.label and GLOSSARY[spec.name] == spec.meaning and spec.meaning
        assert spec.needs_score or spec.denominator_cells, spec.name  # a confusion metric is computed from cells


def test_npv_is_reported_per_group_with_its_interval_denominator_and_reason():
    assert SPEC_BY_NAME["npv"].label == "Negative predictive value"
    groups = audit(_table(), label_col="y", pred_col="pred", sensitive=["sex"], n_boot=200, seed=0).groups_frame()
    npv = groups[(groups.metric == "npv") & (groups.attribute == "sex")].set_index("group")
    a, b = npv.loc["A"], npv.loc["B"]
    assert a.estimate == pytest.approx(30 / 40) and a.denominator == 40  # TN / (TN + FN)
    assert "wilson" in a.interval_method.lower() and a.ci_low < 0.75 < a.ci_high
    # The Wilson 95% interval of 30 of 40, by hand.
    z, p, n = 1.959963984540054, 0.75, 40
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n
                                                                                          + z * z / (4 * n * n))
    assert (a.ci_low, a.ci_high) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert np.isnan(b.estimate) and b.undefined_reason == "no predicted negatives (TN + FN = 0)"


def test_npv_is_offered_and_explained_on_the_audit_page(default_workspace, monkeypatch):
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(default_workspace))
    monkeypatch.chdir(REPO_ROOT)
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=180)
    app.switch_page("pages/fairness_audit.py").run()
    assert not app.exception, [e.value for e in app.exception]
    chooser = app.multiselect(key="audit_metrics")
    assert "Negative predictive value" in chooser.options
    assert "how far a negative answer can be trusted" in chooser.help


def test_the_readme_names_every_metric_of_the_spec_table():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme.split("Metric names:", 1)[1].split(". ", 1)[0]
    assert all(f" {spec.name}" in listed for spec in METRIC_SPECS), listed
