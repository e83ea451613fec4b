"""Figures of the evidence pack: differences to the reference group against the plan's band, and the paired
change between two models, each as an interval per group (a forest plot)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fairmed_core.viz.palette import BAND_FILL, NEUTRAL_GREY, OKABE_ITO

__all__ = ["VERDICT_COLOURS", "change_intervals_figure", "difference_intervals_figure"]

VERDICT_COLOURS = {
    "meets the margin": OKABE_ITO[2],  # bluish green
    "fails the margin": OKABE_ITO[5],  # vermillion
    "insufficient evidence": NEUTRAL_GREY,
}
_SYMBOLS = {"meets the margin": "circle", "fails the margin": "x", "insufficient evidence": "circle-open"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=220, r=20, t=50, b=50), font=dict(size=12), width=760)


def difference_intervals_figure(rows: pd.DataFrame, *, title: str) -> go.Figure:
    """One row per group: the difference to the reference (point and interval), its band as a shaded bar,
    coloured and shaped by verdict (shape too, so the verdict reads without colour).

    ``rows`` columns: label, difference, ci_low, ci_high, band_low, band_high, verdict."""
    figure = go.Figure()
    labels = list(rows["label"])
    for _, row in rows.iterrows():
        if pd.notna(row["band_low"]) and pd.notna(row["band_high"]):
            low = max(row["band_low"], -1.0)
            high = min(row["band_high"], 1.0)
            figure.add_trace(go.Bar(y=[row["label"]], x=[high - low], base=[low], orientation="h",
                                    marker=dict(color=BAND_FILL), hoverinfo="skip", showlegend=False, width=0.6))
    for verdict, colour in VERDICT_COLOURS.items():
        part = rows[rows["verdict"] == verdict]
        if part.empty:
            continue
        figure.add_trace(go.Scatter(
            x=part["difference"], y=part["label"], mode="markers", name=verdict,
            marker=dict(color=colour, symbol=_SYMBOLS[verdict], size=9),
            error_x=dict(type="data", symmetric=False, array=part["ci_high"] - part["difference"],
                         arrayminus=part["difference"] - part["ci_low"], color=colour, thickness=1.5)))
    figure.add_vline(x=0, line=dict(color=NEUTRAL_GREY, width=1))
    figure.update_layout(title=title, height=120 + 22 * len(labels), barmode="overlay",
                         legend=dict(orientation="h", y=-0.12 if len(labels) > 8 else -0.3), **_LAYOUT)
    figure.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    figure.update_xaxes(title="Difference to the reference group (shaded: the plan's band)")
    return figure


def change_intervals_figure(rows: pd.DataFrame, *, title: str, confidence: float = 0.95) -> go.Figure:
    """One row per (metric, group): the change from the baseline to the candidate with its paired interval.

    ``rows`` columns: label, change, ci_low, ci_high, outcome ("better", "worse", "no clear change", ...)."""
    colours = {"better": OKABE_ITO[2], "worse": OKABE_ITO[5]}
    symbols = {"better": "triangle-up", "worse": "triangle-down"}
    figure = go.Figure()
    labels = list(rows["label"])
    for outcome, part in rows.groupby("outcome", sort=False):
        colour = colours.get(outcome, NEUTRAL_GREY)
        figure.add_trace(go.Scatter(
            x=part["change"], y=part["label"], mode="markers", name=str(outcome),
            marker=dict(color=colour, symbol=symbols.get(outcome, "circle-open"), size=9),
            error_x=dict(type="data", symmetric=False, array=part["ci_high"] - part["change"],
                         arrayminus=part["change"] - part["ci_low"], color=colour, thickness=1.5)))
    figure.add_vline(x=0, line=dict(color=NEUTRAL_GREY, width=1))
    figure.update_layout(title=title, height=120 + 22 * len(labels),
                         legend=dict(orientation="h", y=-0.12 if len(labels) > 8 else -0.3), **_LAYOUT)
    figure.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    figure.update_xaxes(title=f"Change (candidate - baseline), paired {confidence:.0%} interval")
    return figure
