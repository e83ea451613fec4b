"""Figures show exactly the audit's numbers: bar heights are estimates, whiskers reach the interval ends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairmed_core.fairness import audit
from fairmed_core.runs.workspace import REFERENCE_PREDICTIONS
from fairmed_core.data.labels import group_label
from fairmed_core.viz import OKABE_ITO, group_sizes_figure, metric_bars_figure, ratio_band_figure


@pytest.fixture(scope="module")
def result():
    frame = pd.read_csv(REFERENCE_PREDICTIONS)
    return audit(frame, label_col="y_true", pred_col="y_pred", sensitive=["sex", "age_group"],
                 score_col="score", source_col="source", n_boot=200, seed=1)


def test_metric_bars_are_the_estimates_and_whiskers_the_intervals(result):
    groups = result.groups_frame()
    metrics = ["accuracy", "recall", "fdr"]
    figure = metric_bars_figure(groups, source="synth_cxr", attribute="age_group", metrics=metrics)
    block = groups[(groups["source"] == "synth_cxr") & (groups["attribute"] == "age_group")]
    names = {group_label(group): group for group in block["group"]}  # legends read decoded names
    assert [trace.name.split(" (n=")[0] for trace in figure.data] == [
        group_label(g) for g in dict.fromkeys(block["group"])]
    for trace in figure.data:
        rows = block[block["group"] == names[trace.name.split(" (n=")[0]]].set_index("metric").loc[metrics]
        np.testing.assert_allclose(trace.y, rows["estimate"])
        np.testing.assert_allclose(np.asarray(trace.y) + np.asarray(trace.error_y.array), rows["ci_high"])
        np.testing.assert_allclose(np.asarray(trace.y) - np.asarray(trace.error_y.arrayminus), rows["ci_low"])


def test_small_groups_are_marked_in_sizes_and_metric_bars(result):
    groups = result.groups_frame()
    sizes = group_sizes_figure(groups, source="synth_mammo", attribute="sex")
    assert "male (too small)" in list(sizes.data[0].x)
    bars = metric_bars_figure(groups, source="synth_mammo", attribute="sex", metrics=["recall"])
    male = next(t for t in bars.data if t.name.startswith("male "))
    assert "too small" in male.name and male.marker.pattern.shape == "/"


def test_ratio_band_marks_points_outside_the_band(result):
    gaps = result.gaps_frame()
    figure = ratio_band_figure(gaps, source="ALL", attribute="age_group", metrics=["recall", "fpr"],
                               band=(0.9, 1.1))
    rows = gaps[(gaps["source"] == "ALL") & (gaps["attribute"] == "age_group")
                & (gaps["comparison"] == "vs-reference") & gaps["metric"].isin(["recall", "fpr"])]
    for trace in figure.data:
        ratios = rows[rows["group_a"].map(group_label) == trace.name]["ratio"].to_numpy()
        np.testing.assert_allclose(trace.y, ratios)
        outside = (ratios < 0.9) | (ratios > 1.1)
        assert [s == "diamond" for s in trace.marker.symbol] == list(outside)


def test_figures_use_the_colour_blind_safe_palette(result):
    figure = metric_bars_figure(result.groups_frame(), source="ALL", attribute="sex", metrics=["f1"])
    colours = [t.marker.color for t in figure.data if not t.name.startswith("not recorded")]
    assert colours and all(c in OKABE_ITO for c in colours)


def test_intersection_heatmap_cells_are_the_intersection_estimates():
    from fairmed_core.viz import intersection_heatmap_figure

    frame = pd.read_csv(REFERENCE_PREDICTIONS)
    result = audit(frame, label_col="y_true", pred_col="y_pred", sensitive=["sex", "age_group"],
                   intersect=True, n_boot=0)
    groups = result.groups_frame()
    figure = intersection_heatmap_figure(groups, source="ALL", attribute="sex x age_group", metric="recall")
    heat = figure.data[0]
    cells = groups[(groups["attribute"] == "sex x age_group") & (groups["metric"] == "recall")]
    for row_index, sex in enumerate(heat.y):
        for column_index, age in enumerate(heat.x):
            expected = cells[cells["group"].map(group_label) == f"{sex}, {age}"]["estimate"].iloc[0]
            np.testing.assert_allclose(heat.z[row_index][column_index], expected)
    # Every cell says what it holds: "no cases" for an empty intersection (M, A1 here), a dagger on a small one.
    for row_index, sex in enumerate(heat.y):
        for column_index, age in enumerate(heat.x):
            cell = cells[cells["group"].map(group_label) == f"{sex}, {age}"].iloc[0]
            text = heat.text[row_index][column_index]
            if cell["n"] == 0:
                assert text == "no cases", text
            else:
                assert f"n={int(cell['n'])}" in text and ("†" in text) == bool(cell["small_group"]), text
    assert "no cases" in [text for row in heat.text for text in row]
    few = frame[(frame["sex"] != "F") | (frame["age_group"] != "A2") | (frame.index % 40 == 0)]
    few_groups = audit(few, label_col="y_true", pred_col="y_pred", sensitive=["sex", "age_group"],
                       intersect=True, n_boot=0).groups_frame()
    few_texts = [text for row in intersection_heatmap_figure(few_groups, source="ALL", attribute="sex x age_group",
                                                             metric="recall").data[0].text for text in row]
    assert any("†" in text for text in few_texts), few_texts  # F, A2 cut to a few cases: flagged small
    with pytest.raises(ValueError, match="two attributes"):
        intersection_heatmap_figure(groups, source="ALL", attribute="sex", metric="recall")



def test_pareto_axes_hold_every_point_and_stay_near_the_unit_range():
    from fairmed_core.viz.fairgrad_figures import pareto_figure

    comparison = pd.DataFrame({
        "run": ["a", "b", "c"], "method": ["erm", "penalty", "fairgrad"], "source": ["clinic"] * 3,
        "attribute": ["race"] * 3, "eq_odds_diff": [0.0, 0.0, 0.0], "accuracy": [0.525, 0.525, 0.525],
        "positive_rate": [0.0, 0.0, 0.0]})
    figure = pareto_figure(comparison, attribute="race")
    x_low, x_high = figure.layout.xaxis.range
    y_low, y_high = figure.layout.yaxis.range
    # one collapsed point: it sits inside the axes (not on their edge), and the axes do not run past [0, 1]
    assert -0.05 < x_low < 0.0 < x_high <= 0.2
    assert 0.4 < y_low < 0.525 < y_high < 0.65
    spread = comparison.assign(eq_odds_diff=[0.02, 0.3, 0.9], accuracy=[0.98, 0.7, 0.99])
    x_low, x_high = pareto_figure(spread, attribute="race").layout.xaxis.range
    y_low, y_high = pareto_figure(spread, attribute="race").layout.yaxis.range
    assert x_low < 0.02 and 0.9 < x_high < 1.1 and y_low < 0.7 and 0.99 < y_high < 1.05


def test_a_group_has_one_colour_in_every_figure_whatever_its_position():
    from fairmed_core.viz.palette import FIXED_COLOURS, colour_for

    assert colour_for(0, "A4") == colour_for(5, "A4") == FIXED_COLOURS["A4"]
    assert colour_for(3, "UNK") == FIXED_COLOURS["UNK"]
    assert colour_for(1, "no fixed colour") == colour_for(1)
    groups = ("F", "M", "A1", "A2", "A3", "A4", "UNK")
    assert len({FIXED_COLOURS[g] for g in ("A1", "A2", "A3", "A4", "UNK")}) == 5  # distinct within an attribute
    assert all(g in FIXED_COLOURS for g in groups)
