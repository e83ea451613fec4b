"""Plotly figures of a data card: cases and label prevalence per group and source."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fairmed_core.viz.palette import colour_for

__all__ = ["group_counts_figure", "prevalence_figure"]

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60), font=dict(size=13))


def _rows(group_counts: pd.DataFrame, attribute: str, split: str) -> pd.DataFrame:
    rows = group_counts[(group_counts["attribute"] == attribute) & (group_counts["split"] == split)]
    return rows[rows["source"] != "ALL"]


def group_counts_figure(group_counts: pd.DataFrame, *, attribute: str, split: str = "all") -> go.Figure:
    """Cases per group of ``attribute``, one bar series per source."""
    rows = _rows(group_counts, attribute, split)
    figure = go.Figure()
    for index, (source, part) in enumerate(rows.groupby("source", sort=True)):
        figure.add_bar(x=part["group"], y=part["n"], name=str(source), marker_color=colour_for(index, source))
    figure.update_layout(
        title=f"Cases per {attribute} group ({split} splits)", barmode="group", yaxis_title="cases", **_LAYOUT
    )
    return figure


def prevalence_figure(group_counts: pd.DataFrame, *, attribute: str, split: str = "all") -> go.Figure:
    """Share of positive labels per group of ``attribute``, one series per source."""
    rows = _rows(group_counts, attribute, split)
    figure = go.Figure()
    for index, (source, part) in enumerate(rows.groupby("source", sort=True)):
        figure.add_bar(
            x=part["group"], y=part["prevalence"], name=str(source), marker_color=colour_for(index, source),
            hovertext=[f"{p}/{n} positive" for p, n in zip(part["n_positive"], part["n"])],
        )
    figure.update_layout(
        title=f"Label prevalence per {attribute} group ({split} splits)", barmode="group",
        yaxis=dict(title="share positive", range=[0, 1]), **_LAYOUT,
    )
    return figure
