"""Plotly figures of training runs over steps: one line per series (a group, a run, a method), in one plot or in
one panel per data source."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fairmed_core.viz.palette import colour_for

__all__ = ["source_step_lines_figure", "step_lines_figure"]

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60), font=dict(size=13))
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def _name(names: Callable[[object], str] | None, value: object) -> str:
    return str(value) if names is None else names(value)


def step_lines_figure(frame: pd.DataFrame, *, value: str, series: str, title: str, y_title: str,
                      dash: str | None = None, y_range: tuple[float, float] | None = None,
                      names: Callable[[object], str] | None = None) -> go.Figure:
    """Lines of ``value`` over ``step``, one per ``series`` value (optionally dashed by ``dash``); ``y_range``
    fixes the y axis (a share drawn on 0-1, so a difference of a few cases does not fill the plot); ``names``
    turns a series value into its legend name (a code keeps its fixed colour under its name in words)."""
    figure = go.Figure()
    dash_values = list(dict.fromkeys(frame[dash])) if dash and dash in frame else []
    for index, (name, block) in enumerate(frame.groupby(series, sort=False)):
        block = block.sort_values("step")
        style = _DASHES[dash_values.index(block[dash].iloc[0]) % len(_DASHES)] if dash_values else "solid"
        figure.add_trace(go.Scatter(x=block["step"], y=block[value], mode="lines+markers", name=_name(names, name),
                                    line=dict(color=colour_for(index, name), dash=style)))
    figure.update_layout(title=title, **_LAYOUT)
    figure.update_xaxes(title="Training step")
    figure.update_yaxes(title=y_title, range=list(y_range) if y_range else None)
    return figure


def source_step_lines_figure(frame: pd.DataFrame, *, value: str, series: str, title: str, y_title: str,
                             source: str = "source", y_range: tuple[float, float] | None = None,
                             names: Callable[[object], str] | None = None,
                             source_names: Callable[[object], str] | None = None,
                             panels: Sequence[object] | None = None) -> go.Figure:
    """One panel per ``source`` value (side by side, one y axis), each with the lines of ``value`` over ``step``
    per ``series`` value; a series keeps its colour and its one legend entry across the panels. ``panels``: the
    sources to draw, in order, including those without a value (a gap undefined at every step there), whose
    panel says so rather than vanishing."""
    sources = list(dict.fromkeys(frame[source])) if panels is None else list(panels)
    figure = make_subplots(rows=1, cols=max(1, len(sources)), shared_yaxes=True, horizontal_spacing=0.04,
                           subplot_titles=[_name(source_names, s) for s in sources])
    order = list(dict.fromkeys(frame[series]))
    shown: set = set()
    for column, source_value in enumerate(sources, start=1):
        for name, block in frame[frame[source] == source_value].groupby(series, sort=False):
            block = block.sort_values("step")
            figure.add_trace(go.Scatter(x=block["step"], y=block[value], mode="lines+markers",
                                        name=_name(names, name), legendgroup=str(name), showlegend=name not in shown,
                                        line=dict(color=colour_for(order.index(name), name))),
                             row=1, col=column)
            shown.add(name)
        figure.update_xaxes(title="Training step", row=1, col=column)
    steps = [frame["step"].min(), frame["step"].max()] if not frame.empty else [0, 1]
    for column, source_value in enumerate(sources, start=1):
        if not (frame[source] == source_value).any():
            # An empty panel keeps its axes (an invisible trace over the steps) and says why it is empty.
            figure.add_trace(go.Scatter(x=steps, y=[None, None], mode="lines", showlegend=False, hoverinfo="skip"),
                             row=1, col=column)
            figure.add_annotation(text="no value at any step", showarrow=False, xref="x domain", yref="y domain",
                                  x=0.5, y=0.5, font=dict(color="#666666"), row=1, col=column)
    figure.update_layout(title=title, **_LAYOUT)
    figure.update_yaxes(title=y_title, row=1, col=1)
    figure.update_yaxes(range=list(y_range) if y_range else None)
    return figure
