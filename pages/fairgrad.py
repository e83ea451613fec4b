"""FairGrad page: train ERM, the fixed-weight penalty and FairGrad side by side as background jobs, on the
benchmark's images or on a table of the user's own (a CSV in the workspace's ``tables/`` folder), then compare
them: accuracy against disparity, per-source numbers, gradient conflicts.

Training runs as ``fairmed train fairgrad`` / ``fairmed train fairgrad-tabular --config job.json`` jobs
(``fairmed_core.runs.jobs``): the page builds and checks each job's config first and writes it into the run
folder, and the job outlives this browser session; every finished run is an evaluation run the Fairness audit
page opens. The comparison opens on the runs shipped in ``assets/fairgrad/`` until the workspace has its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from fairmed_core.data.labels import attribute_label, source_label
from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import read_predictions_table
from fairmed_core.jobs.configs import JOB_FILE, FairGradImagesJobConfig, FairGradTabularJobConfig, job_argv
from fairmed_core.runs.eval_store import list_evaluations
from fairmed_core.runs.fairgrad_report import compare_runs, training_history
from fairmed_core.runs.jobs import Job, start_job
from fairmed_core.runs.workspace import atomic_write_bytes
from fairmed_core.settings import write_config
from fairmed_core.training.fairgrad_config import METHODS as FAIRGRAD_METHODS
from fairmed_core.training.fairgrad_config import FairGradImageConfig, FairGradTabularConfig
from fairmed_core.training.tabular import read_tabular
from fairmed_core.viz import conflict_figure, pareto_figure
from fairmed_core.viz.fairgrad_figures import DISPARITY_LABELS
from pages._common import current_dataset, current_manifest, show_input_error, workspace
from pages._forms import build_config, config_defaults
from pages._run_picker import pick_runs
from pages._jobs import jobs_panel

# The methods are FairGrad's own (one list per kind); this page only names them.
METHODS = dict(zip(FAIRGRAD_METHODS, ("ERM (no fairness objective)", "Fixed-weight penalty", "FairGrad"), strict=True))
OBJECTIVES = {"equalized_odds": "Equalized odds", "equal_opportunity": "Equal opportunity",
              "demographic_parity": "Demographic parity"}
RUN_KINDS = ("fairgrad-images", "fairgrad-tabular")
SHIPPED_PREFIX = "shipped/"  # how list_evaluations names the runs shipped in assets/fairgrad/
SUMMARY_COLUMNS = {"auroc": "AUROC (0-1)", "accuracy": "Accuracy (0-1)", "positive_rate": "Answers yes (share, 0-1)",
                   "eq_odds_diff": "Equalized odds difference (0-1)",
                   "eq_opp_diff": "Equal opportunity difference (0-1)"}
DATA_IMAGES, DATA_TABLE = "Benchmark images", "A tabular CSV"
MAX_TABLE_BYTES = 50 * 2**20  # the upload limit of .streamlit/config.toml


def _hand_off(command: str, configs: dict, names: dict, labels: dict) -> list[Job]:
    """Start one background job per checked config: its ``job.json`` written into the run folder first, then
    ``fairmed train <command> --config job.json`` (the job reads exactly what the page checked)."""
    ws = workspace()
    jobs = []
    for method, config in configs.items():
        run_dir = ws.run_dir(names[method])
        job_file = write_config(config, run_dir / JOB_FILE)
        jobs.append(start_job(ws, names[method], job_argv(["train", command], job_file, run_dir), labels={**labels, "method": method, "run": names[method],
                                                               "config": str(job_file), "out": str(run_dir)}))
    return jobs


def _start_jobs(configs: dict[str, FairGradImagesJobConfig]) -> list[Job]:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    names = {method: f"fairgrad-{method}-s{config.fairgrad.seed}-{stamp}" for method, config in configs.items()}
    return _hand_off("fairgrad", configs, names, {"kind": "fairgrad"})


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
        default = FairGradImageConfig()  # the start values are the config's defaults, as on the command line
        penalty_weight = c2.number_input("Penalty weight (penalty method)", 0.0, 100.0, default.penalty_weight, 0.1,
                                         key="fairgrad_penalty_weight")
        seed = c2.number_input("Seed", 0, 10_000, default.seed, key="fairgrad_seed")
        epochs = c3.number_input("Epochs", 1, 200, default.epochs, key="fairgrad_epochs")
        warmup = c3.number_input("ERM warm-up epochs", 0, 200, default.warmup_epochs, key="fairgrad_warmup",
                                 help="From a random start the fairness objectives, which a constant answer "
                                 "satisfies, can collapse a model that has learnt nothing yet.")
        lr = c3.number_input("Learning rate", 1e-5, 1.0, default.learning_rate, format="%.4f", key="fairgrad_lr")
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
    # Every job's config is built (and so checked) before any job starts.
    configs = {method: build_config(FairGradImagesJobConfig, {
        "data": str(current_manifest()), "method": method, "attributes": list(attributes), "objective": objective,
        "epochs": int(epochs), "warmup_epochs": int(warmup), "learning_rate": float(lr),
        "penalty_weight": float(penalty_weight), "seed": int(seed)}) for method in methods}
    jobs = _start_jobs(configs)
    st.success(f"Started {len(jobs)} job(s): {', '.join(job.name for job in jobs)}. They keep running if you "
               "close this page.", icon=":material/play_circle:")


# --------------------------------------------------------------------------------------------------------------
# A table of the user's own
# --------------------------------------------------------------------------------------------------------------


def tables_dir() -> Path:
    """Where uploaded tables are kept: ``<workspace>/tables/``."""
    return workspace().root / "tables"


def _save_upload(upload) -> str:
    """Save an uploaded table into ``tables/`` and return its file name; the same file uploaded again is not
    copied twice, and a different file with a taken name gets a numbered one (runs keep pointing at theirs)."""
    if upload.size > MAX_TABLE_BYTES:
        raise FairMedInputError(f"the file is {upload.size / 2**20:.1f} MB, over the "
                                f"{MAX_TABLE_BYTES / 2**20:.0f} MB limit", source=upload.name,
                                hint="drop columns or rows you do not need, or run `fairmed train fairgrad-tabular`"
                                     " in a shell on the full file")
    path = Path(upload.name)
    suffix = path.suffix.lower() if path.suffix.lower() in (".csv", ".tsv") else ".csv"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip("._-")[:80] or "table"
    data = upload.getvalue()
    folder = tables_dir()
    for number in range(1, 1000):
        name = f"{stem}{suffix}" if number == 1 else f"{stem}-{number}{suffix}"
        target = folder / name
        if not target.exists():
            atomic_write_bytes(target, data)
            return name
        if target.stat().st_size == len(data) and target.read_bytes() == data:
            return name
    raise FairMedInputError("too many tables with this name", source=upload.name, hint="rename the file")


@st.cache_data(show_spinner=False, max_entries=4)
def _table(path: str, mtime: float) -> pd.DataFrame:
    return read_predictions_table(path, max_bytes=MAX_TABLE_BYTES)


def _guesses(columns: list[str], pattern: str) -> list[str]:
    return [column for column in columns if re.search(pattern, column, flags=re.IGNORECASE)]


def _start_tabular_jobs(table: Path, configs: dict[str, FairGradTabularJobConfig]) -> list[Job]:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", table.stem)[:40]
    names = {method: f"fairgrad-{stem}-{method}-s{config.fairgrad.seed}-{stamp}" for method, config in configs.items()}
    return _hand_off("fairgrad-tabular", configs, names, {"kind": "fairgrad-tabular", "table": table.name})


def tabular_form() -> None:
    folder = tables_dir()
    upload = st.file_uploader(
        "Upload a table (CSV, at most 50 MB)", type=["csv", "tsv"], key="fgt_upload",
        help="One row per patient with a header row: the outcome, the sensitive attributes and the features. "
        f"It is kept in the workspace ({folder}) so the training jobs can read it.")
    if upload is not None and st.session_state.get("fgt_uploaded") != upload.file_id:
        # select a new upload once; later reruns keep whatever table the user picks
        st.session_state["fgt_table"] = _save_upload(upload)
        st.session_state["fgt_uploaded"] = upload.file_id
    names = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in (".csv", ".tsv")) if folder.is_dir() else []
    if not names:
        st.info(f"Upload a table, or place CSV files in {folder}.")
        return
    if st.session_state.get("fgt_table") not in names:
        st.session_state.pop("fgt_table", None)
    name = st.selectbox("Table", names, key="fgt_table")
    path = folder / name
    frame = _table(str(path), path.stat().st_mtime)
    columns = [str(column) for column in frame.columns]
    st.caption(f"{len(frame):,} rows, {len(columns)} columns: {', '.join(columns[:20])}"
               + (" ..." if len(columns) > 20 else ""))

    c1, c2 = st.columns(2)
    label_guess = _guesses(columns, r"outcome|label|target|death|died|mortality|readmit")
    label = c1.selectbox("Outcome (label) column", columns,
                         index=columns.index(label_guess[0]) if label_guess else 0, key=f"fgt_label_{name}")
    values = [str(value) for value in pd.unique(frame[label].dropna())][:50]
    positive_guess = [v for v in values if v.strip().lower() in ("1", "yes", "true", "died", "dead", "positive")]
    positive = c2.selectbox("Its value meaning the outcome happened", values or ["(no values)"],
                            index=values.index(positive_guess[0]) if positive_guess else 0,
                            key=f"fgt_positive_{name}_{label}")
    attributes = c1.multiselect(
        "Sensitive attributes (one objective each)", columns,
        default=[c for c in _guesses(columns, r"^(sex|gender|race|ethnicity|age_group)$") if c != label],
        key=f"fgt_attributes_{name}", help="Their values are the groups; they are not features.")
    drop = c2.multiselect(
        "Columns to leave out", columns,
        default=[c for c in _guesses(columns, r"(^|_)(id|mrn|identifier|date|time)($|_)") if c != label],
        key=f"fgt_drop_{name}", help="Identifiers, dates, free text, outcomes other than the label.")
    features = [c for c in columns if c not in {label, *attributes, *drop}]
    text_features = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])
                     and not pd.api.types.is_bool_dtype(frame[c])]
    categorical = c2.multiselect("Categorical features (one-hot encoded)", columns, default=text_features,
                                 key=f"fgt_categorical_{name}",
                                 help="Text columns must be named here or left out; number columns are numeric.")
    objectives = {}
    if attributes:
        cells = st.columns(min(len(attributes), 4))
        for index, attribute in enumerate(attributes):
            objectives[attribute] = cells[index % len(cells)].selectbox(
                f"Objective for {attribute}", list(OBJECTIVES), format_func=OBJECTIVES.get,
                key=f"fgt_objective_{name}_{attribute}")

    c1, c2, c3 = st.columns(3)
    methods = c1.multiselect("Methods", list(METHODS), default=list(METHODS), format_func=METHODS.get,
                             key="fgt_methods")
    model = c1.selectbox("Model", ["logistic", "mlp"], key="fgt_model",
                         format_func={"logistic": "Logistic regression", "mlp": "MLP (one hidden layer)"}.get)
    default = config_defaults(FairGradTabularConfig)  # start values: the config's defaults, as on the command line
    penalty_weight = c2.number_input("Penalty weight (penalty method)", 0.0, 100.0, default["penalty_weight"], 0.1,
                                     key="fgt_penalty")
    seed = c2.number_input("Seed (split and training)", 0, 10_000, default["seed"], key="fgt_seed")
    test_fraction = c2.slider("Held-out test share", 0.1, 0.5, default["test_fraction"], 0.05,
                              key="fgt_test_fraction")
    epochs = c3.number_input("Epochs", 1, 1000, default["epochs"], key="fgt_epochs")
    warmup = c3.number_input("ERM warm-up epochs", 0, 1000, default["warmup_epochs"], key="fgt_warmup",
                             help="Epochs of plain training before the fairness objectives start; a few help when "
                             "penalty or FairGrad collapse to one answer (positive rate 0 below).")
    lr = c3.number_input("Learning rate", 1e-5, 1.0, default["learning_rate"], format="%.4f", key="fgt_lr")
    if not st.button("Train side by side", type="primary", key="fgt_start"):
        return
    if not methods:
        st.warning("Choose at least one method.")
        return
    if not attributes:
        st.warning("Choose at least one sensitive attribute: the runs are audited per group.")
        return
    configs = {method: build_config(FairGradTabularJobConfig, {
        "table": str(path), "label": label, "positive_label": positive, "attributes": list(attributes),
        "objectives": objectives, "method": method, "model": model, "epochs": int(epochs),
        "warmup_epochs": int(warmup), "learning_rate": float(lr), "penalty_weight": float(penalty_weight),
        "test_fraction": float(test_fraction), "seed": int(seed), "categorical": list(categorical),
        "drop": list(drop)}) for method in methods}
    # Read the table with these choices now, so a bad choice is shown here and not in a failed job's log.
    data = read_tabular(path, label=label, positive_label=positive, attributes=attributes,
                        categorical=categorical, drop=drop, max_bytes=MAX_TABLE_BYTES)
    jobs = _start_tabular_jobs(path, configs)
    st.success(f"Started {len(jobs)} job(s) on {data.n_rows:,} rows ({100 * data.positive_rate:.1f}% {positive}): "
               f"{', '.join(job.name for job in jobs)}. They keep running if you close this page.",
               icon=":material/play_circle:")
    for note in data.notes:
        st.caption(f"Note: {note}")


def jobs() -> None:
    jobs_panel("fairgrad", method_names=METHODS, unit="epochs (all sources)",
               empty="No FairGrad jobs in this workspace yet.")
    jobs_panel("fairgrad-tabular", method_names=METHODS, unit="epochs",
               empty="No FairGrad jobs on a table in this workspace yet.")


def _data_label(run) -> str:
    """What a run was trained and tested on: the benchmark's images or one table (runs are compared only on the
    same data: accuracy and disparity on different cases are not comparable)."""
    record = run.record
    if record.kind == "fairgrad-tabular":
        return f"Table {record.dataset}"
    return f"Benchmark images ({record.dataset}, {record.split or 'test'} split)"


def _is_shipped(run) -> bool:
    return run.name.startswith(SHIPPED_PREFIX)


def _run_label(run) -> str:
    method = run.record.method or "?"
    shipped = "shipped, " if _is_shipped(run) else ""
    accuracy = run.record.accuracy if run.record.accuracy is not None else float("nan")
    return (f"{run.name.removeprefix(SHIPPED_PREFIX)} ({shipped}{METHODS.get(method, method)} on "
            f"{run.record.dataset}, accuracy {accuracy:.3f} (0-1))")


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per source and method: the mean of each number over the chosen runs (and their spread when there are
    several), with readable headers that carry the unit."""
    named = table.assign(Source=table["source"].map(source_label),
                         Method=table["method"].map(lambda method: METHODS.get(method, method)))
    grouped = named.groupby(["Source", "Method"], sort=True)
    summary = grouped[list(SUMMARY_COLUMNS)].mean().rename(columns=SUMMARY_COLUMNS)
    spread = grouped[list(SUMMARY_COLUMNS)].std()
    if spread.notna().any().any():  # several runs (seeds) per method: their standard deviation beside the mean
        summary = summary.join(spread.rename(columns={c: f"{SUMMARY_COLUMNS[c]}, SD over runs" for c in spread}))
    summary.insert(0, "Runs", grouped.size())
    summary.insert(1, "Cases per run", grouped["n"].mean().round().astype(int))
    return summary.round(3)


def comparison_panel() -> None:
    # This workspace's runs (newest first), then the runs shipped with FairMed: a fresh workspace opens on those.
    runs = list_evaluations(workspace(), shipped=True, kinds=RUN_KINDS)
    if not runs:
        st.info("No finished FairGrad runs yet: train some above, or run `fairmed train fairgrad` (or "
                "`fairmed train fairgrad-tabular`) in a shell.")
        return
    if all(_is_shipped(run) for run in runs):
        st.caption("No FairGrad run in this workspace yet: these are the runs shipped with FairMed (ERM, the "
                   "fixed-weight penalty and FairGrad on the benchmark's images and on a SUPPORT2-like sepsis "
                   "table; benchmarks/shipped_fairgrad_runs.py). Runs you train appear here first.")
    by_data: dict[str, list] = {}
    for run in runs:  # newest first, so the data of the newest run comes first
        by_data.setdefault(_data_label(run), []).append(run)
    # A run of the workspace that finishes while the shipped runs are shown takes over the view: its data is
    # chosen (a run on the shown data joins the choice below).
    own = [run.name for run in runs if not _is_shipped(run)]
    known = st.session_state.get("fairgrad_compare_known")
    shown = st.session_state.get("fairgrad_compare_data")
    if known is not None and shown in by_data and all(_is_shipped(run) for run in by_data[shown]):
        new = [run for run in runs if not _is_shipped(run) and run.name not in known]
        if new:
            st.session_state["fairgrad_compare_data"] = _data_label(new[0])
    st.session_state["fairgrad_compare_known"] = own
    data = st.selectbox("Compare runs on", list(by_data), key="fairgrad_compare_data",
                        help="Runs on the benchmark's images and runs on a table (or on two tables, or on two "
                        "splits) are never put on one plot: their accuracy and disparity are measured on different "
                        "patients.")
    runs = by_data[data]
    by_name = {_run_label(run): run for run in runs}  # a finished run's label does not change
    # Other data starts afresh, on this workspace's runs on that data when it has some, else the shipped ones; a
    # run that finishes while the page is open joins the choice (the jobs panel reruns the page when a job ends).
    own = [name for name, run in by_name.items() if not _is_shipped(run)]
    chosen = pick_runs("Runs to compare", list(by_name), key="fairgrad_compare_runs", scope=data,
                       default=(own or list(by_name))[:6])
    selected = [by_name[name] for name in chosen]
    if not selected:
        st.warning("Choose at least one run.")
        return
    recorded = list(dict.fromkeys(a for run in selected for a in run.record.attributes))
    comparison = compare_runs(selected, recorded)
    attributes = [a for a in recorded if a in set(comparison["attribute"])]
    if not attributes:
        st.warning("These runs have no attribute with two known groups to compare.")
        return
    c1, c2 = st.columns(2)
    attribute = c1.selectbox("Attribute", attributes, format_func=attribute_label, key="fairgrad_compare_attribute")
    disparity = c2.selectbox("Disparity", list(DISPARITY_LABELS), format_func=DISPARITY_LABELS.get,
                             key="fairgrad_compare_disparity")
    st.plotly_chart(pareto_figure(comparison, attribute=attribute, disparity=disparity, method_names=METHODS),
                    width="stretch")
    table = comparison[comparison["attribute"] == attribute]
    # A model that gives one answer to every case has gaps of 0 whichever answer it is: that is a collapse,
    # not fairness (positive rate 0: "no" to everyone; 1: "yes" to everyone).
    for rate, answer in ((0.0, "no"), (1.0, "yes")):
        collapsed = table[table["positive_rate"] == rate]
        if not collapsed.empty:
            pairs = ", ".join(f"{row.run.removeprefix(SHIPPED_PREFIX)} on {source_label(row.source)}"
                              for row in collapsed.itertuples())
            st.warning(f"{len(collapsed)} run/source pair(s) answer {answer} to every case (positive rate "
                       f"{rate:.0%}): {pairs}. Their gaps are 0 because the model collapsed to one answer, not "
                       "because it is fair. Try more warm-up epochs or a smaller penalty weight.",
                       icon=":material/warning:")
    st.dataframe(_summary(table), width="stretch")

    st.markdown("**Gradient conflicts over training** (FairGrad runs)")
    fairgrad_runs = {run.name: run for run in selected if run.record.method == "fairgrad"}
    if not fairgrad_runs:
        st.caption("No FairGrad run among the chosen ones.")
    else:
        name = st.selectbox("FairGrad run", list(fairgrad_runs), key="fairgrad_conflict_run",
                            format_func=lambda run: run.removeprefix(SHIPPED_PREFIX))
        history = training_history(fairgrad_runs[name])
        title = f"Conflicting gradient pairs per epoch: {name.removeprefix(SHIPPED_PREFIX)}"
        st.plotly_chart(conflict_figure(history, title=title),
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
    "same data, seeds and epochs: one small CNN per source of the benchmark's images, or a logistic regression "
    "(or small MLP) on a table of your own."
)


def train_panel() -> None:
    choice = st.radio("Data", [DATA_IMAGES, DATA_TABLE], horizontal=True, key="fairgrad_data")
    if choice == DATA_TABLE:
        tabular_form()
    else:
        train_form(current_dataset())


for title, panel in (("Train", train_panel), ("Jobs", jobs), ("Compare", comparison_panel)):
    st.subheader(title)
    try:
        panel()
    except Exception as error:  # noqa: BLE001 - bad input must never take the page down
        show_input_error(error)
