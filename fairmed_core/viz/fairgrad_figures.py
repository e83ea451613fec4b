"""Plotly figures comparing fairness-trained classifiers: accuracy against disparity (the Pareto view) and the
gradient conflicts FairGrad reconciled over training."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fairmed_core.data.labels import attribute_label, source_label
from fairmed_core.viz.palette import colour_for

__all__ = ["conflict_figure", "pareto_figure"]

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60), font=dict(size=13))
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")
DISPARITY_LABELS = {"eq_odds_diff": "Equalized odds difference", "eq_opp_diff": "Equal opportunity difference"}


def pareto_figure(comparison: pd.DataFrame, *, attribute: str, disparity: str = "eq_odds_diff",
                  method_names: dict[str, str] | None = None) -> go.Figure:
    """One point per run and source: disparity on x (lower is fairer), accuracy on y (higher is better); colour
    is the method, the marker shape the source. Points in the upper left dominate. Methods are named by
    ``method_names`` where it has them, sources and the attribute in words."""
    method_names = method_names or {}
    rows = comparison[comparison["attribute"] == attribute]
    methods = list(dict.fromkeys(rows["method"]))
    sources = sorted(rows["source"].unique())
    figure = go.Figure()
    for m_index, method in enumerate(methods):
        for s_index, source in enumerate(sources):
            block = rows[(rows["method"] == method) & (rows["source"] == source)]
            if block.empty:
                continue
            name = f"{method_names.get(method, method)}, {source_label(source)}"
            figure.add_trace(go.Scatter(
                x=block[disparity], y=block["accuracy"], mode="markers", name=name,
                legendgroup=method,
                marker=dict(color=colour_for(m_index, method), symbol=_SYMBOLS[s_index % len(_SYMBOLS)], size=12,
                            line=dict(width=1, color="white")),
                customdata=block[["run", "positive_rate"]].to_numpy(),
                hovertemplate=(f"{name}<br>run %{{customdata[0]}}<br>"
                               f"{DISPARITY_LABELS.get(disparity, disparity)} %{{x:.3f}}<br>accuracy %{{y:.3f}}"
                               "<br>answers yes %{customdata[1]:.3f}<extra></extra>"),
            ))
    figure.update_layout(title=f"Accuracy against disparity by {attribute_label(attribute)} (upper left is better)",
                         **_LAYOUT,
                         legend=dict(title="method, source"))
    figure.update_xaxes(title=f"{DISPARITY_LABELS.get(disparity, disparity)} (0-1)",
                        range=_padded_range(rows[disparity], floor=0.0, ceiling=1.0))
    figure.update_yaxes(title="Accuracy (0-1)", range=_padded_range(rows["accuracy"], floor=0.0, ceiling=1.0))
    return figure


def _padded_range(values: pd.Series, *, floor: float, ceiling: float, minimum_span: float = 0.1) -> list[float]:
    """An axis range around ``values`` with room for the markers, at least ``minimum_span`` wide, kept within
    ``[floor, ceiling]`` plus that room; plotly's own range around a single point runs far past 0 and 1."""
    finite = pd.to_numeric(values, errors="coerce").dropna()
    if finite.empty:
        return [floor, ceiling]
    low, high = float(finite.min()), float(finite.max())
    if high - low < minimum_span:
        middle = (low + high) / 2
        low, high = middle - minimum_span / 2, middle + minimum_span / 2
    pad = 0.08 * (high - low)
    low, high = max(low, floor) - pad, min(high, ceiling) + pad
    return [low, high]


def conflict_figure(history: pd.DataFrame, *, title: str) -> go.Figure:
    """Per source, the share of training steps' objective pairs whose gradients conflicted, per epoch."""
    figure = go.Figure()
    if "conflicting_pairs" in history and history["conflicting_pairs"].notna().any():
        for index, (source, block) in enumerate(history.groupby("source", sort=True)):
            figure.add_trace(go.Scatter(x=block["epoch"] + 1, y=block["conflicting_pairs"], mode="lines+markers",
                                        name=source_label(source), line=dict(color=colour_for(index, source))))
    figure.update_layout(title=title, **_LAYOUT)
    figure.update_xaxes(title="Epoch")
    figure.update_yaxes(title="Conflicting gradient pairs (summed over steps)", rangemode="tozero")
    return figure
