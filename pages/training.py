"""Training page: start GRPO, FairGRPO and its baselines as background jobs from the sidebar's model, watch them,
and compare their training dynamics: reward, held-out accuracy and the fairness gaps per method over steps (the
FairGRPO paper's training-dynamics figure), per data source by default or as a mean labelled with the sources it
averages, with the held-out sample's composition under them; per-group held-out metrics and the FairGRPO weights. It opens on the
training records shipped with the GRPO- and FairGRPO-trained models (labelled shipped); the workspace's runs
join the same choice and are re-read every few seconds, so a running run's curves grow without a reload.

Each run is ``fairmed train <method> --config job.json`` in its own process (``fairmed_core.runs.jobs``): the
page builds and checks the run's config first and writes it into the run folder; the run outlives the browser
session, can be stopped, and a stopped or killed run resumes from its last checkpoint with the same job file.
"""

from __future__ import annotations

import json
import time

from pathlib import Path

import pandas as pd
import streamlit as st

from fairmed_core.data.labels import SOURCE_FINDINGS, attribute_label, group_label, source_label
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import LEARNABLE_START
from fairmed_core.fairness import MEAN_OVER_SOURCES
from fairmed_core.runs.jobs import Job, list_jobs, start_job
from fairmed_core.runs.training_store import (eval_frame, held_out_sources, list_training_runs, mean_over_sources,
                                              shipped_training_runs, summary_frame, train_frame)
from fairmed_core.training.methods import METHODS as TRAINING_METHODS
from fairmed_core.training.sft_config import SFTConfig
from fairmed_core.viz import source_step_lines_figure, step_lines_figure
from pages._common import current_dataset, current_manifest, current_model_dir, show_input_error, workspace
from pages._forms import build_config, config_widgets
from pages._jobs import jobs_panel
from pages._run_picker import pick_runs

# The methods, their labels and help come from the registry (fairmed_core.training.methods); this page only
# shows them.
METHODS = {name: method.label for name, method in TRAINING_METHODS.items()}
METHODS_HELP = ("One run per method, same settings. FairGRPO is the method of arXiv 2510.19893 (its v2, June 2026, "
                "renames it EQPO, Equitable Group Relative Policy Optimization, and FairMedGemma-4B "
                "EquiMedGemma-4B). Where FairMed departs from the authors' code: docs/FAIRGRPO_DEVIATIONS.md.\n\n"
                + "\n".join(f"- **{method.label}**: {method.help}." for method in TRAINING_METHODS.values()))
# Every statistic with its unit: the gaps in percentage points (pp), the rest as fractions on 0-1.
GAPS = {"predictive_parity": "Predictive parity (FDR gap, pp)", "equal_opportunity_difference":
        "Equal opportunity difference (TPR gap, pp)", "sigma_f1": "Sigma F1 (std of F1 over groups, 0-1)",
        "f1_es": "F1_ES (F1 / (1 + sigma F1), 0-1)", "accuracy": "Accuracy (share of cases, 0-1)", "f1": "F1 (0-1)"}
FRACTIONS = {"sigma_f1", "f1_es", "accuracy", "f1"}
TABLE_GAPS = {"predictive_parity": "Predictive parity (pp)", "equal_opportunity_difference":
              "Equal opportunity difference (pp)", "sigma_f1": "Sigma F1 (0-1)"}
GROUP_METRICS = {"accuracy": "Accuracy (share of cases, 0-1)", "f1": "F1 (0-1)",
                 "recall": "Recall (TPR: share of positive cases found, 0-1)",
                 "fdr": "False discovery rate (share of positive answers that are wrong, 0-1)",
                 "format_failure": "Format failures (share of answers, 0-1)"}
VIEWS = {"per_source": "Per source", "mean": "Mean over sources"}
# F1 first (the default): the paper's headline metric, and on a start that under-calls a finding accuracy stays
# flat while the model learns to find it (the shipped runs' story).
HELD_OUT_METRICS = {"f1": GAPS["f1"], "accuracy": GAPS["accuracy"],
                    "recall": "Recall (TPR: share of positive cases found, 0-1)"}
HELD_OUT_NAMES = {"accuracy": "accuracy", "f1": "F1", "recall": "recall"}  # as a title names them
SHARE_COLUMN = "Mean share of |advantage| (0-1)"
ZERO_STD_COLUMN = "Prompts with identical rewards, no gradient (share, 0-1)"
# The form's main settings, in this order; every other setting of GRPOJobConfig is under "More settings". Both
# come from the dataclass (pages/_forms.py), so a new setting appears here by itself.
_MAIN = ("steps", "prompts_per_step", "num_generations", "learning_rate", "beta", "temperature",
         "max_completion_length", "eval_every", "eval_limit", "save_every", "seed")


def _start(configs: dict, label: str) -> list[Job]:
    """One background job per checked config: its ``job.json`` written into the run folder, then
    ``fairmed train <method> --config job.json``."""
    from fairmed_core.jobs.configs import JOB_FILE, job_argv
    from fairmed_core.settings import write_config

    ws = workspace()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    jobs = []
    for method, config in configs.items():
        name = f"{method}-{label}-{stamp}" if label else f"{method}-{stamp}"
        run_dir = ws.run_dir(name)
        job_file = write_config(config, run_dir / JOB_FILE)
        jobs.append(start_job(ws, name, job_argv(["train", method], job_file, run_dir), labels={"kind": "grpo", "method": method, "run": name,
                                                      "config": str(job_file), "out": str(run_dir)}))
    return jobs


def train_form() -> None:
    from fairmed_core.jobs.configs import GRPOTrainingJobConfig
    from fairmed_core.training.grpo_config import GRPOJobConfig

    with st.form("training_form"):
        methods = st.multiselect("Methods (one run each, same settings)", list(METHODS), default=["grpo", "fairgrpo"],
                                 format_func=METHODS.get, key="training_methods", help=METHODS_HELP)
        values = config_widgets(GRPOJobConfig, key_prefix="training", names=_MAIN)
        with st.expander("More settings (held-out splits, LoRA, FairGRPO and Group DRO options)"):
            values |= config_widgets(GRPOJobConfig, key_prefix="training", skip=("method", *_MAIN))
        label = st.text_input("Run label (optional)", key="training_label", max_chars=30,
                              help="Letters, digits and '-' only; added to the run names.")
        submitted = st.form_submit_button("Start training", type="primary")
    if not submitted:
        return
    if not methods:
        st.warning("Choose at least one method.")
        return
    # Every run's config is built (and so checked) before any job starts: a bad setting is shown here.
    configs = {method: build_config(GRPOTrainingJobConfig, {
        "model": str(current_model_dir()), "data": str(current_manifest()), **values, "method": method})
        for method in methods}
    dataset = current_dataset()
    for config in configs.values():
        config.training.check_data(dataset)  # what the method needs (sources, demographics), before any job starts
    label = "".join(ch for ch in label if ch.isalnum() or ch == "-")[:30]
    jobs = _start(configs, label)
    st.success(f"Started {len(jobs)} run(s): {', '.join(job.name for job in jobs)}. They keep running if you close "
               "this page.", icon=":material/play_circle:")


def _resume_argv(job: Job) -> list[str]:
    """The stopped run again with --resume, from the job file it was started with."""
    if "config" not in job.labels:
        raise FairMedInputError(f"run {job.labels.get('run', job.name)!r} was started before runs kept their job "
                                "file", hint="resume it in a shell: fairmed train METHOD --model ... --data ... "
                                "--out RUN --resume")
    from fairmed_core.jobs.configs import job_argv

    return job_argv(["train", job.labels["method"]], job.labels["config"], job.labels["out"], resume=True)


def jobs() -> None:
    jobs_panel("grpo", method_names=METHODS, unit="steps", empty="No training jobs in this workspace yet.",
               resume_argv=_resume_argv)


# How often the dynamics panel re-reads the runs: often while a run is being written, slowly otherwise (so a run
# started in a shell still appears within half a minute, without a reload).
REFRESH_WRITING_S, REFRESH_IDLE_S = 5, 30
WRITING_WITHIN_S = 120  # an unfinished run whose metrics changed this recently counts as going on


def _plural(finding: str) -> str:
    return finding + "es" if finding.endswith("s") else finding[:-1] + "ies" if finding.endswith("y") else \
        finding + "s"


def _learnable_start_words() -> str:
    """The learnable start in words, its prior shift read from its own training record (the SFT rules that kept
    a fraction of a source's positive cases), so the caption cannot drift from the shipped model."""
    name = f"`{LEARNABLE_START.name}`, a start that sees the finding in every source"
    try:
        record = json.loads((LEARNABLE_START / "training_config.json").read_text(encoding="utf-8"))
        rules = SFTConfig.from_dict(record["config"]).undersampling()
    except (OSError, ValueError, KeyError, TypeError, FairMedInputError):
        return name
    shifted = sorted((source, fraction) for (source, attribute, group), fraction in rules.items()
                     if attribute == "answer" and group == "yes")
    if not shifted:
        return name
    findings = [f"{source_label(s)} {_plural(SOURCE_FINDINGS.get(s, 'finding'))}" for s, _ in shifted]
    kept = " and ".join(f"{fraction:.0%} of the {finding}" for (_, fraction), finding in zip(shifted, findings))
    return f"{name} but under-calls {' and '.join(findings)}: its supervised data kept {kept}"


def _run_label(run) -> str:
    method = METHODS.get(run.method, run.method)
    if run.shipped:
        steps = f", {run.finished.steps} steps" if run.finished else ""
        return f"{run.name.removesuffix(' (shipped)')} (shipped with the model: {method}{steps})"
    return f"{run.name} ({method}{', finished' if run.finished else ''})"


def _writing(live_runs: list) -> bool:
    """Whether a run is going on: a training job of this page running, or a run (from a shell too) still
    writing its metrics."""
    return (any(job.status == "running" for job in list_jobs(workspace()) if job.labels.get("kind") == "grpo")
            or any(run.writing(within_s=WRITING_WITHIN_S) for run in live_runs))


def _all_runs() -> tuple[list, list]:
    """This workspace's training runs (newest first) and the shipped models' training records."""
    return list_training_runs(workspace()), shipped_training_runs()


def dynamics_panel(dataset) -> None:
    """The runs and their curves, re-read every few seconds by a fragment: a run started on this page or in a
    shell appears, and a running run's curves grow, without reloading the page."""
    writing = _writing(_all_runs()[0])

    @st.fragment(run_every=REFRESH_WRITING_S if writing else REFRESH_IDLE_S)
    def live() -> None:
        live_runs, shipped = _all_runs()
        if _writing(live_runs) != writing:
            st.rerun()  # a run started or stopped: the whole page again, with the matching refresh rate
        try:
            _dynamics(live_runs, shipped)
        except Exception as error:  # noqa: BLE001 - a fragment's own rerun is outside the page's guard
            show_input_error(error)

    live()


def _sources_in_words(sources: list[str]) -> str:
    return ", ".join(source_label(s) for s in sources) or "no source"


def _summary_table(selected: list, gaps: list[pd.DataFrame], sources: dict[str, list[str]]) -> pd.DataFrame:
    """One row per run: how it ended and its gaps at its last held-out step, with the sources they average."""
    rows = []
    for run, summary in zip(selected, gaps):
        last = summary[summary["step"] == summary["step"].max()] if not summary.empty else summary
        mean = last[(last["source"] == MEAN_OVER_SOURCES) & (last["attribute"] == "mean over attributes")]
        # Steps stay numbers (a column of one type); an unfinished run says so in its own column.
        rows.append({"Run": run.name, "Method": METHODS.get(run.method, run.method),
                     "Status": "finished" if run.finished else "running or stopped",
                     "Steps": run.finished.steps if run.finished else None,
                     "Test accuracy (0-1)": run.finished.test_accuracy if run.finished else None,
                     "Last held-out step": None if last.empty else int(last["step"].iloc[0]),
                     "Held-out sources averaged": _sources_in_words(sources[run.name]),
                     **{label: mean[key].iloc[0] for key, label in TABLE_GAPS.items()
                        if not mean.empty and key in mean}})
    return pd.DataFrame(rows)


def _mean_label(selected: list, sources: dict[str, list[str]]) -> tuple[str, bool]:
    """What the aggregate curves average, in words, and whether each run averages the same sources (else each
    line names its own)."""
    distinct = {tuple(sources[run.name]) for run in selected}
    if len(distinct) == 1:
        return f"mean over {_sources_in_words(list(next(iter(distinct))))}", True
    return "mean over each run's sources (named per line)", False


def _composition(selected: list) -> None:
    """Under the curves: which held-out cases each run's curves come from."""
    for run in selected:
        st.caption(f"**{run.name}**: {run.held_out_description()}")
    samples = {}
    for run in selected:
        sample = run.held_out_sample
        if sample is not None:
            samples.setdefault(sample.case_ids_sha256, (sample, []))[1].append(run.name)
    if samples:
        with st.expander("Cases per source and group in the held-out sample"):
            for sample, names in samples.values():
                st.caption(f"{', '.join(names)}: {sample.describe()}")
                st.dataframe(sample.groups_table(), hide_index=True, width="stretch")


def _dynamics(live_runs: list, shipped: list) -> None:
    runs = live_runs + shipped
    if not runs:
        st.info("No training runs yet: start one above, or run `fairmed train fairgrpo --model ... --data ... "
                "--out workspace/runs/NAME` in a shell.")
        return
    by_name = {run.name: run for run in runs}
    # The choice is kept by run name (a run's label changes when it finishes). This workspace's runs when there
    # are some, else the shipped GRPO and FairGRPO records, overlaid; a run that appears while the page is open
    # (started here or in a shell) is added to the choice, so it shows without a reload.
    # The shipped runs from the learnable start (files.LEARNABLE_START) show the training story; the older
    # shipped runs stay selectable.
    learnable = [run for run in shipped if Path(str(run.config.get("model_dir", ""))).name == LEARNABLE_START.name]
    chosen = pick_runs("Runs", list(by_name), key="training_runs",
                       default=[run.name for run in (live_runs[:4] or learnable or shipped)],
                       joinable=[run.name for run in live_runs], format_func=lambda name: _run_label(by_name[name]),
                       help="Runs of this workspace, and the training records shipped with the GRPO- and "
                       "FairGRPO-trained models (labelled shipped).")
    selected = [by_name[name] for name in chosen]
    if not selected:
        st.warning("Choose at least one run.")
        return
    if not live_runs:
        steps = sorted({run.finished.steps for run in selected if run.finished})
        start = _learnable_start_words() if learnable else "the shipped tiny model"
        st.caption(f"No run in this workspace yet: these are the training records shipped with the GRPO- and "
                   f"FairGRPO-trained models (from {start}; "
                   f"{', '.join(str(s) for s in steps) or 'a few'} steps on the synthetic benchmark). Older shipped "
                   "records are in the list. Runs you start appear here.")
    gaps, trains, curves, sources = [], [], [], {}
    for run in selected:
        records = run.records()
        sources[run.name] = held_out_sources(records)
        gaps.append(summary_frame(records).assign(run=run.name, method=run.method))
        trains.append(train_frame(records).assign(run=run.name, method=run.method))
        curves.append(eval_frame(records).assign(run=run.name, method=run.method))
    st.dataframe(_summary_table(selected, gaps, sources), hide_index=True, width="stretch")
    st.caption("Gaps at each run's last held-out evaluation, mean over the sources named and over the attributes; "
               "pp: percentage points.")
    gaps_all = pd.concat(gaps, ignore_index=True)
    trains_all = pd.concat(trains, ignore_index=True)
    curves_all = pd.concat(curves, ignore_index=True)

    if "reward" in trains_all:
        rewards = {str(run.config.get("job", {}).get("reward", "exact")) for run in selected}
        y_title = ("Mean reward per rollout (1: right, 0: wrong)" if rewards == {"exact"} else
                   "Mean reward per rollout (0: wrong)")
        st.plotly_chart(step_lines_figure(trains_all.dropna(subset=["reward"]), value="reward", series="run",
                                          title="Mean reward of the rollouts per step", y_title=y_title),
                        width="stretch")
        if rewards != {"exact"}:
            st.caption("Class-balanced reward: a right answer earns the inverse share of its answer in its source "
                       "(above 1 for the rarer answer), so the mean reward per source is its balanced accuracy. "
                       "Runs with the right/wrong reward score 1 for a right answer. Which method gains more "
                       "depends on the reward: docs/RESULTS.md, \"Reading: the seven methods from a start "
                       "reinforcement learning can move\".")
    if gaps_all.empty:
        st.caption("No held-out evaluation yet.")
        _composition(selected)
        return
    splits = {str(run.config.get("job", {}).get("eval_split", "val")) for run in selected}
    split = f"{next(iter(splits))} split" if len(splits) == 1 else "held-out splits"
    v1, v2 = st.columns(2)
    view = v1.radio("Held-out curves", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="training_view",
                    help="Per source: one panel per data source. Mean over sources: the average of the per-source "
                         "values, labelled with the sources it averages (older runs evaluated fewer sources).")
    held_out = v2.selectbox("Held-out metric", list(HELD_OUT_METRICS), format_func=HELD_OUT_METRICS.get,
                            key="training_held_out_metric",
                            help="Accuracy can stay flat while a model finds more of a rare finding: F1 and recall "
                                 "show that change.")
    name = HELD_OUT_NAMES[held_out]
    mean_label, same_sources = _mean_label(selected, sources)

    def mean_names(run_name: object) -> str:
        return str(run_name) if same_sources else f"{run_name} (mean over {_sources_in_words(sources[run_name])})"

    per_source = (curves_all["source"] != "ALL") & (curves_all["attribute"] == "overall")
    if view == "per_source":
        values = curves_all[per_source & (curves_all["metric"] == held_out)].dropna(subset=["value"])
        if not values.empty:
            st.plotly_chart(source_step_lines_figure(
                values, value="value", series="run", title=f"Held-out {name} per step, per source ({split})",
                y_title=HELD_OUT_METRICS[held_out], y_range=(0, 1.02), source_names=source_label), width="stretch")
        else:
            st.caption(f"These runs recorded no held-out {name} per source.")
    elif held_out not in gaps_all:
        st.caption(f"The mean over sources is drawn for accuracy and F1; {name} is shown per source.")
    else:
        values = mean_over_sources(gaps_all, held_out, "mean over attributes")
        if not values.empty:
            st.plotly_chart(step_lines_figure(
                values, value="value", series="run", names=mean_names,
                title=f"Held-out {name} per step, {mean_label} ({split})", y_title=HELD_OUT_METRICS[held_out],
                y_range=(0, 1.02)), width="stretch")
    c1, c2 = st.columns(2)
    attributes = [a for a in dict.fromkeys(gaps_all["attribute"]) if a != "mean over attributes"]
    attributes += ["mean over attributes"] if "mean over attributes" in set(gaps_all["attribute"]) else []
    attribute = c1.selectbox("Attribute", attributes, key="training_attribute", format_func=attribute_label)
    gap = c2.selectbox("Fairness statistic", [g for g in GAPS if g in gaps_all], format_func=GAPS.get,
                       key="training_gap")
    in_attribute = gaps_all[gaps_all["attribute"] == attribute].dropna(subset=[gap])
    y_range = (0, 1.02) if gap in FRACTIONS else None
    if view == "per_source":
        block = in_attribute[~in_attribute["source"].isin(["ALL", MEAN_OVER_SOURCES])]
        evaluated = list(dict.fromkeys(s for run in selected for s in sources[run.name]))
        st.plotly_chart(source_step_lines_figure(
            block, value=gap, series="run", title=f"{GAPS[gap]} over training, per source: "
            f"{attribute_label(attribute)} ({split})", y_title=GAPS[gap], y_range=y_range,
            source_names=source_label, panels=evaluated), width="stretch")
        undefined = [source_label(s) for s in evaluated if s not in set(block["source"])]
        if undefined:
            st.caption(f"{GAPS[gap].split(' (')[0]} is not defined for {', '.join(undefined)} at any step (e.g. "
                       "no positive answers, so no false discovery rate, or no group of this attribute there).")
    else:
        block = mean_over_sources(gaps_all, gap, attribute)
        st.plotly_chart(step_lines_figure(
            block, value="value", series="run", names=mean_names, title=f"{GAPS[gap]} over training, {mean_label}: "
            f"{attribute_label(attribute)} ({split})", y_title=GAPS[gap], y_range=y_range), width="stretch")
        fewer = block.merge(pd.Series({run.name: len(sources[run.name]) for run in selected}, name="n_evaluated"),
                            left_on="run", right_index=True)
        if (fewer["n_sources"] < fewer["n_evaluated"]).any():
            st.caption(f"At some steps {GAPS[gap].split(' (')[0]} is undefined on a source (e.g. no positive "
                       "answers there): the mean at those steps is over the other sources, as in the audit.")
    _composition(selected)

    st.markdown("**Per-group held-out metrics of one run**")
    d1, d2, d3, d4 = st.columns(4)
    run_name = d1.selectbox("Run", [run.name for run in selected], key="training_group_run")
    group_sources = sorted(curves_all["source"].dropna().unique(), key=lambda s: (s == "ALL", s))
    group_source = d2.selectbox("Source ", group_sources, key="training_group_source", format_func=_source_words) \
        if group_sources else None
    in_source = curves_all[(curves_all["run"] == run_name) & (curves_all["source"] == group_source)]
    group_attributes = [a for a in dict.fromkeys(in_source["attribute"]) if a != "overall"]
    group_attribute = d3.selectbox("Attribute ", group_attributes, key="training_group_attribute",
                                   format_func=attribute_label) if group_attributes else None
    metric = d4.selectbox("Metric", list(GROUP_METRICS), key="training_metric", format_func=GROUP_METRICS.get)
    per_group = in_source[(in_source["metric"] == metric)
                          & in_source["attribute"].isin([group_attribute, "overall"])].dropna(subset=["value"])
    if not per_group.empty:
        series = per_group["group"].where(per_group["attribute"] != "overall", "all groups")
        st.plotly_chart(step_lines_figure(
            per_group.assign(series=series), value="value", series="series",
            names=lambda g: g if g == "all groups" else group_label(g),
            title=f"{GROUP_METRICS[metric].split(' (')[0]} per {attribute_label(group_attribute)} group: {run_name}, "
                  f"{_source_words(group_source)}", y_title=GROUP_METRICS[metric], y_range=(0, 1.02)),
            width="stretch")
    weights = trains_all[trains_all["run"] == run_name]
    weight_columns = [c for c in weights.columns if str(c).startswith("fairgrpo/weight/")]
    if weight_columns:
        long = weights.melt(id_vars=["step"], value_vars=weight_columns, var_name="group", value_name="weight")
        long = long.dropna(subset=["weight"]).assign(group=lambda f: f["group"].str.replace("fairgrpo/weight/", ""))
        st.plotly_chart(step_lines_figure(long, value="weight", series="group", names=_domain_group_words,
                                          title=f"FairGRPO weight 1/(T_d T_g) per domain/group: {run_name}",
                                          y_title="Weight (multiplies the advantage; 1: no change)"),
                        width="stretch")
    if not signal_panel(weights, run_name) and any(run.shipped for run in selected if run.name == run_name):
        st.caption("This shipped record predates the per-source advantage log: runs trained now record where "
                   "the learning signal went, per source.")
    finished = [run for run in selected if run.finished and (run.path / "evaluation" / "run.json").is_file()]
    if finished:
        target = st.selectbox("Audit a finished run's test evaluation", [run.name for run in finished],
                              key="training_audit_run")
        if st.button("Open it on the Fairness audit page", key="training_audit", icon=":material/balance:"):
            st.session_state["audit_preselect_run"] = f"{target}/evaluation"
            st.switch_page("pages/fairness_audit.py")


def _source_words(source: object) -> str:
    return "all sources pooled" if source == "ALL" else source_label(source)


def _domain_group_words(key: object) -> str:
    """A FairGRPO weight's ``<source>/<group>`` in words: "dermoscopy: female, age 26-50"."""
    source, _, group = str(key).partition("/")
    return f"{source_label(source)}: {group_label(group)}" if group else source_label(source)


def signal_panel(train: pd.DataFrame, run_name: str) -> bool:
    """Where one run's learning signal went, per source: its share of the absolute advantage used in the loss
    over steps, and the share of its prompts whose rollouts all got the same reward (no gradient at all); False
    when the run's record has no such log."""
    share_columns = [c for c in train.columns if str(c).startswith("advantage_share/")]
    if not share_columns:
        return False
    long = train.melt(id_vars=["step"], value_vars=share_columns, var_name="source", value_name="share")
    long = long.dropna(subset=["share"]).assign(source=lambda f: f["source"].str.replace("advantage_share/", ""))
    # One batch of 8 prompts is a noisy draw of sources: the mean over the last 10 steps shows the trend.
    long = long.sort_values("step").assign(
        share=lambda f: f.groupby("source")["share"].transform(lambda s: s.rolling(10, min_periods=1).mean()))
    st.plotly_chart(step_lines_figure(long, value="share", series="source", names=source_label,
                                      title=f"Share of the absolute advantage per source (mean of 10 steps): "
                                      f"{run_name}", y_title="Share of |advantage| (0-1)", y_range=(0, 1.02)),
                    width="stretch")
    rows = []
    for column in share_columns:
        source = column.removeprefix("advantage_share/")
        zero = train.get(f"domain_zero_std/{source}")
        rows.append({"Source": source_label(source), SHARE_COLUMN: train[column].mean(),
                     ZERO_STD_COLUMN: None if zero is None else zero.mean()})
    st.dataframe(pd.DataFrame(rows).round(3), hide_index=True, width="stretch")
    st.caption("A source whose rollouts all agree (all right or all wrong) contributes no gradient, whatever "
               "weight FairGRPO gives it: a hotter rollout temperature or more rollouts per prompt give it some.")
    return True


st.title("Training")
st.markdown(
    "Train the sidebar's model with **FairGRPO** (renamed **EQPO** in the paper's v2; GRPO whose advantages are "
    "reweighted by group representation, difficulty and data source; groups without demographics are found by "
    "clustering) or one of the paper's baselines (GRPO, RLOO, REINFORCE++, resampling, Group DRO), and watch "
    "fairness over training: per-group accuracy on a held-out split and the gaps between groups, step by step, "
    "across methods."
)
try:
    dataset = current_dataset()
except Exception as error:  # noqa: BLE001 - a bad dataset is shown, never fatal
    show_input_error(error)
    st.stop()
st.caption(f"Model `{current_model_dir()}` on dataset **{dataset.name}** (its train split; held-out curves on "
           "its val split; the final model is evaluated on its test split).")
for title, panel in (("Start runs", train_form), ("Jobs", jobs), ("Training dynamics",
                                                                       lambda: dynamics_panel(dataset))):
    st.subheader(title)
    try:
        panel()
    except Exception as error:  # noqa: BLE001 - bad input must never take the page down
        show_input_error(error)
