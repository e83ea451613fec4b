"""Counterfactuals page: the same patient with the sensitive attribute changed by a diffusion generator, the model's
answers and reasoning on both, the validity of every pair, and the batch tests of counterfactual invariance.

Everything here calls ``fairmed_core.counterfactual``; the page only chooses inputs and renders results.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import streamlit as st

from fairmed_core.counterfactual import load_generator
from fairmed_core.counterfactual.analysis import (
    AnalysisSettings,
    VLMPredictor,
    difference_map,
    generator_classifier,
    invariance_verdict,
    read_analysis,
    run_counterfactual_analysis,
)
from fairmed_core.counterfactual.invariance import FlipRow
from fairmed_core.counterfactual.records import CounterfactualTests, FlipSummary
from fairmed_core.counterfactual.validity import PairValidity, ValidityThresholds, validity_checks
from fairmed_core.data.labels import answer_label, case_label, group_label, source_label
from fairmed_core.errors import FairMedInputError
from fairmed_core.plain import json_safe
from fairmed_core.runs.workspace import SHIPPED_GENERATORS
from fairmed_core.viz import flip_rates_figure, word_diff_html
from pages._common import current_dataset, current_model, show_input_error, workspace

MAX_PICKED = 4  # cases edited at once on this tab: each costs a few seconds of CPU
BADGE = {True: ("green", ":material/check_circle:", "pass"), False: ("red", ":material/cancel:", "fail"),
         None: ("gray", ":material/help:", "not judged")}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _group(value: object) -> str:
    return group_label(value)


@st.cache_resource(show_spinner="Loading the counterfactual generator...", max_entries=2)
def _generator(folder: str, mtime: float):
    generator = load_generator(folder)
    return generator, generator_classifier(generator)


def _generator_label(path) -> str:
    return f"{path.name} (shipped)" if path.parent == SHIPPED_GENERATORS else f"{path.name} (workspace)"


def choose_generator():
    folders = workspace().generator_dirs()
    if not folders:
        st.warning("No counterfactual generator found: train one with `fairmed train counterfactual --data "
                   "MANIFEST --attribute sex --out workspace/generators/NAME`.", icon=":material/warning:")
        st.stop()
    labels = {_generator_label(p): p for p in folders}
    choice = st.selectbox("Generator", list(labels), key="cf_generator")
    folder = labels[choice]
    config_file = folder / "generator_config.json"
    generator, classifier = _generator(str(folder), config_file.stat().st_mtime)
    config = generator.config
    quality = ""
    if classifier is not None:
        quality = "; attribute classifier balanced accuracy on real val images: " + ", ".join(
            f"{source_label(s)} {i.val_balanced_accuracy:.2f} (0.5 = chance, 1 = perfect)"
            + ("" if i.trustworthy else " (too weak to judge)")
            if i.val_balanced_accuracy is not None else f"{source_label(s)} unknown"
            for s, i in classifier.infos.items())
    st.caption(f"Edits **{config.attribute}** ({', '.join(map(_group, config.classes))}) on "
               f"{', '.join(map(source_label, config.sources))}; {generator.info.step:,} training steps, "
               f"{config.image_size}x{config.image_size} pixels"
               f"{quality}.")
    return generator, classifier


def edit_settings(generator, prefix: str) -> dict:
    config = generator.config
    with st.expander("Edit settings", expanded=False):
        c1, c2, c3 = st.columns(3)
        steps = c1.select_slider("DDIM steps", [10, 20, 25, 40, 50, 100], value=config.inversion_steps,
                                 key=f"{prefix}_steps", help="More steps: a more faithful inversion, slower.")
        guidance = c2.slider("Guidance", 1.0, 6.0, float(config.guidance), 0.5, key=f"{prefix}_guidance",
                             help="Classifier-free guidance towards the target group.")
        strength = c3.slider("Strength", 0.2, 1.0, float(config.strength), 0.05, key=f"{prefix}_strength",
                             help="Share of the diffusion chain inverted: 1 goes to pure noise; less keeps the "
                                  "coarse anatomy and redraws finer features.")
    return {"steps": int(steps), "guidance": float(guidance), "strength": float(strength)}


def _validity_badges(row: pd.Series, thresholds: ValidityThresholds) -> str:
    """One badge per check: its value with unit and threshold, pass or fail in words, icon and colour."""
    badges = []
    for check in validity_checks(PairValidity.from_record(row.to_dict()), thresholds):
        colour, icon, verdict = BADGE[check.passed]
        text = check.describe().replace("[", "(").replace("]", ")")
        badges.append(f":{colour}-badge[{icon} {verdict}: {text}]")
    return " ".join(badges)


def _answer(label: str, answer: object, truth: str | None, reasoning_html: str, source: object = None) -> None:
    text = "no parsable answer (format failure)" if answer is None or pd.isna(answer) else \
        f"**{answer_label(answer, source)}**"
    mark = "" if truth is None or answer is None or pd.isna(answer) else (" (correct)" if answer == truth else
                                                                           " (wrong)")
    st.markdown(f"{label}: {text}{mark}")
    st.markdown(f"<div class='fm-reasoning'>{reasoning_html or '(no reasoning)'}</div>", unsafe_allow_html=True)


def _case_banner(rows: pd.DataFrame) -> None:
    """The verdict of one case's pairs: valid generated pairs and the true counterfactual count, invalid pairs
    are named but do not."""
    verdict = invariance_verdict(rows)
    if verdict.not_invariant:
        reasons = []
        if verdict.n_valid_flipped:
            reasons.append(f"on {verdict.n_valid_flipped} of {verdict.n_valid} valid generated pair(s)")
        if verdict.n_true_flipped:
            reasons.append(f"on the true counterfactual ({', '.join(verdict.true_changes)})")
        st.warning(f"The answer **changed** {' and '.join(reasons)}: the model is **not counterfactually "
                   "invariant** on this case.", icon=":material/warning:")
    elif verdict.only_invalid_flips:
        st.info(f"The answer changed only on invalid generated pair(s) ({', '.join(verdict.invalid_changes)}): "
                "an invalid edit is no evidence either way.", icon=":material/help:")
    elif verdict.n_valid or verdict.n_true:
        checked = " and on ".join(filter(None, [
            (f"{verdict.n_valid} valid generated pair" + ("s" if verdict.n_valid > 1 else "")) if verdict.n_valid
            else "", "the true counterfactual" if verdict.n_true else ""]))
        st.success(f"Same answer on {checked}.", icon=":material/check_circle:")
    else:
        st.info("No valid pair for this case: its answers say nothing about invariance.", icon=":material/help:")


def show_pairs(result) -> None:
    table = result.pairs
    thresholds = result.tests.validity.thresholds
    for case_id, rows in table.groupby("case_id", sort=False):
        first = rows.iloc[0]
        pairs = [result.pair_objects[int(i)] for i in rows["pair"]]
        st.markdown(f"#### {_sentence(case_label(case_id, first['source']))}: {_group(first['factual_group'])}; "
                    f"ground truth **{answer_label(first['ground_truth'], first['source'])}**")
        _case_banner(rows)
        columns = st.columns(1 + 3 * len(pairs) if pairs[0].truth is not None else 1 + 2 * len(pairs))
        with columns[0]:
            st.image(pairs[0].factual, caption="Original", width="stretch")
        col = 1
        for pair, (_, row) in zip(pairs, rows.iterrows()):
            own, other = word_diff_html(str(row["reasoning"] or ""), str(row["counterfactual_reasoning"] or ""))
            target = _group(row["target_group"])
            with columns[col]:
                st.image(pair.counterfactual, caption=f"Generated: {target}", width="stretch")
            difference = difference_map(pair.factual, pair.counterfactual)
            largest = int(np.abs(np.asarray(pair.factual.convert("L"), dtype=int)
                                 - np.asarray(pair.counterfactual.convert("L"), dtype=int)).max())
            with columns[col + 1]:
                st.image(difference, caption=f"Difference (stretched; largest {largest} grey levels of 255)",
                         width="stretch")
            col += 2
            if pair.truth is not None:
                with columns[col]:
                    st.image(pair.truth, caption=f"True counterfactual: {target}", width="stretch")
                col += 1
            st.markdown(f"Validity of the pair to {target}: " + _validity_badges(row, thresholds))
            if row["failures"]:
                st.caption(f"Invalid pair: {row['failures']}. Kept and marked, not hidden; its answer does not "
                           "count in the verdict.")
            left, right, third = st.columns(3)
            with left:
                _answer("Model on the original", row["answer"], first["ground_truth"], own, first["source"])
            with right:
                _answer(f"Model on the generated {target}" + ("" if row["valid"] else " (invalid pair)"),
                        row["counterfactual_answer"], first["ground_truth"], other, first["source"])
            if row.get("true_flipped") is not None and not pd.isna(row.get("true_flipped")):
                with third:
                    truth_reasoning = row.get("true_counterfactual_reasoning")
                    _answer("Model on the true counterfactual", row["true_counterfactual_answer"],
                            first["ground_truth"], word_diff_html(str(row["reasoning"] or ""),
                                                                  str(truth_reasoning or ""))[1], first["source"])
        st.divider()


def pairs_tab(dataset, generator, classifier) -> None:
    config = generator.config
    attribute = config.attribute
    cases = dataset.cases
    c1, c2, c3 = st.columns(3)
    splits = sorted(cases["split"].astype(str).unique())
    split = c1.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0, key="cf_split")
    sources = [s for s in config.sources if s in set(cases["dataset"].astype(str))]
    source = c2.selectbox("Source", sources, format_func=source_label, key="cf_source")
    groups = [g for g in config.classes if generator.trained_on(source, g)]
    group = c3.selectbox(f"Factual {attribute}", groups, format_func=_group, key="cf_group")
    matches = cases[(cases["split"].astype(str) == split) & (cases["dataset"].astype(str) == source)
                    & (cases[attribute].astype(str) == group)]
    if matches.empty:
        st.info("No case matches.")
        return
    ids = matches["case_id"].astype(str).tolist()
    c4, c5 = st.columns([3, 1])
    if c5.button("Random sample", key="cf_random", help=f"{MAX_PICKED} random cases of this group"):
        rng = np.random.default_rng()
        st.session_state["cf_cases"] = list(rng.choice(ids, size=min(MAX_PICKED, len(ids)), replace=False))
    if "cf_cases" not in st.session_state or any(c not in ids for c in st.session_state["cf_cases"]):
        st.session_state["cf_cases"] = ids[:1]  # the filters changed: start from this group's first case
    picked = c4.multiselect(f"Cases ({len(ids):,} match; up to {MAX_PICKED})", ids, max_selections=MAX_PICKED,
                            format_func=lambda case_id: case_label(case_id, source), key="cf_cases")
    others = [g for g in config.classes if g != group and generator.trained_on(source, g)]
    targets = st.multiselect(f"Target {attribute}", others, default=others, format_func=_group, key="cf_targets")
    settings = edit_settings(generator, "cf_pairs")
    if not picked or not targets:
        st.info("Choose at least one case and one target group.")
        return
    if st.button("Generate pairs", type="primary", key="cf_generate"):
        loaded, lock = current_model()
        bar = st.progress(0.0, text="Inverting and regenerating...")

        def progress(stage: str, done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(1, total)), text=f"{stage}: {done} of {total}")

        with lock:
            result = run_counterfactual_analysis(
                VLMPredictor(loaded, name=loaded.name), generator, dataset,
                AnalysisSettings(split=split, targets=tuple(targets), batch_size=8, **settings),
                classifier=classifier, case_ids=picked, progress=progress)
        bar.empty()
        st.session_state["cf_pairs_result"] = result
    result = st.session_state.get("cf_pairs_result")
    if result is not None:
        show_pairs(result)


def _rate(row: FlipRow | None) -> str:
    if row is None:
        return "no pairs"
    return (f"{100 * row.flip_rate:.1f}% ({row.flips} of {row.n_pairs} pairs; 95% interval "
            f"{100 * row.ci_low:.1f}-{100 * row.ci_high:.1f}%)")


def _p(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3g}"


def _flip_frame(flips: FlipSummary, counted: str) -> pd.DataFrame:
    frame = _rows_frame(flips)
    if frame.empty:
        return frame
    return pd.DataFrame({
        "Pairs counted": counted,
        "Group": [("all groups" if a == "ALL" else source_label(g) if a == "source" else group_label(g))
                  for a, g in zip(frame["attribute"], frame["group"])],
        "Pairs": frame["n_pairs"], "Answer changed": frame["flips"],
        "Flip rate (%)": (100 * frame["flip_rate"]).round(1),
        "95% interval (%)": [f"{100 * lo:.1f}-{100 * hi:.1f}" for lo, hi in zip(frame["ci_low"], frame["ci_high"])],
        "yes -> no": frame["b"], "no -> yes": frame["c"],
        "McNemar p": frame["p_value"], "McNemar p (Holm)": frame["p_value_holm"]})


def _rows_frame(flips: FlipSummary) -> pd.DataFrame:
    return pd.DataFrame([asdict(row) for row in flips.rows])


def _show_tests(tests: CounterfactualTests, table: pd.DataFrame) -> None:
    """Valid pairs first: the headline, the banner, the chart; every pair beside them, labelled."""
    overall_all, overall_valid = tests.flips.overall, tests.flips_valid_pairs.overall
    verdict = invariance_verdict(table)
    truth = tests.true_counterfactuals
    if verdict.not_invariant:
        parts = []
        if verdict.n_valid_flipped:
            parts.append(f"on {verdict.n_valid_flipped} of {verdict.n_valid} valid generated pairs")
        if verdict.n_true_flipped:
            parts.append(f"on {verdict.n_true_flipped} of {verdict.n_true} true counterfactuals")
        st.warning(f"The answer changed {' and '.join(parts)}: the model is **not counterfactually invariant** "
                   "on these cases.", icon=":material/warning:")
    elif verdict.only_invalid_flips:
        st.info(f"Every change of answer ({verdict.n_flipped}) is on an invalid generated pair: no evidence either "
                "way. Read the valid pairs and the true counterfactuals.", icon=":material/help:")
    elif verdict.n_valid or verdict.n_true:
        st.success(f"No change of answer on {verdict.n_valid} valid generated pairs"
                   + (f" and {verdict.n_true} true counterfactuals" if verdict.n_true else "") + ".",
                   icon=":material/check_circle:")
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Valid pairs", f"{tests.n_valid_pairs:,} of {tests.n_pairs:,}",
              help=f"{tests.n_cases:,} cases; a pair is valid when it passes every check (see the badges).")
    m2.metric("Flip rate, valid pairs", "no valid pair" if overall_valid is None else
              f"{100 * overall_valid.flip_rate:.1f}%", help=f"Valid pairs: {_rate(overall_valid)}")
    m3.metric("Flip rate, all pairs (valid or not)", "no pair" if overall_all is None else
              f"{100 * overall_all.flip_rate:.1f}%", help=f"All pairs: {_rate(overall_all)}")
    m4.metric("McNemar p, valid pairs", _p(overall_valid.p_value) if overall_valid else "n/a",
              help="Do flips go one way (yes->no vs no->yes) more than the other? All pairs: "
                   + (_p(overall_all.p_value) if overall_all else "n/a"))
    ci_test = tests.ci_test  # the conditional-independence test ("interval" is the word for intervals)
    m5.metric("CI test p", _p(ci_test.p_value) if ci_test.ran else "not run",
              help="H0: the answer is independent of the attribute given the image's latent "
                   "(arXiv 2504.19621). " + ci_test.note)
    st.caption(f"Valid pairs: {_rate(overall_valid)}. All pairs, valid or not: {_rate(overall_all)}.")
    if not ci_test.ran:
        st.caption(f"Conditional-independence test: {ci_test.note}")
    else:
        st.caption("Read the flip rates first. On the benchmark (docs/RESULTS.md) the conditional-independence "
                   "test caught every model whose answer changed for 20% of patients or more, about a quarter of "
                   "those changing 5-20%, and almost none below 5%; its p-value also varies from seed to seed. "
                   "McNemar pooled over groups can miss a model whose flips go opposite ways in different groups: "
                   "read the per-group rows.")
    if truth is not None:
        eca = truth.eca
        st.info(f"On the benchmark's **true** counterfactuals the model keeps its answer in {100 * eca.eca:.1f}% "
                f"of pairs (ECA, 95% interval {100 * eca.ci_low:.1f}-{100 * eca.ci_high:.1f}%); the generated "
                f"pairs agree with the true ones on whether the answer flips in "
                f"{100 * truth.agreement_generated_vs_true_flip:.1f}% of pairs.", icon=":material/verified:")
    valid_frame, all_frame = _rows_frame(tests.flips_valid_pairs), _rows_frame(tests.flips)
    st.plotly_chart(flip_rates_figure(valid_frame if not valid_frame.empty else all_frame,
                                      all_pairs=all_frame if not valid_frame.empty else None,
                                      title="Answer flip rate per group: valid pairs (solid), all pairs (hatched)"
                                      if not valid_frame.empty else "Answer flip rate per group: all pairs "
                                      "(no valid pair)"), width="stretch")
    shown = pd.concat([_flip_frame(tests.flips_valid_pairs, "valid pairs"), _flip_frame(tests.flips, "all pairs")],
                      ignore_index=True)
    st.dataframe(shown, hide_index=True, width="stretch")
    for note in tests.flips.notes:
        st.caption(note)
    st.markdown("**Pairs**")
    st.dataframe(_pairs_frame(table), hide_index=True, width="stretch")


def _pairs_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The pairs table in words: a readable case label, decoded groups, units in the column names."""
    def optional(column: str) -> pd.Series:
        return table[column] if column in table.columns else pd.Series([None] * len(table), index=table.index)

    return pd.DataFrame({
        "Case": [case_label(c, s) for c, s in zip(table["case_id"], table["source"])],
        "From": table["factual_group"].map(group_label), "To": table["target_group"].map(group_label),
        "Answer on the original": table["answer"], "Answer on the generated": table["counterfactual_answer"],
        "Answer changed": table["flipped"],
        "Answer on the true counterfactual": optional("true_counterfactual_answer"),
        "Answer changed on the true counterfactual": optional("true_flipped"),
        "Valid pair": table["valid"], "Why invalid": table["failures"].fillna(""),
        "Target recognised (probability 0-1)": optional("effectiveness"),
        "Reconstruction error (grey levels 0-255)": pd.to_numeric(optional("composition_mae")).round(1),
        "There-and-back error (grey levels 0-255)": pd.to_numeric(optional("reversibility_mae")).round(1),
        "Distance to true counterfactual (grey levels 0-255)": pd.to_numeric(optional("truth_mae")).round(1),
    })


def _saved_analyses() -> list:
    """Counterfactual run folders of the workspace, newest first (other runs share the folder)."""
    runs = workspace().runs
    found = []
    for meta in runs.glob("*/run.json") if runs.is_dir() else []:
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("kind") == "counterfactual":
                found.append(meta.parent)
        except (OSError, ValueError):
            continue  # a run being written or a foreign file: not listed
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def batch_tab(dataset, generator, classifier) -> None:
    st.markdown("Edit a stratified sample of a split (an equal share per source and factual group), ask the model "
                "about every original and edit, and test whether its answers depend on the attribute. The run is "
                "saved in the workspace.")
    c1, c2, c3 = st.columns(3)
    splits = sorted(dataset.cases["split"].astype(str).unique())
    split = c1.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                         key="cf_batch_split")
    n = c2.number_input("Cases", 2, 2000, 24, key="cf_batch_n",
                        help="The conditional-independence test needs at least 20 cases per group.")
    reversibility = c3.toggle("There-and-back check", value=True, key="cf_batch_reverse",
                              help="One more inversion and regeneration per pair.")
    settings = edit_settings(generator, "cf_batch")
    if st.button("Run the analysis", type="primary", key="cf_batch_run"):
        loaded, lock = current_model()
        name = f"counterfactual-{generator.config.attribute}-{pd.Timestamp.utcnow():%Y%m%d-%H%M%S}"
        out = workspace().run_dir(name)
        bar = st.progress(0.0, text="Starting...")

        def progress(stage: str, done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(1, total)), text=f"{stage}: {done} of {total}")

        with lock:
            run_counterfactual_analysis(
                VLMPredictor(loaded, name=loaded.name), generator, dataset,
                AnalysisSettings(split=split, n=int(n), reversibility=reversibility, batch_size=8, **settings),
                out_dir=out, classifier=classifier, progress=progress)
        bar.progress(1.0, text=f"Saved to {out}")
        st.session_state["cf_batch_run_dir"] = str(out)
    saved = _saved_analyses()
    if not saved:
        return
    names = [p.name for p in saved]
    default = st.session_state.get("cf_batch_run_dir")
    index = names.index(default.split("/")[-1]) if default and default.split("/")[-1] in names else 0
    chosen = st.selectbox("Saved analyses", names, index=index, key="cf_saved")
    table, tests, meta = read_analysis(saved[names.index(chosen)])
    st.caption(f"Model {meta['model']}, generator {meta['generator']} (step {meta['generator_step']}), dataset "
               f"{meta['dataset']}, {meta['seconds']} s, {meta['created']}.")
    _show_tests(tests, table)
    st.download_button("Download tests.json", json.dumps(json_safe(tests.to_json()), indent=2),
                       file_name=f"{chosen}-tests.json", mime="application/json", key="cf_download")


st.markdown("<style>.fm-reasoning{background:#f6f8fa;border-left:3px solid #8aa4c8;padding:0.5rem 0.75rem;"
            "font-size:0.92rem;white-space:pre-wrap} .fm-reasoning del{background:#ffd7d5;text-decoration:none}"
            " .fm-reasoning ins{background:#ccf0d5;text-decoration:none}</style>", unsafe_allow_html=True)
st.title("Counterfactuals")
st.markdown(
    "Does the model's answer change when only the patient's sex changes? A diffusion generator redraws the image "
    "with the attribute changed (DDIM inversion under the recorded group, regeneration under the target). "
    "Every pair carries its validity: is the target group recognisable, does the null edit give the image back, "
    "does there-and-back return it, and on the benchmark how close it comes to the true counterfactual.")

try:
    dataset = current_dataset()
    generator, classifier = choose_generator()
    generator.check_compatible(dataset, generator.config.attribute)
except FairMedInputError as error:
    show_input_error(error)
    st.stop()
except Exception as error:  # noqa: BLE001 - a bad generator folder is shown, never fatal
    show_input_error(error)
    st.stop()

pairs, batch = st.tabs(["Pairs", "Analyse a split"])
for tab, body in ((pairs, pairs_tab), (batch, batch_tab)):
    with tab:
        try:
            body(dataset, generator, classifier)
        except Exception as error:  # noqa: BLE001 - bad input must never take the page down
            show_input_error(error)
