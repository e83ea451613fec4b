"""Inference page: run the chosen model on a benchmark case (beside its true counterfactual) or on an uploaded
image, and batch-evaluate a split into a run the Fairness audit page reads.

The model is loaded once per process and shared by every browser session (``pages._common.current_model``);
generation holds its lock. Everything the page computes comes from ``fairmed_core``.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import streamlit as st

from fairmed_core.data.uploads import MAX_UPLOAD_BYTES, read_uploaded_image
from fairmed_core.data.labels import answer_label, attribute_label, case_label, group_label, source_label
from fairmed_core.data.sampling import DEFAULT_SAMPLE_SEED
from fairmed_core.errors import FairMedInputError
from fairmed_core.jobs.evaluation import run_evaluation
from fairmed_core.models.answer_changes import AnswerChanges, find_answer_changes, read_answer_changes
from fairmed_core.models.case_review import CaseReview, counterfactual_choices, review_case
from fairmed_core.models.generation import Generation, GenerationOptions, generate_answers
from fairmed_core.models.image_novelty import ImageNovelty, fit_novelty_reference, image_novelty
from fairmed_core.runs.eval_store import new_run_name
from fairmed_core.runs.workspace import shipped_model_dirs
from pages._common import current_dataset, current_manifest, current_model, show_input_error, workspace

ANY = "(any)"
NO_COUNTERFACTUAL = "(none)"
ATTRIBUTE_NAMES = {"sex": "Sex", "age_group": "Age group", "skin_tone": "Skin tone"}
CASES_LISTED = 300  # the case picker lists at most this many matches (filters narrow it)


def _group_name(group: object) -> str:
    return group_label(group)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _change_words(change) -> str:
    """ "sex female -> male" for a ``CounterfactualChange``. """
    return f"{attribute_label(change.attribute)} {group_label(change.factual)} -> {group_label(change.counterfactual)}"


def _decoding_options(prefix: str, *, batch: bool = False) -> GenerationOptions:
    """Decoding settings in an expander; greedy by default, as an audit should be reproducible. The defaults are
    GenerationOptions' own, so this page decodes as ``fairmed evaluate`` does."""
    default = GenerationOptions()
    with st.expander("Decoding", expanded=False):
        c1, c2, c3 = st.columns(3)
        sample = c1.toggle("Sample (instead of greedy)", value=default.do_sample, key=f"{prefix}_sample")
        temperature = c2.slider("Temperature", 0.1, 2.0, default.temperature, 0.1, key=f"{prefix}_temperature",
                                disabled=not sample)
        seed = c2.number_input("Seed", 0, 2**31 - 1, default.seed, key=f"{prefix}_seed", disabled=not sample)
        max_new_tokens = c3.number_input("Max new tokens", 8, 1024, default.max_new_tokens,
                                         key=f"{prefix}_max_new_tokens")
        batch_size = c3.number_input("Batch size", 1, 256, default.batch_size, key=f"{prefix}_batch",
                                     disabled=not batch)
    return GenerationOptions(do_sample=sample, temperature=float(temperature), seed=int(seed),
                             max_new_tokens=int(max_new_tokens), batch_size=int(batch_size))


def _is_shipped(loaded) -> bool:
    return Path(loaded.directory).resolve() in {p.resolve() for p in shipped_model_dirs()}


def _scope_note() -> None:
    """What an answer is and is not, beside every answer."""
    loaded, _ = current_model()
    if _is_shipped(loaded):
        st.caption(":material/science: **Research tool, synthetic-data model, not a medical device.** This shipped "
                   "model was trained on synthetic images only: its answer is not a diagnosis.")
    else:
        st.caption(":material/science: **Research tool, not a medical device.** Its answer is not a diagnosis.")


def _answer_card(title: str, generation: Generation, truth: str | None, source: object = None) -> None:
    """The parsed answer (right or wrong against ``truth``; the finding named for the benchmark's sources), then
    the reasoning and the raw completion."""
    st.markdown(f"**{title}**")
    _scope_note()
    answer = answer_label(generation.answer, source)
    if not generation.format_ok:
        st.error(f"Format failure: {generation.failure}. Scored as a wrong answer.", icon=":material/help:")
    elif truth is None:
        st.info(f"Answer: **{answer}**", icon=":material/chat:")
    elif generation.answer == truth:
        st.success(f"Answer: **{answer}** (correct)", icon=":material/check_circle:")
    else:
        st.error(f"Answer: **{answer}** (wrong; the ground truth is {answer_label(truth, source)})",
                 icon=":material/cancel:")
    st.markdown("Reasoning")
    reasoning = generation.reasoning.strip() or "(no reasoning in think tags)"
    st.markdown(f"<div class='fm-reasoning'>{html.escape(reasoning)}</div>", unsafe_allow_html=True)
    with st.expander("Raw completion"):
        st.code(generation.completion or "(empty)", language=None, wrap_lines=True)
    st.caption(f"{generation.new_tokens} new tokens, {generation.generation_time_s:.2f} s to generate")


def _filtered_cases(dataset) -> pd.DataFrame:
    """Filters (split, source, groups) and the matching cases."""
    cases = dataset.cases
    columns = st.columns(2 + len(dataset.attributes))
    splits = sorted(cases["split"].astype(str).unique())
    split = columns[0].selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                                 key="inference_split")
    source = columns[1].selectbox("Source", [ANY, *dataset.sources], key="inference_source",
                                  format_func=lambda s: s if s == ANY else source_label(s))
    chosen = cases[cases["split"] == split]
    if source != ANY:
        chosen = chosen[chosen["dataset"] == source]
    for column, attribute in zip(columns[2:], dataset.attributes):
        groups = sorted(chosen[attribute].astype(str).unique())
        group = column.selectbox(ATTRIBUTE_NAMES.get(attribute, attribute), [ANY, *groups],
                                 format_func=lambda g: g if g == ANY else _group_name(g),
                                 key=f"inference_group_{attribute}")
        if group != ANY:
            chosen = chosen[chosen[attribute].astype(str) == group]
    return chosen


def _case_label(row: pd.Series, attributes: tuple[str, ...]) -> str:
    groups = ", ".join(group_label(row[a]) for a in attributes if str(row[a]) != "UNK")
    truth = answer_label(row["answer"], row["dataset"])
    return f"{case_label(row['case_id'], row['dataset'])} ({groups or 'demographics not recorded'}; truth: {truth})"


def _show_review(review: CaseReview, record: dict, attributes: tuple[str, ...]) -> None:
    source = record.get("dataset")
    if review.change is not None:
        if review.answer_changed:
            st.warning(f"The answer **changed** when only the {_change_words(review.change)} changed: the model is "
                       "**not counterfactually invariant** on this case.", icon=":material/warning:")
        else:
            st.success(f"Same answer with {_change_words(review.change)}.", icon=":material/check_circle:")
    left, right = st.columns(2)
    with left:
        st.image(review.image, caption=f"{_sentence(case_label(review.case_id, source))} as recorded", width=320)
        _answer_card("Model on the case", review.answer, review.truth, source)
    if review.counterfactual is not None and review.counterfactual_answer is not None:
        with right:
            st.image(review.counterfactual, width=320,
                     caption=f"True counterfactual: {_change_words(review.change)} "
                     f"({100 * review.changed_pixel_share:.0f}% of pixels may differ)")
            _answer_card("Model on the counterfactual", review.counterfactual_answer, review.truth, source)
    else:
        with right:
            st.markdown("**Case**")
            facts = {"Question": review.question.replace("<image>", "").strip(),
                     "Ground truth": answer_label(review.truth, source), "Source": source_label(source),
                     "Demographics (as recorded)": str(record.get("demo") or "(none recorded)")}
            facts.update({ATTRIBUTE_NAMES.get(a, a): _group_name(record[a]) for a in attributes})
            st.table(pd.DataFrame({"": list(facts.values())}, index=list(facts.keys())))


def _answer_changes(loaded, dataset) -> AnswerChanges | None:
    """The changed pairs shipped with the model (``evaluation/answer_changes.csv``) or found in this session."""
    found = st.session_state.get("inference_changes_found")
    if found is not None and found[0] == (loaded.name, dataset.name):
        return found[1]
    shipped = read_answer_changes(Path(loaded.directory) / "evaluation")
    return shipped if shipped is not None and shipped.dataset == dataset.name else None


def _open_changed_case(dataset, changes: AnswerChanges) -> None:
    """Callback of the list: set the filters, the case and the counterfactual, and run the model at once."""
    case_id = st.session_state.get("inference_change_pick")
    if not case_id:
        return
    record = dataset.cases[dataset.cases["case_id"].astype(str) == case_id].iloc[0]
    first = changes.pairs[changes.pairs["case_id"] == case_id].iloc[0]
    st.session_state["inference_split"] = str(record["split"])
    st.session_state["inference_source"] = str(record["dataset"])
    for attribute in dataset.attributes:  # the case's own groups, so the case list is short and holds it
        st.session_state[f"inference_group_{attribute}"] = str(record[attribute])
    st.session_state["inference_case"] = case_id
    st.session_state["inference_cf_attribute"] = str(first["attribute"])
    st.session_state["inference_cf_group"] = str(first["counterfactual_group"])
    st.session_state["inference_autorun"] = True


def _change_text(pair) -> str:
    return (f"{attribute_label(pair['attribute'])} {group_label(pair['factual_group'])} -> "
            f"{group_label(pair['counterfactual_group'])}: {pair['answer']} -> {pair['counterfactual_answer']}")


def answer_changes_list(dataset) -> None:
    """Benchmark cases where the model's answer changes on the true counterfactual, most changes first;
    choosing one opens it below with the model already run."""
    if not any(counterfactual_choices(r) for r in dataset.cases.head(5).to_dict(orient="records")):
        return  # not the synthetic benchmark: no true counterfactuals
    loaded, lock = current_model()
    changes = _answer_changes(loaded, dataset)
    with st.expander("Cases where the answer changes on the true counterfactual", expanded=True):
        if changes is None:
            st.caption(f"Nothing stored for {loaded.name}: ask it about a stratified sample of 120 test cases and "
                       "all their true counterfactuals (about a minute on a CPU for a tiny model).")
            if st.button("Find cases where the answer changes", key="inference_find_changes"):
                bar = st.progress(0.0, text="Asking the model...")
                with lock:
                    found = find_answer_changes(loaded, dataset, n=120, progress=lambda d, t: bar.progress(
                        d / t, text=f"{d:,} of {t:,} images answered"))
                bar.empty()
                st.session_state["inference_changes_found"] = ((loaded.name, dataset.name), found)
                changes = found
            else:
                return
        known = set(dataset.cases["case_id"].astype(str))
        cases = changes.cases[changes.cases["case_id"].isin(known)]
        per_attribute = "; ".join(
            f"{attribute_label(a)} {changes.changed_per_attribute.get(a, 0)} of {n} "
            f"({100 * changes.changed_per_attribute.get(a, 0) / n:.1f}%)"
            for a, n in changes.pairs_per_attribute.items() if n)
        st.caption(f"{changes.model}, greedy decoding, on a stratified sample of {changes.n_cases:,} {changes.split} "
                   f"cases: the answer changed on {len(changes.pairs):,} of {changes.n_pairs:,} true counterfactual "
                   f"pairs ({100 * len(changes.pairs) / max(1, changes.n_pairs):.1f}%; {per_attribute}), in "
                   f"{len(cases):,} cases, listed with the most changes first.")
        if cases.empty:
            st.success("No case in the sample changes its answer on a true counterfactual.",
                       icon=":material/check_circle:")
            return
        by_case = {cid: rows for cid, rows in changes.pairs.groupby("case_id", sort=False)}

        def describe(case_id: str) -> str:
            if not case_id:
                return "(choose a case to open it below)"
            rows = by_case[case_id]
            return (f"{case_label(case_id, rows.iloc[0]['source'])}: "
                    + "; ".join(_change_text(r) for _, r in rows.iterrows()))

        st.selectbox("Open a case where the answer changes", ["", *cases["case_id"]], format_func=describe,
                     key="inference_change_pick", on_change=_open_changed_case, args=(dataset, changes),
                     help="Opens the case below with its first changed counterfactual and runs the model on both.")


def benchmark_case_tab(dataset) -> None:
    answer_changes_list(dataset)
    chosen = _filtered_cases(dataset)
    if chosen.empty:
        st.info("No case matches these filters.")
        return
    shown = chosen.head(CASES_LISTED)
    labels = {str(row["case_id"]): _case_label(row, dataset.attributes) for _, row in shown.iterrows()}
    st.caption(f"{len(chosen):,} cases match" + (f"; the first {CASES_LISTED} are listed." if len(chosen) >
                                                  CASES_LISTED else "."))
    case_id = st.selectbox("Case", list(labels), format_func=labels.get, key="inference_case")
    record = chosen[chosen["case_id"].astype(str) == case_id].iloc[0].to_dict()

    choices = counterfactual_choices(record)
    change = None
    if choices:
        c1, c2 = st.columns(2)
        attribute = c1.selectbox("Counterfactual: change", [*choices, NO_COUNTERFACTUAL],
                                 format_func=lambda a: ATTRIBUTE_NAMES.get(a, a), key="inference_cf_attribute",
                                 help="The benchmark redraws the same latent patient with one attribute changed "
                                 "and nothing else: a true counterfactual.")
        if attribute != NO_COUNTERFACTUAL:
            group = c2.selectbox("to", choices[attribute], format_func=_group_name, key="inference_cf_group")
            change = (attribute, group)
    else:
        st.caption("This dataset has no latent patients, so no true counterfactuals (the synthetic benchmark has).")
    options = _decoding_options("inference_case")

    key = ("case", record["case_id"], change, options)
    autorun = st.session_state.pop("inference_autorun", False)  # a case opened from the list runs at once
    if st.button("Run the model on this case", type="primary", key="inference_run_case") or autorun:
        loaded, lock = current_model()
        with st.spinner("Generating..."), lock:
            review = review_case(loaded, record, dataset.load_image(record["case_id"]), change=change,
                                 options=options, choices=dataset.label_values)
        st.session_state["inference_case_result"] = (key, review)
    stored = st.session_state.get("inference_case_result")
    if stored is None or stored[0] != key:
        st.caption("Choose a case and press the button: the model's reasoning and answer appear here.")
        return
    _show_review(stored[1], record, dataset.attributes)


def upload_tab(dataset) -> None:
    st.markdown(f"PNG, JPEG or DICOM, at most {MAX_UPLOAD_BYTES // 2**20} MB. 16-bit, transparent and "
                "multi-frame images are converted (each conversion is listed); DICOM patient data is never read "
                "out or shown.")
    upload = st.file_uploader("Image", key="inference_upload",
                              help="The format is read from the file's content, not its name.")
    questions = {f"as in {source_label(source)}":
                 str(dataset.cases.loc[dataset.cases["dataset"] == source, "problem"].iloc[0])
                 for source in dataset.sources}
    template = st.selectbox("Question", [*questions, "write my own"], key="inference_upload_template")
    default = questions.get(template, "<image> ")
    question = st.text_area("Question text (<image> marks where the image goes)", value=default,
                            key=f"inference_upload_question_{template}")
    options = _decoding_options("inference_upload")
    if upload is None:
        st.info("Upload an image to ask the model about it.")
        return
    try:
        uploaded = read_uploaded_image(upload.getvalue(), upload.name)
    except FairMedInputError as error:
        show_input_error(error)
        return
    left, right = st.columns(2)
    with left:
        st.image(uploaded.image, caption=f"{uploaded.filename} ({uploaded.file_format}, "
                 f"{uploaded.original_size[0]}x{uploaded.original_size[1]}"
                 f"{', modality ' + uploaded.modality if uploaded.modality else ''})", width=320)
        for note in uploaded.notes:
            st.caption(f"Converted: {note}")
    key = ("upload", upload.file_id, question, options)
    if right.button("Run the model on this image", type="primary", key="inference_run_upload"):
        loaded, lock = current_model()
        try:
            reference = _novelty_reference(loaded, lock, dataset)
            with st.spinner("Generating..."), lock:
                novelty = None if reference is None else image_novelty(loaded, reference, [uploaded.image])[0]
                generation = generate_answers(loaded, [question], [[uploaded.image]], options)[0]
        except FairMedInputError as error:
            with right:
                show_input_error(error)
            return
        st.session_state["inference_upload_result"] = (key, generation, novelty)
    stored = st.session_state.get("inference_upload_result")
    if stored is not None and stored[0] == key:
        with right:
            _novelty_notice(stored[2], dataset)
            _answer_card("Model on the uploaded image", stored[1], None)
            st.caption("No ground truth for an upload: read the reasoning, not a score.")


@st.cache_resource(show_spinner="Calibrating the out-of-distribution check on benchmark images (once per model)...",
                   max_entries=4)
def _cached_reference(model_key: str, manifest_key: str, _loaded, _lock, _dataset):
    # cache_resource: the reference is computed once per (model, dataset) and process, shared by all sessions.
    big = _loaded.parameter_count > 100_000_000  # each image costs a vision-tower forward pass
    with _lock:
        return fit_novelty_reference(_loaded, _dataset, n_reference=150 if big else 600,
                                     n_held_out=100 if big else 300)


def _novelty_reference(loaded, lock, dataset):
    """The out-of-distribution reference of this model on this dataset's train/val images, or None (with a
    caption saying why) where the dataset has no such splits."""
    manifest = current_manifest()
    try:
        return _cached_reference(f"{loaded.directory}:{loaded.adapter}",
                                 f"{manifest}:{manifest.stat().st_mtime}", loaded, lock, dataset)
    except FairMedInputError as error:
        st.session_state["inference_novelty_unavailable"] = str(error)
        return None


def _novelty_notice(novelty: ImageNovelty | None, dataset) -> None:
    """The out-of-distribution verdict, shown above the answer so it is read first."""
    if novelty is None:
        reason = st.session_state.get("inference_novelty_unavailable", "")
        st.warning(f"Out-of-distribution check not available ({reason}): nothing says whether this image resembles "
                   "what the model was trained on.", icon=":material/help:")
        return
    detail = (f"vision-tower distance {novelty.vision_ratio:.2f} x threshold, image statistics "
              f"{novelty.statistics_ratio:.2f} x threshold; above 1 is flagged, and the thresholds flag about 1% of "
              f"held-out {dataset.name} images")
    if novelty.unusual:
        st.warning("**This image is unlike anything the model was trained on: its answer means nothing.** "
                 + "; ".join(novelty.reasons) + f". ({detail}.)", icon=":material/block:")
    else:
        st.caption(f":material/check_circle: Out-of-distribution check passed: the image resembles the training "
                   f"images (closest: {source_label(novelty.nearest_source)}); {detail}. Passing it does not make "
                   "the image in scope.")


def evaluate_tab(dataset) -> None:
    st.markdown("Answer every case of a split, in batches, and save the predictions with their audit as a run "
                "in the workspace. The **Fairness audit** page lists it under *A saved evaluation run*.")
    splits = sorted(dataset.cases["split"].astype(str).unique())
    c1, c2 = st.columns(2)
    split = c1.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                         key="inference_eval_split")
    available = int((dataset.cases["split"] == split).sum())
    limit = c2.number_input(f"Cases (0 = all {available:,})", 0, available, 0, key="inference_eval_limit",
                            help="A fixed sample of N cases of the split, stratified by source and group (seed "
                                 f"{DEFAULT_SAMPLE_SEED}: the same cases every time); a quick look before the full "
                                 "run.")
    options = _decoding_options("inference_eval", batch=True)
    if st.button("Evaluate", type="primary", key="inference_run_eval"):
        loaded, lock = current_model()
        run_dir = workspace().run_dir(new_run_name(loaded.name, split))
        bar = st.progress(0.0, text="Waiting for the model (another session may be using it)...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"{done:,} of {total:,} cases answered")

        with lock:
            run = run_evaluation(loaded, dataset, run_dir, split=split, options=options, limit=limit or None,
                                 progress=progress)
        bar.progress(1.0, text=f"Done: {run.record.n_cases:,} cases in {run.record.wall_time_s:.1f} s")
        st.session_state["inference_eval_run"] = run
    run = st.session_state.get("inference_eval_run")
    if run is None:
        return
    record = run.record
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Cases", f"{record.n_cases:,}")
    m2.metric("Accuracy", f"{100 * record.accuracy:.1f}%")
    m3.metric("Format failures", f"{100 * record.format_failure_rate:.1f}%")
    m4.metric("Speed", f"{record.cases_per_s} cases/s")
    sample = run.sample
    st.caption(sample.describe("Cases answered") if sample is not None else
               "Sample composition not recorded (older run: the first N cases of the split).")
    if sample is not None and not sample.whole:
        with st.expander("Cases per source and group in the sample"):
            st.dataframe(sample.groups_table(), hide_index=True, width="stretch")
    st.caption(f"Saved to `{run.path}`.")
    if st.button("Audit this run", key="inference_audit_run", icon=":material/balance:"):
        st.session_state["audit_preselect_run"] = run.name
        st.switch_page("pages/fairness_audit.py")


st.markdown("<style>.fm-reasoning{background:#f6f8fa;border-left:3px solid #8aa4c8;padding:0.5rem 0.75rem;"
            "font-size:0.92rem;white-space:pre-wrap}</style>", unsafe_allow_html=True)
st.title("Inference")
st.markdown(
    "Run the model on one case and read its reasoning and answer; compare it with the same patient drawn with "
    "another sex, age group or skin tone (a **true counterfactual**: an invariant model answers the same). "
    "Or ask about an image of your own, or evaluate a whole split for the audit."
)

try:
    dataset = current_dataset()
    loaded, _ = current_model()
except Exception as error:  # noqa: BLE001 - a bad dataset or model folder is shown, never fatal
    show_input_error(error)
    st.stop()
st.caption(f"Model **{loaded.name}**: {loaded.parameter_count / 1e6:.2f}M parameters, "
           f"{str(loaded.dtype).replace('torch.', '')} on {loaded.device}. Dataset **{dataset.name}**. Change either in the sidebar.")

case_tab, image_tab, split_tab = st.tabs(["Benchmark case", "Upload an image", "Evaluate a split"])
for tab, body in ((case_tab, benchmark_case_tab), (image_tab, upload_tab), (split_tab, evaluate_tab)):
    with tab:
        try:
            body(dataset)
        except Exception as error:  # noqa: BLE001 - bad input must never take the page down
            show_input_error(error)
