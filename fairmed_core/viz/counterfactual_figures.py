"""Figures of a counterfactual analysis: flip rates per group with their intervals, valid pairs first."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fairmed_core.data.labels import group_label, source_label
from fairmed_core.viz.palette import NEUTRAL_GREY, OKABE_ITO

__all__ = ["flip_rates_figure"]


def _row_label(attribute: str, group: str) -> str:
    if attribute == "ALL":
        return "all groups"
    if attribute == "source":
        return source_label(group)
    return group_label(group)


def flip_rates_figure(rows: pd.DataFrame, *, all_pairs: pd.DataFrame | None = None,
                      title: str = "Answer flip rate per group") -> go.Figure:
    """Bars of ``flip_rate`` per (attribute, group) row of a flip table with Wilson intervals (the pooled row
    first). With ``all_pairs`` (the same table over every pair, valid or not), ``rows`` are the valid pairs'
    and are drawn solid; all pairs are drawn beside them hatched and grey, so the two differ by shape, not only
    by colour. Expects the columns of ``FlipTable.frame()``."""
    figure = go.Figure()
    series = [("valid pairs" if all_pairs is not None else "pairs", rows, OKABE_ITO[0], "")]
    if all_pairs is not None:
        series.append(("all pairs (valid or not)", all_pairs, NEUTRAL_GREY, "/"))
    for name, table, colour, pattern in series:
        if table is None or table.empty:
            continue
        labels = [_row_label(str(a), str(g)) for a, g in zip(table["attribute"], table["group"])]
        figure.add_bar(
            x=labels, y=table["flip_rate"] * 100, name=name, marker_color=colour,
            marker_pattern_shape=pattern,
            error_y={"type": "data", "symmetric": False, "array": (table["ci_high"] - table["flip_rate"]) * 100,
                     "arrayminus": (table["flip_rate"] - table["ci_low"]) * 100},
            customdata=table[["n_pairs", "flips"]].to_numpy(),
            hovertemplate=f"{name}, " + "%{x}: %{y:.1f}% (%{customdata[1]} of %{customdata[0]} pairs)<extra></extra>")
    figure.update_layout(title=title, barmode="group",
                         yaxis={"title": "Flip rate, % of pairs (95% Wilson interval)", "rangemode": "tozero",
                                "ticksuffix": "%"},
                         showlegend=all_pairs is not None, height=380, margin={"t": 50, "b": 40},
                         legend={"orientation": "h", "y": -0.2})
    return figure
