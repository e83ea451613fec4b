"""Plotly figures of an audit: group sizes, per-group metrics with interval whiskers, ratios in a disparity band.

Each builder takes the frames of ``AuditResult`` (``groups_frame()``, ``gaps_frame()``) and returns a
``plotly.graph_objects.Figure``; pages render them and reports embed the same objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from fairmed_core.data.labels import attribute_label, group_label, source_label
from fairmed_core.fairness import METRIC_SPECS
from fairmed_core.viz.palette import BAND_FILL, NEUTRAL_GREY, colour_for

__all__ = [
    "METRIC_LABELS",
    "group_sizes_figure",
    "intersection_heatmap_figure",
    "metric_bars_figure",
    "ratio_band_figure",
]

METRIC_LABELS = {spec.name: spec.label for spec in METRIC_SPECS}
"""Display label of every metric, from the audit's one metric spec table."""
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60), font=dict(size=13))


def _source_words(source: str) -> str:
    return "all sources pooled" if source == "ALL" else source_label(source)


def _block(groups: pd.DataFrame, source: str, attribute: str) -> pd.DataFrame:
    block = groups[(groups["source"] == source) & (groups["attribute"] == attribute)]
    if block.empty:
        raise ValueError(f"the audit has no groups for source {source!r} and attribute {attribute!r}")
    return block


def group_sizes_figure(groups: pd.DataFrame, *, source: str, attribute: str) -> go.Figure:
    """Cases and positives per group, small groups marked: the first thing to read before any metric."""
    block = _block(groups, source, attribute).drop_duplicates("group")
    labels = [f"{group_label(g)} (too small)" if small else group_label(g)
              for g, small in zip(block["group"], block["small_group"])]
    figure = go.Figure()
    figure.add_bar(
        x=labels, y=block["n"], name="cases", marker_color=colour_for(0),
        marker_pattern_shape=["/" if s else "" for s in block["small_group"]],
        hovertext=block["small_group_reason"].replace("", "large enough"),
    )
    figure.add_bar(x=labels, y=block["n_positive"], name="positives", marker_color=colour_for(1))
    figure.update_layout(
        title=f"Group sizes: {attribute_label(attribute)} ({_source_words(source)})", barmode="group",
        yaxis_title="cases", **_LAYOUT
    )
    return figure


def metric_bars_figure(
    groups: pd.DataFrame, *, source: str, attribute: str, metrics: Sequence[str]
) -> go.Figure:
    """One bar per group and metric with its bootstrap interval as whiskers; undefined values are named."""
    block = _block(groups, source, attribute)
    figure = go.Figure()
    group_names = list(dict.fromkeys(block["group"]))
    for index, group in enumerate(group_names):
        rows = block[block["group"] == group].set_index("metric").reindex(list(metrics))
        estimate = rows["estimate"].to_numpy(dtype=float)
        small = bool(rows["small_group"].fillna(False).any())
        colour = colour_for(index, group)
        hover = [
            f"{group_label(group)}: {METRIC_LABELS.get(m, m)} = "
            + (f"{e:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(e) else f"undefined ({reason})")
            for m, e, lo, hi, reason in zip(
                metrics, estimate, rows["ci_low"], rows["ci_high"], rows["undefined_reason"].fillna("")
            )
        ]
        figure.add_bar(
            x=[METRIC_LABELS.get(m, m) for m in metrics],
            y=np.nan_to_num(estimate, nan=0.0),
            name=f"{group_label(group)} (n={int(rows['n'].dropna().iloc[0]) if rows['n'].notna().any() else 0})"
            + (" - too small" if small else ""),
            marker_color=colour,
            marker_pattern_shape="/" if small else "",
            opacity=0.55 if small else 1.0,
            error_y=dict(
                type="data", symmetric=False,
                array=np.nan_to_num(rows["ci_high"].to_numpy(dtype=float) - estimate, nan=0.0),
                arrayminus=np.nan_to_num(estimate - rows["ci_low"].to_numpy(dtype=float), nan=0.0),
                thickness=1.5, width=4,
            ),
            text=["n/a" if not np.isfinite(e) else "" for e in estimate],
            textposition="outside",
            hovertext=hover,
            hoverinfo="text",
        )
    figure.update_layout(
        title=f"Metrics per group: {attribute_label(attribute)} ({_source_words(source)}); whiskers = 95% interval",
        barmode="group", yaxis=dict(title="value (0-1)", range=[0, 1.05]), legend_title_text="group", **_LAYOUT,
    )
    return figure


def ratio_band_figure(
    gaps: pd.DataFrame,
    *,
    source: str,
    attribute: str,
    metrics: Sequence[str],
    band: tuple[float, float] = (0.8, 1.25),
) -> go.Figure:
    """Each group's metric as a ratio to the reference group, inside or outside the acceptable band.

    The band (e.g. the four-fifths rule's 0.8 to 1.25) is the reviewer's choice; points outside it are
    drawn as filled diamonds so they stand out without relying on colour alone.
    """
    rows = gaps[
        (gaps["source"] == source) & (gaps["attribute"] == attribute)
        & (gaps["comparison"] == "vs-reference") & gaps["metric"].isin(list(metrics))
    ]
    figure = go.Figure()
    low, high = band
    figure.add_hrect(y0=low, y1=high, fillcolor=BAND_FILL, line_width=0, layer="below")
    figure.add_hline(y=1.0, line_color=NEUTRAL_GREY, line_dash="dot")
    for index, (group, part) in enumerate(rows.groupby("group_a", sort=False)):
        ratio = part["ratio"].to_numpy(dtype=float)
        outside = (ratio < low) | (ratio > high)
        figure.add_scatter(
            x=[METRIC_LABELS.get(m, m) for m in part["metric"]], y=ratio, mode="markers", name=group_label(group),
            marker=dict(
                color=colour_for(index, group), size=13,
                symbol=["diamond" if o else "circle-open" for o in outside], line=dict(width=2),
            ),
            hovertext=[
                f"{group_label(group)} vs {group_label(ref)}: ratio {r:.3f}, difference {d:+.3f} "
                f"[{lo:+.3f}, {hi:+.3f}], p={p:.3g}"
                for ref, r, d, lo, hi, p in zip(
                    part["group_b"], ratio, part["difference"], part["ci_low"], part["ci_high"],
                    part["p_value"].astype(float),
                )
            ],
            hoverinfo="text",
        )
    reference = group_label(rows["group_b"].iloc[0]) if not rows.empty else "reference"
    figure.update_layout(
        title=f"Ratio to reference group {reference}: band {low:g} to {high:g} (diamonds fall outside)",
        yaxis_title=f"metric / metric of {reference}", **_LAYOUT,
    )
    return figure


def intersection_heatmap_figure(
    groups: pd.DataFrame, *, source: str, attribute: str, metric: str, min_group_size: int = 30
) -> go.Figure:
    """A metric over the cells of a two-attribute intersection (e.g. sex x age_group), with n in each cell.

    Cells too small to support a claim are labelled with a dagger so a bright colour is not over-read.
    """
    parts = attribute.split(" x ")
    if len(parts) != 2:
        raise ValueError(f"a heatmap needs an intersection of two attributes, got {attribute!r}")
    block = _block(groups, source, attribute)
    block = block[block["metric"] == metric]
    split = block["group"].astype(str).str.split(",", n=1, expand=True)
    cells = block.assign(row=split[0], column=split[1])
    values = cells.pivot(index="row", columns="column", values="estimate")
    sizes = cells.pivot(index="row", columns="column", values="n").reindex_like(values)
    small = cells.pivot(index="row", columns="column", values="small_group").reindex_like(values)
    def cell(value: float, n: float, is_small: bool) -> str:
        if int(n) == 0:
            return "no cases"  # an empty intersection: nothing to estimate, and nothing to flag as small
        estimate = "undefined" if not np.isfinite(value) else f"{value:.2f}"  # e.g. recall with no positives
        return f"{estimate}<br>n={int(n)}" + (" †" if is_small else "")

    text = [
        [cell(v, n, s) for v, n, s in zip(value_row, size_row, small_row)]
        for value_row, size_row, small_row in zip(
            values.to_numpy(dtype=float), sizes.fillna(0).to_numpy(), small.fillna(True).to_numpy()
        )
    ]
    figure = go.Figure(
        go.Heatmap(
            z=values.to_numpy(dtype=float), x=[group_label(c) for c in values.columns],
            y=[group_label(r) for r in values.index], text=text,
            texttemplate="%{text}", colorscale="Cividis", zmin=0, zmax=1,
            colorbar=dict(title=METRIC_LABELS.get(metric, metric)),
        )
    )
    figure.update_layout(
        title=f"{METRIC_LABELS.get(metric, metric)} by {attribute_label(parts[0])} and {attribute_label(parts[1])} "
        f"({_source_words(source)}); † = too small",
        xaxis_title=attribute_label(parts[1]), yaxis_title=attribute_label(parts[0]), **_LAYOUT,
    )
    return figure
