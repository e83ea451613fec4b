"""Review page: the model review meeting's evidence pack. Pick an evaluation run, write and lock the audit plan,
build the pack (HTML, PDF, JSON) against baselines on the same cases, download it, and record the decision."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from fairmed_core.fairness import METRICS
from fairmed_core.report.plan import (
    check_plan_against_run,
    lock_plan,
    plan_deviations,
    plan_from_dict,
    plan_from_run,
    plan_hash,
    plan_to_dict,
    read_lock,
    read_plan,
    run_attributes,
    write_plan,
)
from fairmed_core.report.signoff import DECISIONS, read_decisions, sign_pack, verify_pack
from fairmed_core.report.store import review_folder
from fairmed_core.runs.eval_store import list_evaluations
from pages._common import show_input_error, workspace

st.title("Review")
st.markdown(
    "Prepare the **model review meeting**: state the audit plan before looking at results (who is at risk, "
    "which metrics matter, how large a disparity is acceptable), lock it, and build one evidence pack to take "
    "into the meeting: an HTML file that opens offline, the same content as PDF, and a JSON. Every verdict is "
    "read from an interval: *meets the margin*, *fails the margin* or *insufficient evidence*."
)

ws = workspace()
runs = {run.label(): run for run in list_evaluations(ws, shipped=True)}
if not runs:
    st.info("No evaluation run yet: evaluate a model on the Inference page or with `fairmed evaluate`.")
    st.stop()
labels = list(runs)
default = next((i for i, label in enumerate(labels) if label.startswith("shipped/tiny-fairmedgemma-fairgrpo")), 0)
choice = st.selectbox("Evaluation run under review", labels, index=default, key="review_run")
run = runs[choice]
others = [label for label in labels if label != choice]
suggested = [label for label in others if label.startswith("shipped/tiny-fairmedgemma-grpo")] \
    if run.name == "shipped/tiny-fairmedgemma-fairgrpo" else []
baselines = st.multiselect("Compare with (baselines evaluated on the same cases)", others, default=suggested,
                           key=f"review_baselines_{run.name}")
folder = review_folder(ws.root, run.name)
slug = folder.path.name

st.subheader("1. Audit plan")
try:
    plan = read_plan(folder.plan) if folder.plan.is_file() else plan_from_run(run.path)
    lock = read_lock(folder.plan)
except Exception as error:  # noqa: BLE001 - a broken plan file is shown, the page keeps working
    show_input_error(error)
    st.stop()
if lock is None:
    st.caption(f"Not locked yet. It is locked when the first pack is built. Plan file: `{folder.plan}`"
               + ("" if folder.plan.is_file() else " (not saved yet: a starting plan from the run is shown)"))
else:
    deviations = plan_deviations(lock.plan, plan)
    st.caption(f"Locked {lock.locked_utc}, SHA-256 `{lock.plan_sha256}`.")
    if deviations:
        st.warning(f"The plan changed after it was locked ({len(deviations)} field(s): "
                   f"{', '.join(d.field for d in deviations)}); the pack will report these deviations.")

left, right = st.columns(2)
intended_use = left.text_area("Intended use", plan.intended_use, key=f"plan_use_{slug}")
population = right.text_area("Population", plan.population, key=f"plan_population_{slug}")
decision_requested = left.text_input("Decision requested", plan.decision_requested, key=f"plan_decision_{slug}")
prepared_by = right.text_input("Prepared by", plan.prepared_by, key=f"plan_by_{slug}")
st.markdown("**Subgroups at risk** (attribute, why it is at risk, reference group: empty = the largest group)")
subgroups = st.data_editor(
    pd.DataFrame([s.__dict__ for s in plan.subgroups]), num_rows="dynamic", width="stretch",
    column_config={"attribute": st.column_config.SelectboxColumn(options=list(run_attributes(run.path)),
                                                                 required=True)},
    key=f"plan_subgroups_{slug}")
st.markdown("**Metrics that matter** and the acceptable margin to the reference group "
            "(|difference| at most `max_difference`, and/or the ratio inside `ratio_low`-`ratio_high`)")
metrics = st.data_editor(
    pd.DataFrame([m.__dict__ for m in plan.metrics]), num_rows="dynamic", width="stretch",
    column_config={"metric": st.column_config.SelectboxColumn(options=list(METRICS), required=True)},
    key=f"plan_metrics_{slug}")
a, b, c, d = st.columns(4)
correction = a.selectbox("Correction", ["holm", "bh", "none"], index=["holm", "bh", "none"].index(plan.correction),
                         key=f"plan_correction_{slug}", help="Holm, Benjamini-Hochberg, or none")
min_group_size = b.number_input("Smallest group for a claim (cases)", 0, 100_000, plan.min_group_size,
                                key=f"plan_min_{slug}")
n_boot = c.number_input("Bootstrap resamples", 100, 20_000, plan.n_boot, step=100, key=f"plan_boot_{slug}")
intersections = d.checkbox("Audit intersections", plan.intersections, key=f"plan_cross_{slug}")
reviewer_limitations = st.text_area("Reviewer's limitations (goes into the pack)", plan.reviewer_limitations,
                                    key=f"plan_limits_{slug}")


def _rows(frame: pd.DataFrame) -> list[dict]:
    """Data-editor rows as plain dicts: empty cells dropped (None/NaN mean "not used")."""
    rows = []
    for record in frame.to_dict(orient="records"):
        rows.append({k: v for k, v in record.items() if v is not None and not (isinstance(v, float) and v != v)})
    return rows


edited = None
try:
    candidate = plan_from_dict({
        **plan_to_dict(plan), "intended_use": intended_use, "population": population,
        "decision_requested": decision_requested, "prepared_by": prepared_by, "subgroups": _rows(subgroups),
        "metrics": _rows(metrics), "correction": correction, "min_group_size": int(min_group_size),
        "n_boot": int(n_boot), "intersections": bool(intersections), "reviewer_limitations": reviewer_limitations,
    }, source="the plan form")
    check_plan_against_run(candidate, run.path, plan_source="the plan form")
    edited = candidate
except Exception as error:  # noqa: BLE001
    show_input_error(error)
save, lock_now = st.columns(2)
if save.button("Save plan", disabled=edited is None, key=f"plan_save_{slug}"):
    write_plan(edited, folder.plan, overwrite=True)
    st.toast(f"Saved the plan (SHA-256 {plan_hash(edited)[:12]}...)")
    st.rerun()
if lock_now.button("Lock plan", disabled=not folder.plan.is_file() or lock is not None, key=f"plan_lock_{slug}"):
    lock_plan(folder.plan)
    st.rerun()

st.subheader("2. Build the evidence pack")
pdf = st.checkbox("Also print the PDF (headless chromium, about 10 s)", value=True, key="review_pdf")
if st.button("Build the evidence pack", type="primary", disabled=not folder.plan.is_file(), key="review_build"):
    from fairmed_core.report.pack import build_pack

    try:
        with st.spinner("Auditing, comparing and writing the pack..."):
            files = build_pack(folder.plan, run.path, folder.new_pack(),
                               compare=tuple(runs[label].path for label in baselines), pdf=pdf,
                               prepared_by=prepared_by)
        st.success(f"Built `{files.folder}` in {sum(files.seconds.values()):.1f} s.")
    except Exception as error:  # noqa: BLE001
        show_input_error(error)
if not folder.plan.is_file():
    st.caption("Save the plan first: a pack is built against a saved (and then locked) plan.")

packs = folder.packs()
if packs:
    st.subheader("3. Packs and sign-off")
    chosen = st.selectbox("Pack", packs, format_func=lambda p: p.name, key=f"review_pack_{slug}")
    summary = json.loads((chosen / "pack.json").read_text(encoding="utf-8"))
    counts = dict(summary["verdict_summary"])
    columns = st.columns(3)
    for column, (state, count) in zip(columns, counts.items(), strict=True):
        column.metric(state.capitalize(), count, help="Planned (group, metric) comparisons with the reference group")
    downloads = st.columns(3)
    for column, (name, mime) in zip(downloads, (("pack.html", "text/html"), ("pack.pdf", "application/pdf"),
                                                ("pack.json", "application/json")), strict=True):
        if (chosen / name).is_file():
            column.download_button(f"Download {name}", (chosen / name).read_bytes(), file_name=f"{chosen.name}-{name}",
                                   mime=mime, key=f"download_{name}_{chosen.name}")
    check = verify_pack(chosen)
    if check.ok:
        st.success(f"Verified: {len(check.files)} files unchanged since the pack was built "
                   "(pack, plan, run files, model weights).")
    else:
        st.error("**The pack does not verify.** " + "; ".join(check.problems()))
    decisions = read_decisions(chosen)
    if decisions:
        st.dataframe(pd.DataFrame(decisions)[["date", "reviewers", "decision", "conditions", "pack_sha256"]],
                     width="stretch")
    with st.form(f"sign_{chosen.name}"):
        reviewers = st.text_input("Reviewers (comma-separated)")
        decision = st.radio("Decision", DECISIONS, horizontal=True)
        conditions = st.text_input("Conditions (for an approval with conditions)")
        if st.form_submit_button("Record the decision"):
            try:
                entry = sign_pack(chosen, reviewers=reviewers.split(","), decision=decision, conditions=conditions)
                st.success(f"Recorded '{entry['decision']}' in the pack's decision log.")
                st.rerun()
            except Exception as error:  # noqa: BLE001
                show_input_error(error)
