"""FairGrad page: train ERM, the fixed-weight penalty and FairGrad side by side as background jobs on the
benchmark's images, then compare them: accuracy against disparity, per-source numbers, gradient conflicts.

Training runs as ``fairmed train fairgrad`` jobs (``fairmed_core.runs.jobs``), so it outlives this browser
session; every finished run is an evaluation run the Fairness audit page opens.
"""

from __future__ import annotations

import time

import streamlit as st

from fairmed_core.runs.eval_store import list_evaluations
from fairmed_core.runs.jobs import Job, start_job
from fairmed_core.training.fairgrad_report import compare_runs, training_history
from fairmed_core.viz import conflict_figure, pareto_figure
from fairmed_core.viz.fairgrad_figures import DISPARITY_LABELS
from pages._common import current_dataset, current_manifest, show_input_error, workspace
from pages._jobs import jobs_panel

METHODS = {"erm": "ERM (no fairness objective)", "penalty": "Fixed-weight penalty", "fairgrad": "FairGrad"}
OBJECTIVES = {"equalized_odds": "Equalized odds", "equal_opportunity": "Equal opportunity",
              "demographic_parity": "Demographic parity"}
RUN_KIND = "fairgrad-images"


def _start_jobs(methods, attributes, objective, epochs, warmup, lr, penalty_weight, seed) -> list[Job]:
    ws = workspace()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    jobs = []
    for method in methods:
        name = f"fairgrad-{method}-s{seed}-{stamp}"
        argv = ["train", "fairgrad", "--data", str(current_manifest()), "--out", str(ws.run_dir(name)),
                "--method", method, "--objective", objective, "--epochs", str(epochs), "--warmup-epochs",
                str(warmup), "--lr", str(lr), "--penalty-weight", str(penalty_weight), "--seed", str(seed)]
        for attribute in attributes:
            argv += ["--attribute", attribute]
        jobs.append(start_job(ws, name, argv, labels={"kind": "fairgrad", "method": method, "run": name}))
    return jobs


def train_form(dataset) -> None:
    with st.form("fairgrad_form"):
        c1, c2, c3 = st.columns(3)
        methods = c1.multiselect("Methods", list(METHODS), default=list(METHODS), format_func=METHODS.get,
                                 key="fairgrad_methods")
        attributes = c1.multiselect("Sensitive attributes (one objective each)", list(dataset.attributes),
                                    default=["sex"], key="fairgrad_attributes",
                                    help="An attribute a source does not record (skin tone outside dermoscopy) is "
                                    "skipped for that source.")
        objective = c2.selectbox("Fairness objective", list(OBJECTIVES), format_func=OBJECTIVES.get,
                                 key="fairgrad_objective")
        penalty_weight = c2.number_input("Penalty weight (penalty method)", 0.0, 100.0, 1.0, 0.1,
                                         key="fairgrad_penalty_weight")
        seed = c2.number_input("Seed", 0, 10_000, 0, key="fairgrad_seed")
        epochs = c3.number_input("Epochs", 1, 200, 15, key="fairgrad_epochs")
        warmup = c3.number_input("ERM warm-up epochs", 0, 200, 8, key="fairgrad_warmup",
                                 help="From a random start the fairness objectives, which a constant answer "
                                 "satisfies, can collapse a model that has learnt nothing yet.")
        lr = c3.number_input("Learning rate", 1e-5, 1.0, 3e-3, format="%.4f", key="fairgrad_lr")
        submitted = st.form_submit_button("Train side by side", type="primary")
    if not submitted:
        return
    if not methods:
        st.warning("Choose at least one method.")
        return
    if set(methods) - {"erm"} and not attributes:
        st.warning("Penalty and FairGrad need at least one sensitive attribute.")
        return
    if warmup >= epochs and set(methods) - {"erm"}:
        st.warning(f"With {warmup} warm-up epochs out of {epochs}, penalty and FairGrad train as ERM only.")
    jobs = _start_jobs(methods, attributes, objective, int(epochs), int(warmup), float(lr), float(penalty_weight),
                       int(seed))
    st.success(f"Started {len(jobs)} job(s): {', '.join(job.name for job in jobs)}. They keep running if you "
               "close this page.", icon=":material/play_circle:")


def jobs() -> None:
    jobs_panel("fairgrad", method_names=METHODS, unit="sources", empty="No FairGrad jobs in this workspace yet.")


def comparison_panel(dataset) -> None:
    runs = [run for run in list_evaluations(workspace()) if run.info.get("kind") == RUN_KIND]
    if not runs:
        st.info("No finished FairGrad runs yet: train some above, or run `fairmed train fairgrad` in a shell.")
        return
    labels = {f"{run.name} ({run.info.get('training', {}).get('method', '?')}, accuracy "
              f"{run.info.get('accuracy', float('nan')):.3f})": run for run in runs}
    chosen = st.multiselect("Runs to compare", list(labels), default=list(labels)[:6], key="fairgrad_compare_runs")
    selected = [labels[label] for label in chosen]
    if not selected:
        st.warning("Choose at least one run.")
        return
    comparison = compare_runs(selected, dataset.attributes)
    attributes = [a for a in dataset.attributes if a in set(comparison["attribute"])]
    if not attributes:
        st.warning("These runs have no attribute with two known groups to compare.")
        return
    c1, c2 = st.columns(2)
    attribute = c1.selectbox("Attribute", attributes, key="fairgrad_compare_attribute")
    disparity = c2.selectbox("Disparity", list(DISPARITY_LABELS), format_func=DISPARITY_LABELS.get,
                             key="fairgrad_compare_disparity")
    st.plotly_chart(pareto_figure(comparison, attribute=attribute, disparity=disparity), width="stretch")
    table = comparison[comparison["attribute"] == attribute]
    collapsed = table[table["positive_rate"] == 0]
    if not collapsed.empty:
        st.warning(f"{len(collapsed)} run/source pair(s) answer no to every case (positive rate 0): their gaps are 0 "
                   "because the model collapsed, not because it is fair. Try more warm-up epochs or a smaller "
                   "penalty weight.", icon=":material/warning:")
    summary = table.groupby(["source", "method"])[["auroc", "accuracy", "positive_rate", "eq_odds_diff",
                                                   "eq_opp_diff"]].agg(["mean", "std", "count"])
    st.dataframe(summary.round(3), width="stretch")

    st.markdown("**Gradient conflicts over training** (FairGrad runs)")
    fairgrad_runs = {run.name: run for run in selected if run.info.get("training", {}).get("method") == "fairgrad"}
    if not fairgrad_runs:
        st.caption("No FairGrad run among the chosen ones.")
    else:
        name = st.selectbox("FairGrad run", list(fairgrad_runs), key="fairgrad_conflict_run")
        history = training_history(fairgrad_runs[name])
        st.plotly_chart(conflict_figure(history, title=f"Conflicting gradient pairs per epoch: {name}"),
                        width="stretch")
    audit_choice = st.selectbox("Audit a run per group", [run.name for run in selected], key="fairgrad_audit_run")
    if st.button("Open it on the Fairness audit page", key="fairgrad_audit", icon=":material/balance:"):
        st.session_state["audit_preselect_run"] = audit_choice
        st.switch_page("pages/fairness_audit.py")


st.title("FairGrad")
st.markdown(
    "Train a classifier so that the gradient of its task loss and the gradients of one fairness loss per "
    "sensitive attribute stop fighting: each conflicting gradient is projected onto the normal plane of the "
    "others (**FairGrad**). Compare it with plain training (**ERM**) and with a **fixed-weight penalty** on the "
    "same data, seeds and epochs: one small CNN per source of the benchmark's images."
)
try:
    dataset = current_dataset()
except Exception as error:  # noqa: BLE001 - a bad dataset is shown, never fatal
    show_input_error(error)
    st.stop()

for title, panel in (("Train", lambda: train_form(dataset)), ("Jobs", jobs),
                     ("Compare", lambda: comparison_panel(dataset))):
    st.subheader(title)
    try:
        panel()
    except Exception as error:  # noqa: BLE001 - bad input must never take the page down
        show_input_error(error)
