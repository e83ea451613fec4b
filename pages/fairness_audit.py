"""Fairness audit page: per-group metrics with intervals, gaps with corrected p-values, small-group warnings,
format-failure rates per group, and, when chosen, the FairGRPO paper's own statistics beside FairMed's.

Predictions come from the shipped reference model on the embedded benchmark, or from a file the user
uploads (CSV or Parquet) with a column mapper. The audit itself is ``fairmed_core.fairness.audit``.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from fairmed_core.errors import FairMedInputError
from fairmed_core.data.labels import attribute_label, group_label, source_label
from fairmed_core.fairness import (
    GLOSSARY,
    METRICS,
    SPEC_BY_NAME,
    AuditResult,
    PredictionColumns,
    audit,
    one_answer_sources,
    pooled_gap_checks,
    read_predictions_table,
    validate_predictions,
)
from fairmed_core.viz import (
    METRIC_LABELS,
    group_sizes_figure,
    intersection_heatmap_figure,
    metric_bars_figure,
    ratio_band_figure,
)
from fairmed_core.report.comparison import COMPARABLE_METRICS, compare_runs
from fairmed_core.report.strip import FOUR_FIFTHS_BAND, verdict_strip
from fairmed_core.runs.audit_store import list_saved_audits, save_audit, spreadsheet_safe_csv
from fairmed_core.runs.eval_store import list_evaluations
from pages._common import (
    evaluation_predictions,
    reference_predictions,
    show_input_error,
    tiny_model_predictions,
    workspace,
)

MAX_UPLOAD_BYTES = 50 * 2**20
TINY = "Tiny FairMedGemma on the embedded benchmark (shipped)"
SHIPPED = "Reference classifier on the embedded benchmark (shipped)"
RUN = "A saved evaluation run"
UPLOAD = "Upload a predictions file"
SAVED = "A saved audit"
NONE = "(none)"
DEFAULT_METRICS = ("accuracy", "recall", "specificity", "precision", "f1", "fpr")
INTERVAL_LABELS = {
    "wilson": "Wilson score (default)",
    "clopper-pearson": "Clopper-Pearson exact (conservative)",
    "bootstrap": "percentile bootstrap (undercovers small groups)",
}
PROTOCOL_LABELS = {
    "fairmed": "FairMed clinical default (scikit-learn convention)",
    "fairgrpo_paper": "FairGRPO paper protocol (Table 1 convention)",
}
FORMAT_FAILURE_LABELS = {
    "wrong": "wrong for the true class (binary: a missed positive)",
    "other_label": "the other label (binary: a false alarm on a negative case)",
    "abstain": "left out of the metrics (counted per group)",
}


@st.cache_data(show_spinner="Auditing (bootstrap intervals)...", max_entries=8)
def _run_audit(frame: pd.DataFrame, settings_json: str) -> AuditResult:
    settings = json.loads(settings_json)  # JSON: the cache key; the columns come back as their value
    return audit(frame, columns=PredictionColumns(**settings.pop("columns")), **settings)


@st.cache_data(show_spinner="Comparing runs (paired bootstrap)...", max_entries=4)
def _compare(paths: tuple[str, ...], names: tuple[str, ...], attributes: tuple[str, ...], metrics: tuple[str, ...]):
    frames = [evaluation_predictions(Path(path)) for path in paths]
    return compare_runs(frames, list(names), attributes=list(attributes), metrics=list(metrics) or ["accuracy"])


@st.cache_data(show_spinner="Reading the uploaded file...", max_entries=4)
def _read_upload(name: str, data: bytes) -> pd.DataFrame:
    suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in {".csv", ".tsv", ".parquet", ".pq"} else ".csv"
    with tempfile.TemporaryDirectory() as folder:
        # Keep the user's file name in messages, but never use it as a path: it is only a label.
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_predictions_table(path, max_bytes=MAX_UPLOAD_BYTES)
        except FairMedInputError as error:
            raise FairMedInputError(error.message, source=name, column=error.column, row=error.row,
                                    hint=error.hint) from None


def _model_run_columns(frame: pd.DataFrame, declared: list[str] | None = None) -> PredictionColumns:
    """Columns of a stored run; its attributes are the ones the run declares (a tabular FairGrad run has the
    hospital's own, e.g. race), else the benchmark's."""
    candidates = declared or ["sex", "age_group", "skin_tone"]
    return PredictionColumns.model_run([c for c in candidates if c in frame.columns])


def _format_failure_note(frame: pd.DataFrame) -> None:
    if "format_ok" not in frame.columns:
        return
    failures = int((~frame["format_ok"].astype(bool)).sum())
    if failures:
        st.warning(f"{failures} of {len(frame):,} answers ({100 * failures / len(frame):.1f}%) could not be parsed "
                   "(no boxed answer among the labels). How they are scored is chosen under Audit settings; their "
                   "rate per group is shown beside the group sizes.")
    else:
        st.caption(f"All {len(frame):,} answers parsed (reasoning in think tags, answer in a box).")


# The summary's metrics with their unit: the paper's predictive parity and equal opportunity difference are gaps
# x 100 (percentage points), the others are on the metrics' 0-1 scale.
SUMMARY_METRICS = (("predictive_parity", "predictive parity (FDR gap, points 0-100)"),
                   ("equal_opportunity_difference", "equal opportunity difference (TPR gap, points 0-100)"),
                   ("equalized_odds_difference", "equalized odds difference (0-1)"), ("sigma_f1", "sigma F1 (0-1)"),
                   ("f1", "F1 (0-1)"), ("f1_es", "F1_ES (0-1)"), ("accuracy", "accuracy (0-1)"))


def _summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The per source and attribute summary in words: each metric beside its 95% interval, decoded names."""
    table = pd.DataFrame({
        "source": summary["source"].map(lambda s: "all sources pooled" if s == "ALL" else source_label(s)),
        "attribute": summary["attribute"].map(attribute_label)})
    for column, label in SUMMARY_METRICS:
        table[label] = summary[column].round(3)
        table[f"{label.split(' (')[0]}: 95% interval"] = [
            "" if pd.isna(low) or pd.isna(high) else f"[{low:.3f}, {high:.3f}]"
            for low, high in zip(summary[f"{column}_ci_low"], summary[f"{column}_ci_high"])]
    table["worst group (lowest F1)"] = summary["worst_group"].map(
        lambda group: "" if pd.isna(group) or group == "" else group_label(group))
    return table


def _guess(columns: list[str], *patterns: str) -> int:
    for pattern in patterns:
        for index, column in enumerate(columns):
            if re.fullmatch(pattern, column, flags=re.IGNORECASE):
                return index
    return 0


def _choose_predictions() -> tuple[pd.DataFrame, PredictionColumns, str] | None:
    """The predictions table, its column mapping and a display name; None when there is nothing to audit."""
    # The Inference page's "Audit this run" button names the run it just saved; select it before the widgets exist.
    preselect = st.session_state.pop("audit_preselect_run", None)
    if preselect is not None:
        st.session_state["audit_source_kind"] = RUN
    kind = st.radio("Predictions to audit", [TINY, SHIPPED, RUN, SAVED, UPLOAD], horizontal=True,
                    key="audit_source_kind")
    if kind == SAVED:
        saved = list_saved_audits(workspace().audits)
        if not saved:
            st.info("No saved audits in this workspace yet: audit something and press 'Save to workspace' below.")
            return None
        labels = {item.label(): item for item in saved}
        item = labels[st.selectbox("Saved audit", list(labels), key="audit_saved_choice")]
        frame = evaluation_predictions(item.predictions_path)
        mapping = item.columns
        st.caption(f"Reopened from {item.path}; its settings are in its audit.json.")
        return frame, mapping, item.name
    if kind == TINY:
        frame = tiny_model_predictions()
        st.caption(
            "The shipped tiny FairMedGemma (a Gemma 3 image-text model at toy size, trained on the benchmark's "
            f"train split as it is, imbalanced) answering {len(frame):,} test cases with greedy decoding. See its "
            "model card in assets/models/tiny-fairmedgemma."
        )
        _format_failure_note(frame)
        return frame, _model_run_columns(frame), "tiny-fairmedgemma-test"
    if kind == RUN:
        runs = list_evaluations(workspace(), shipped=True)
        if not runs:
            st.info("No evaluation runs in this workspace yet: evaluate a split on the Inference page or with "
                    "`fairmed evaluate`.")
            return None
        labels = {run.label(): run for run in runs}
        chosen = [label for label, run in labels.items() if run.name == preselect]
        if chosen:
            st.session_state["audit_run_choice"] = chosen[0]
        run = labels[st.selectbox("Run", list(labels), key="audit_run_choice")]
        frame = evaluation_predictions(run.predictions_path)
        st.caption(f"Model folder `{run.record.model_dir or '?'}`, decoding {dict(run.record.generation or {})}.")
        _format_failure_note(frame)
        return frame, _model_run_columns(frame, list(run.record.attributes) or None), run.name
    if kind == SHIPPED:
        frame = reference_predictions()
        sensitive = [c for c in ("sex", "age_group", "skin_tone") if c in frame.columns]
        st.caption(
            "Logistic regression on 16x16 downsampled pixels, one per source, trained on the benchmark's train "
            f"split; {len(frame):,} test cases. A non-VLM baseline to compare the model runs against."
        )
        return frame, PredictionColumns.model_run(sensitive, score=True), "reference_predictions.csv"

    upload = st.file_uploader(
        "Predictions file (CSV or Parquet, at most 50 MB)", type=["csv", "tsv", "parquet", "pq"],
        key="audit_upload",
        help="One row per case: the true label, the predicted label, optionally a score P(positive), "
        "a data source and one column per sensitive attribute.",
    )
    if upload is None:
        st.info("Upload a predictions file to audit it, or switch to the shipped reference predictions.")
        return None
    if upload.size > MAX_UPLOAD_BYTES:
        st.error(f"file {upload.name}: {upload.size / 2**20:.1f} MB is over the 50 MB limit.")
        return None
    frame = _read_upload(upload.name, upload.getvalue())
    columns = [str(c) for c in frame.columns]
    st.markdown("**Column mapper**: which column holds what")
    c1, c2, c3, c4 = st.columns(4)
    label_col = c1.selectbox("True label", columns, index=_guess(columns, r"y_?true", r"label", r"truth", r"target"),
                             key="map_label")
    pred_col = c2.selectbox("Predicted label", columns,
                            index=_guess(columns, r"y_?pred", r"pred(iction)?", r"answer"), key="map_pred")
    score_col = c3.selectbox("Score P(positive) (optional)", [NONE, *columns],
                             index=_guess([NONE, *columns], r"score", r"prob.*", r"p_?yes"), key="map_score")
    source_col = c4.selectbox("Data source (optional)", [NONE, *columns],
                              index=_guess([NONE, *columns], r"source", r"dataset", r"site"), key="map_source")
    used = {label_col, pred_col, score_col, source_col}
    default_attributes = [c for c in columns if c not in used and re.fullmatch(
        r"sex|gender|age(_group)?|race|ethnicity|skin(_tone)?|fitzpatrick", c, flags=re.IGNORECASE)]
    attributes = st.multiselect("Sensitive attribute columns", [c for c in columns if c not in used],
                                default=default_attributes, key="map_attributes")
    if not attributes:
        st.warning("Choose at least one sensitive attribute column.")
        return None
    mapping = PredictionColumns(label_col, pred_col, tuple(attributes), None if score_col == NONE else score_col,
                                None if source_col == NONE else source_col)
    frame = validate_predictions(frame, source_name=upload.name, columns=mapping)
    return frame, mapping, upload.name


st.title("Fairness audit")
st.markdown(
    "Per-group performance with 95% intervals (score intervals for rates and F1, bootstrap for AUROC and "
    "calibration), the gaps between groups with exact permutation tests and multiple-comparison corrected "
    "p-values, the smallest gap each group's size could detect, and warnings where a group is too small to "
    "support a claim. "
    "A gap is a **disparity** to investigate and, where it is real, to **mitigate**; an interval that "
    "crosses zero means the data cannot tell the groups apart."
)

with st.expander("Glossary: what each number means"):
    st.markdown("\n".join(f"- **{METRIC_LABELS.get(term, term)}**: {text}" for term, text in GLOSSARY.items()))

try:
    chosen = _choose_predictions()
except Exception as error:  # noqa: BLE001 - bad input must never take the page down
    show_input_error(error)
    chosen = None
if chosen is None:
    st.stop()
frame, mapping, file_name = chosen

with st.expander("Audit settings", expanded=True):
    s1, s2, s3 = st.columns(3)
    attributes = s1.multiselect("Attributes", list(mapping.sensitive), default=list(mapping.sensitive),
                                # per file: a new file resets it
                                format_func=attribute_label, key=f"audit_attributes_{file_name}")
    crossed = s1.multiselect(
        "Intersectional groups: cross two attributes", attributes, default=[], max_selections=2,
        key="audit_crossed", disabled=len(attributes) < 2, format_func=attribute_label,
        help="Two attributes crossed give a readable map (e.g. sex x age group); crossing every attribute leaves "
        "most cells empty or too small.",
    )
    intersect = list(crossed) if len(crossed) == 2 else False
    available_metrics = [m for m in METRICS if mapping.score or not SPEC_BY_NAME[m].needs_score]
    metrics = s2.multiselect("Metrics", available_metrics, default=[m for m in DEFAULT_METRICS],
                             format_func=lambda m: METRIC_LABELS[m], key="audit_metrics",
                             help=" ".join(f"**{METRIC_LABELS[m]}**: {GLOSSARY[m]}" for m in available_metrics))
    n_boot = s2.select_slider("Bootstrap resamples and permutations", [200, 500, 1000, 2000], value=1000,
                              key="audit_n_boot")
    interval_method = s2.selectbox(
        "Intervals for rates and F1", list(INTERVAL_LABELS), format_func=INTERVAL_LABELS.get,
        key="audit_interval_method",
        help="Wilson score intervals hold their 95% coverage at small group sizes and near 0% or 100%, where "
        "the percentile bootstrap does not (coverage study in docs/RESULTS.md). Clopper-Pearson is never below "
        "95% but wider.",
    )
    correction = s3.selectbox("Multiple-comparison correction", ["holm", "bh", "none"],
                              format_func={"holm": "Holm (family-wise)", "bh": "Benjamini-Hochberg (FDR)",
                                           "none": "none"}.get, key="audit_correction")
    min_group_size = s3.number_input("Smallest group that supports a claim", 5, 1000, 30, key="audit_min_group")
    band = s3.slider(
        "Acceptable ratio band (to reference)", 0.5, 2.0, FOUR_FIFTHS_BAND, step=0.05, key="audit_band",
        help="Default 0.8-1.25: the four-fifths rule of US employment law, made symmetric, a common rule of "
        "thumb in fairness toolkits. It is a starting point, not a clinical standard: set the band your review "
        "board accepts for each use.",
    )
    unknown_in_gaps = s1.checkbox("Count unknown demographics (UNK) in gaps", value=False, key="audit_unknown")
    protocol = s1.radio("Statistics convention", list(PROTOCOL_LABELS), format_func=PROTOCOL_LABELS.get,
                        key="audit_protocol",
                        help="FairMed's convention is the clinical view. The FairGRPO paper's protocol (the authors' "
                        "evaluation code: both yes and no scored, zero denominators as 0, sex and age only) is "
                        "shown beside it, for reproducing the paper's numbers.")
    format_failures = s2.selectbox("Format failures scored as", list(FORMAT_FAILURE_LABELS),
                                   format_func=FORMAT_FAILURE_LABELS.get, key="audit_format_failures")
if not attributes or not metrics:
    st.warning("Choose at least one attribute and one metric.")
    st.stop()

reference_groups = {}
with st.expander("Reference groups (default: the largest group)"):
    for attribute in attributes:
        groups = sorted(frame[attribute].astype(str).unique())
        choice = st.selectbox(f"Reference for {attribute_label(attribute)}", ["(largest group)", *groups],
                              format_func=lambda g: g if g == "(largest group)" else group_label(g),
                              key=f"ref_{attribute}")
        if choice != "(largest group)":
            reference_groups[attribute] = choice

settings = dict(
    columns=mapping.with_sensitive(attributes).to_json(), intersect=intersect, metrics=metrics, n_boot=int(n_boot),
    correction=correction, min_group_size=int(min_group_size), reference_groups=reference_groups or None,
    unknown_in_gaps=unknown_in_gaps, protocol=protocol, format_failures=format_failures,
    interval_method=interval_method,
)
try:
    result = _run_audit(frame, json.dumps(settings, sort_keys=True))
except Exception as error:  # noqa: BLE001
    show_input_error(error)
    st.stop()
groups, gaps, summary = result.groups_frame(), result.gaps_frame(), result.summary_frame()
# A crossed cell without a single case (e.g. sex not recorded x age 26-50) is not a group to read: it would only
# fill the tables and charts with n/a. Such cells are hidden and counted once, under the group sizes.
in_crossed = groups["attribute"].str.contains(" x ", regex=False)
empty_cells = groups[in_crossed & (groups["n"] == 0)].drop_duplicates(["source", "attribute", "group"])
groups = groups[~(in_crossed & (groups["n"] == 0))]
for constant in one_answer_sources(frame, mapping.prediction, mapping.source):
    st.warning(f"{constant.describe()}: its true and false positive rates are the same in every group, so its "
               "equal opportunity and equalized odds gaps are 0 because it tells no case apart, not because it "
               "is fair. Read accuracy, recall and prevalence there.", icon=":material/warning:")

v1, v2 = st.columns(2)
# Per source first: each source is its own task (a chest X-ray and a skin lesion are read differently), and a
# gap in the pooled view can come from the mix of sources alone.
sources = [s for s in dict.fromkeys(groups["source"]) if s != "ALL"] + ["ALL"]
source = v1.selectbox("Source", sources, index=0, key="audit_view_source",
                      format_func=lambda s: "all sources pooled (read per source first)" if s == "ALL" and
                      len(sources) > 1 else source_label(s),
                      help="Each data source separately; ALL pools every source.")
view_attributes = [a for a in dict.fromkeys(groups["attribute"]) if a != "overall"]
intersections = [a for a in view_attributes if " x " in a]
if intersections and st.session_state.get("audit_last_crossed") != intersections[0]:
    st.session_state["audit_view_attribute"] = intersections[0]  # a newly crossed pair opens on its map
st.session_state["audit_last_crossed"] = intersections[0] if intersections else None
attribute = v2.selectbox("Attribute to inspect", view_attributes, format_func=attribute_label,
                         key="audit_view_attribute")

strip = verdict_strip(result, source=source, attribute=attribute, metrics=metrics, band=band)
with st.container(border=True):
    st.markdown("**What this audit shows** (from intervals, never from point estimates alone)")
    for number, line in enumerate(strip.lines):
        st.markdown(f"- {'**' + line + '**' if number == 0 else line}")
if source == "ALL" and len(sources) > 2:
    checks = [c for c in pooled_gap_checks(result) if c.attribute == attribute and c.metric in metrics]
    if checks:
        with st.expander("Do the pooled gaps hold within each source?", expanded=True):
            st.dataframe(
                pd.DataFrame([{
                    "metric": METRIC_LABELS.get(c.metric, c.metric),
                    "groups": f"{group_label(c.group_a)} minus {group_label(c.group_b)}",
                    "pooled difference": c.pooled_difference, "pooled 95% CI": f"[{c.pooled_ci_low:+.3f}, "
                    f"{c.pooled_ci_high:+.3f}]", "within sources": c.standardised_difference,
                    "within-source 95% CI": f"[{c.standardised_ci_low:+.3f}, {c.standardised_ci_high:+.3f}]",
                    "reading": c.reading,
                } for c in checks]),
                hide_index=True, width="stretch",
                column_config={"pooled difference": st.column_config.NumberColumn(format="%+.3f"),
                               "within sources": st.column_config.NumberColumn(format="%+.3f")},
            )
            st.caption("Within sources = the difference inside each source, averaged over the sources weighted by "
                       "the two groups' cases (a source-standardised gap; approximate normal interval). A gap that "
                       "comes from the mix of sources is about which sources each group has, not about the model.")

block = groups[(groups["source"] == source) & (groups["attribute"] == attribute)]
st.subheader(f"Group sizes: {attribute_label(attribute)}")
sizes = block.drop_duplicates("group")[["group", "n", "n_positive", "prevalence", "small_group_reason"]]
small = sizes[sizes["small_group_reason"] != ""]
if not small.empty:
    st.warning(
        "Too small to support a claim: "
        + "; ".join(f"**{group_label(g)}** ({reason})" for g, reason in zip(small["group"],
                                                                             small["small_group_reason"]))
        + ". Their estimates are shown hatched; read their intervals, not their bars."
    )
left, right = st.columns([2, 3])
left.dataframe(sizes.assign(group=sizes["group"].map(group_label)).rename(columns={"small_group_reason": "warning"}),
               hide_index=True, width="stretch",
               column_config={"n": st.column_config.NumberColumn("cases (n)", format="%d"),
                              "n_positive": st.column_config.NumberColumn("with the finding (n)", format="%d"),
                              "prevalence": st.column_config.NumberColumn("prevalence (share, 0-1)", format="%.3f")})
right.plotly_chart(group_sizes_figure(groups, source=source, attribute=attribute), width="stretch",
                   key="sizes_chart")
if result.format_failure_rates:
    rates = result.format_failures_frame()
    rates = rates[(rates["source"] == source) & (rates["attribute"].isin([attribute, "overall"]))]
    st.markdown(f"**Format failures** (answers that could not be parsed), scored as "
                f"{FORMAT_FAILURE_LABELS[result.settings.format_failures]}:")
    st.dataframe(rates[["attribute", "group", "n", "failures", "rate"]].assign(
                     attribute=rates["attribute"].map(attribute_label), group=rates["group"].map(group_label)),
                 hide_index=True, width="stretch",
                 column_config={"n": st.column_config.NumberColumn("cases (n)", format="%d"),
                                "rate": st.column_config.NumberColumn("rate (share of cases, 0-1)", format="%.3f")})

hidden = empty_cells[(empty_cells["source"] == source) & (empty_cells["attribute"] == attribute)]
if not hidden.empty:
    st.caption(f"{len(hidden)} empty cells hidden (no cases): "
               + ", ".join(group_label(g) for g in hidden["group"]) + ".")

st.subheader(f"Metrics per group: {attribute_label(attribute)}")
if attribute.count(" x ") == 1:
    # Two attributes crossed: the map is the readable view; one bar per cell and metric is kept behind it.
    heat_metric = st.selectbox("Metric for the map", metrics, format_func=METRIC_LABELS.get, key="audit_heat_metric")
    st.subheader(f"Intersectional map: {attribute_label(attribute)}")
    st.plotly_chart(
        intersection_heatmap_figure(groups, source=source, attribute=attribute, metric=heat_metric),
        width="stretch", key="heatmap_chart",
    )
    with st.expander("Bars per cell and metric"):
        st.plotly_chart(metric_bars_figure(groups, source=source, attribute=attribute, metrics=metrics),
                        width="stretch", key="metrics_chart")
else:
    st.plotly_chart(metric_bars_figure(groups, source=source, attribute=attribute, metrics=metrics),
                    width="stretch", key="metrics_chart")
undefined = block[(block["undefined_reason"] != "") & block["metric"].isin(metrics)]
if not undefined.empty:
    # One line; the list (one entry per group and metric, dozens for crossed attributes) is behind it.
    reasons = undefined["undefined_reason"].value_counts()
    st.info(f"{len(undefined)} values undefined, shown as n/a (" + "; ".join(
        f"{count} x {reason}" for reason, count in reasons.items()) + ").")
    with st.expander("Which values are undefined"):
        st.markdown("\n".join(f"- {group_label(g)}, {METRIC_LABELS.get(m, m)}: {r}" for g, m, r in zip(
            undefined["group"], undefined["metric"], undefined["undefined_reason"])))

with st.expander("Intervals and the smallest detectable gap, per group"):
    detail = block[block["metric"].isin(metrics)].assign(metric=lambda t: t["metric"].map(METRIC_LABELS),
                                                         group=lambda t: t["group"].map(group_label))
    st.dataframe(
        detail[["group", "metric", "denominator", "estimate", "ci_low", "ci_high", "interval_method",
                "minimum_detectable_gap", "interval_note"]],
        hide_index=True, width="stretch",
        column_config={
            "denominator": st.column_config.NumberColumn("cases behind it (n)", format="%d"),
            "estimate": st.column_config.NumberColumn("estimate (0-1)", format="%.3f"),
            "ci_low": st.column_config.NumberColumn("95% low", format="%.3f"),
            "ci_high": st.column_config.NumberColumn("95% high", format="%.3f"),
            "interval_method": "interval",
            "minimum_detectable_gap": st.column_config.NumberColumn(
                "smallest detectable gap to reference", format="%.3f",
                help="The gap to the reference group that a test at 5% would find with 80% power at these group "
                "sizes (same scale as the metric). A smaller true gap would usually go unseen: absence of a "
                "significant gap is not evidence of no gap.",
            ),
            "interval_note": "note",
        },
    )
    st.caption(f"Intervals: {result.settings.interval_method}. Tests: {result.settings.tests}.")

st.subheader("Disparity band")
st.plotly_chart(ratio_band_figure(gaps, source=source, attribute=attribute, metrics=metrics, band=band),
                width="stretch", key="band_chart")

st.subheader("Gaps between groups")
kinds = st.multiselect("Comparisons", ["max-min", "vs-reference", "pairwise", "vs-overall"],
                       default=["max-min", "vs-reference"], key="audit_gap_kinds")
shown = gaps[(gaps["source"] == source) & (gaps["attribute"] == attribute) & gaps["comparison"].isin(kinds)]
# One row per comparison: a pairwise row that repeats a vs-reference row (the same two groups) is dropped.
reference_pairs = {frozenset((a, b)) for a, b, c in zip(shown["group_a"], shown["group_b"], shown["comparison"])
                   if c == "vs-reference"}
shown = shown[~((shown["comparison"] == "pairwise")
                & np.array([frozenset((a, b)) in reference_pairs for a, b in zip(shown["group_a"], shown["group_b"])],
                           dtype=bool))]
verdict_of = {(v.metric, v.group): v.verdict for v in strip.verdicts}
shown = shown.assign(
    band_verdict=[verdict_of.get((m, a), "") if c == "vs-reference" else ""
                  for m, a, c in zip(shown["metric"], shown["group_a"], shown["comparison"])],
    metric=shown["metric"].map(METRIC_LABELS),
    group_a=shown["group_a"].map(group_label),
    group_b=shown["group_b"].map(group_label),
)
st.dataframe(
    shown[["comparison", "metric", "group_a", "group_b", "difference", "ci_low", "ci_high", "ratio",
           "band_verdict", "p_value_raw", "p_value", "significant", "minimum_detectable_gap", "interval_method",
           "test_method", "note"]],
    hide_index=True, width="stretch",
    column_config={"group_a": "group a", "group_b": "group b",
                   "ci_low": st.column_config.NumberColumn("95% low", format="%+.3f"),
                   "ci_high": st.column_config.NumberColumn("95% high", format="%+.3f"),
                   "ratio": st.column_config.NumberColumn("ratio (a / b)", format="%.3f")}
    | {"p_value": st.column_config.NumberColumn("p (corrected)", format="%.4f"),
       "p_value_raw": st.column_config.NumberColumn("p (raw)", format="%.4f"),
       "minimum_detectable_gap": st.column_config.NumberColumn("smallest detectable gap (0-1)", format="%.3f"),
       "difference": st.column_config.NumberColumn("difference (a - b, metric scale 0-1)", format="%+.3f"),
       "band_verdict": st.column_config.TextColumn(
           "ratio band", help="Judged from the difference's 95% interval against the band read at the reference "
           "group's value: inside, outside, or not settled by these data."),
       "interval_method": "interval", "test_method": "test"},
)
st.caption(
    "Difference = group a minus group b with its 95% interval (Newcombe's score interval for rates, MOVER for "
    "F1, bootstrap otherwise). p-values: permutation tests of the group labels within each source (exact at "
    f"any group size), pairwise rows corrected within each attribute and metric ({correction}); the max-min row "
    "tests whether all groups are equal."
)

st.subheader("Fairness summary per source and attribute")
st.markdown(
    "The summary metrics the FairGRPO paper reports, computed for these predictions in FairMed's clinical "
    "convention (positive class only on yes/no data, an undefined value left out rather than "
    "counted as 0, every audited attribute): predictive parity = FDR gap x 100; equal opportunity difference = TPR "
    "gap x 100; equalized odds difference = the larger of the TPR and FPR gaps; sigma F1 = spread of F1 across "
    "groups; F1_ES = F1 / (1 + sigma F1); means over attributes, then over sources. The paper's own protocol "
    "differs; choose it under Audit settings to see its numbers."
)
st.dataframe(_summary_table(summary), hide_index=True, width="stretch")

paper = result.paper_summary
if paper is not None:
    st.subheader(PROTOCOL_LABELS["fairgrpo_paper"])
    st.markdown(
        "Computed as the FairGRPO authors' evaluation code computes it (DDVD233/mirl, "
        "examples/reward_function/evaluation.py): on yes/no data both \"yes\" and \"no\" are scored one-vs-rest "
        "and averaged, only answers present in a group's ground truth are averaged, a zero denominator counts as 0, "
        "a format failure names no answer; gaps |M - F| for sex and max - min over age groups; PP = FDR gap x 100, "
        "EOD = TPR gap x 100 (percentage points); aggregated over sex and age only, then over sources; "
        "F1_ES = F1 / (1 + sigma F1) with F1 the mean of the group F1s. These numbers are for reproducing the "
        "paper and are not comparable with FairMed's above."
    )
    if paper.aggregate is not None:
        row = paper.aggregate
        table = pd.DataFrame([{"PP (pp)": row.predictive_parity, "EOD (pp)": row.equal_opportunity_difference,
                               "sigma F1": row.sigma_f1, "F1": row.f1, "Acc (%)": 100 * row.accuracy,
                               "F1_ES": row.f1_es, "sources": row.n_sources}])
        st.dataframe(table, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns[:-1]})
    for note in paper.notes:
        st.info(note)
    paper_attributes = paper.attributes_frame()
    st.dataframe(
        paper_attributes[["source", "attribute", "groups", "predictive_parity", "equal_opportunity_difference",
                          "sigma_f1", "f1", "accuracy", "in_aggregate", "note"]],
        hide_index=True, width="stretch",
        column_config={c: st.column_config.NumberColumn(label, format="%.4f") for c, label in (
            ("predictive_parity", "PP (pp)"), ("equal_opportunity_difference", "EOD (pp)"), ("sigma_f1", "sigma F1"),
            ("f1", "F1 (0-1)"), ("accuracy", "accuracy (0-1)"))} | {"in_aggregate": "in the aggregate"},
    )

st.subheader("Compare models on the same cases")
evaluations = {run.label(): run for run in list_evaluations(workspace(), shipped=True)}
default_compare = [label for label, run in evaluations.items()
                   if run.name in ("shipped/tiny-fairmedgemma-grpo", "shipped/tiny-fairmedgemma-fairgrpo")]
compared = st.multiselect(
    "Evaluation runs (the first is the baseline)", list(evaluations), default=default_compare,
    key="audit_compare_runs", max_selections=4,
    help="Two or more evaluations of the same test cases, e.g. a GRPO- and a FairGRPO-trained model. Changes have "
    "paired 95% intervals: cases are resampled jointly, so both models are judged on the same patients.",
)
if len(compared) >= 2:
    runs = [evaluations[label] for label in compared]
    # The runs' own attributes (those every run declares), which need not be the audited table's.
    declared = [run.record.attributes for run in runs]
    shared = [a for a in declared[0] if all(a in d for d in declared[1:])]
    try:
        if not shared:
            raise FairMedInputError("the chosen runs share no sensitive attribute", hint="choose runs of one dataset")
        comparison = _compare(tuple(str(run.predictions_path) for run in runs), tuple(run.name for run in runs),
                              tuple(shared), tuple(m for m in metrics if m in COMPARABLE_METRICS))
    except FairMedInputError as error:
        show_input_error(error)
    else:
        changes = comparison.changes_frame()
        scopes = list(dict.fromkeys(changes["source"]))
        shown_source = source if source in scopes else scopes[0]
        shown_attribute = attribute if attribute in shared else shared[0]
        changes = changes[(changes["source"] == shown_source) & (changes["attribute"] == shown_attribute)]
        gap_changes = comparison.gap_changes_frame()
        gap_changes = gap_changes[(gap_changes["source"] == shown_source)
                                  & (gap_changes["attribute"] == shown_attribute)]
        st.caption(f"{comparison.n_cases:,} cases in every run; {comparison.method}. Showing {shown_source}, "
                   f"{shown_attribute} (the source and attribute chosen above, where the runs have them).")
        st.dataframe(
            gap_changes.assign(metric=gap_changes["metric"].map(METRIC_LABELS))[  # runs named in the header
                ["metric", "baseline", "candidate", "baseline_gap", "candidate_gap", "change", "ci_low", "ci_high",
                 "outcome"]],
            hide_index=True, width="stretch",
            column_config={c: st.column_config.NumberColumn(format="%+.3f" if c in ("change", "ci_low", "ci_high")
                                                            else "%.3f")
                           for c in ("baseline_gap", "candidate_gap", "change", "ci_low", "ci_high")}
            | {"baseline_gap": st.column_config.NumberColumn("baseline gap (0-1)", format="%.3f"),
               "candidate_gap": st.column_config.NumberColumn("candidate gap (0-1)", format="%.3f"),
               "change": st.column_config.NumberColumn("change (0-1)", format="%+.3f"),
               "ci_low": st.column_config.NumberColumn("95% low", format="%+.3f"),
               "ci_high": st.column_config.NumberColumn("95% high", format="%+.3f"),
               "outcome": st.column_config.TextColumn("max-min gap", help="narrowed / widened when the paired 95% "
                                                      "interval of the change excludes 0")},
        )
        st.dataframe(
            changes.assign(metric=changes["metric"].map(METRIC_LABELS), group=changes["group"].map(group_label))[
                ["group", "metric", "n", "baseline", "candidate", "baseline_value", "candidate_value", "change",
                 "ci_low", "ci_high", "outcome"]],
            hide_index=True, width="stretch",
            column_config={"n": st.column_config.NumberColumn("cases (n)", format="%d"),
                           "baseline_value": st.column_config.NumberColumn("baseline (0-1)", format="%.3f"),
                           "candidate_value": st.column_config.NumberColumn("candidate (0-1)", format="%.3f"),
                           "change": st.column_config.NumberColumn("change (0-1)", format="%+.3f"),
                           "ci_low": st.column_config.NumberColumn("95% low", format="%+.3f"),
                           "ci_high": st.column_config.NumberColumn("95% high", format="%+.3f"),
                           "baseline": "baseline run", "candidate": "candidate run"},
        )
elif len(evaluations) >= 2:
    st.caption("Choose two or more evaluation runs of the same cases to compare them group by group.")

st.subheader("Export")
stem = Path(file_name).stem
d1, d2, d3, d4 = st.columns(4)
d1.download_button("Audit JSON", json.dumps(result.to_json_dict(), indent=2), file_name=f"{stem}_audit.json",
                   mime="application/json")
d2.download_button("Per-group metrics CSV", spreadsheet_safe_csv(groups), file_name=f"{stem}_groups.csv",
                   mime="text/csv")
d3.download_button("Gaps CSV", spreadsheet_safe_csv(gaps), file_name=f"{stem}_gaps.csv", mime="text/csv")

audit_name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', stem)}-{time.strftime('%Y%m%d-%H%M%S')}"
if d4.button("Save to workspace", help=f"Writes audit.json and CSV tables to audits/{stem}-<time>/"):
    try:
        saved = save_audit(result, workspace().audit_dir(audit_name), predictions=frame)
        st.success(f"Saved to {saved.parent}")
    except (OSError, FairMedInputError) as error:
        show_input_error(error)
