"""Plotly figures of training runs over steps: one line per series (a group, a run, a method)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fairmed_core.viz.palette import colour_for

__all__ = ["step_lines_figure"]

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60), font=dict(size=13))


def step_lines_figure(frame: pd.DataFrame, *, value: str, series: str, title: str, y_title: str,
                      dash: str | None = None, y_range: tuple[float, float] | None = None) -> go.Figure:
    """Lines of ``value`` over ``step``, one per ``series`` value (optionally dashed by ``dash``); ``y_range``
    fixes the y axis (a share drawn on 0-1, so a difference of a few cases does not fill the plot)."""
    figure = go.Figure()
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    dash_values = list(dict.fromkeys(frame[dash])) if dash and dash in frame else []
    for index, (name, block) in enumerate(frame.groupby(series, sort=False)):
        block = block.sort_values("step")
        style = dashes[dash_values.index(block[dash].iloc[0]) % len(dashes)] if dash_values else "solid"
        figure.add_trace(go.Scatter(x=block["step"], y=block[value], mode="lines+markers", name=str(name),
                                    line=dict(color=colour_for(index, name), dash=style)))
    figure.update_layout(title=title, **_LAYOUT)
    figure.update_xaxes(title="Training step")
    figure.update_yaxes(title=y_title, range=list(y_range) if y_range else None)
    return figure
