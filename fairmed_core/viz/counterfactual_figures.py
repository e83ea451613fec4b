"""Figures of a counterfactual analysis: flip rates per group with their intervals."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fairmed_core.viz.palette import OKABE_ITO

__all__ = ["flip_rates_figure"]


def flip_rates_figure(rows: pd.DataFrame, *, title: str = "Answer flip rate per group") -> go.Figure:
    """Bars of ``flip_rate`` per (attribute, group) row of a flip table with Wilson intervals; one colour per
    attribute (the pooled row "ALL" first). Expects the columns of ``FlipTable.frame()``."""
    figure = go.Figure()
    for index, (attribute, part) in enumerate(rows.groupby("attribute", sort=False)):
        labels = ["all pairs" if attribute == "ALL" else f"{attribute} = {g}" for g in part["group"]]
        figure.add_bar(
            x=labels, y=part["flip_rate"], name="all pairs" if attribute == "ALL" else attribute,
            marker_color=OKABE_ITO[index % len(OKABE_ITO)],
            error_y={"type": "data", "symmetric": False, "array": part["ci_high"] - part["flip_rate"],
                     "arrayminus": part["flip_rate"] - part["ci_low"]},
            customdata=part[["n_pairs", "flips"]].to_numpy(),
            hovertemplate="%{x}: %{y:.1%} (%{customdata[1]} of %{customdata[0]} pairs)<extra></extra>")
    figure.update_layout(title=title, yaxis={"title": "Flip rate (95% Wilson interval)", "tickformat": ".0%",
                                             "rangemode": "tozero"},
                         showlegend=False, height=360, margin={"t": 50, "b": 40})
    return figure
