"""Plotly figure builders; no Streamlit calls, so pages and reports share the same figures."""

from fairmed_core.viz.audit_figures import (
    METRIC_LABELS,
    group_sizes_figure,
    intersection_heatmap_figure,
    metric_bars_figure,
    ratio_band_figure,
)
from fairmed_core.viz.counterfactual_figures import flip_rates_figure
from fairmed_core.viz.data_figures import group_counts_figure, prevalence_figure
from fairmed_core.viz.fairgrad_figures import conflict_figure, pareto_figure
from fairmed_core.viz.palette import OKABE_ITO
from fairmed_core.viz.text_diff import word_diff_html
from fairmed_core.viz.training_figures import source_step_lines_figure, step_lines_figure

__all__ = [
    "METRIC_LABELS",
    "OKABE_ITO",
    "conflict_figure",
    "flip_rates_figure",
    "group_counts_figure",
    "group_sizes_figure",
    "intersection_heatmap_figure",
    "metric_bars_figure",
    "pareto_figure",
    "prevalence_figure",
    "ratio_band_figure",
    "source_step_lines_figure",
    "step_lines_figure",
    "word_diff_html",
]
