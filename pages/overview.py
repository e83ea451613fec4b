"""Overview page: the data card of the chosen dataset (group sizes first, then prevalence, then sample images)."""

from __future__ import annotations

import streamlit as st

from fairmed_core.data.labels import answer_label, attribute_label, case_label, finding_name, group_label, source_label
from fairmed_core.viz import group_counts_figure, prevalence_figure
from pages._common import current_card, current_dataset, show_input_error

st.title("Overview")
st.markdown(
    "FairMed shows how a clinical model performs **per demographic subgroup** (sex, age group, skin tone) "
    "and across data sources, so a reviewer can see disparities before a model reaches patients. "
    "Start with the data: who is in it, how many, and how often the finding is present in each group."
)

try:
    dataset = current_dataset()
    card = current_card()
except Exception as error:  # noqa: BLE001 - any failure to read the chosen dataset is shown, never fatal
    show_input_error(error)
    st.stop()

counts = card.group_counts
all_splits = counts[counts["split"] == "all"]
columns = st.columns(4)
columns[0].metric("Cases", f"{card.n_cases:,}")
columns[1].metric("Sources", len(dataset.sources))
columns[2].metric("Attributes", len(dataset.attributes))
unknown = int((dataset.cases[list(dataset.attributes)] == "UNK").all(axis=1).sum())
columns[3].metric("Cases without demographics", f"{unknown:,}", help="Their demographics are unknown (group UNK).")

findings = [f"{source_label(s)}: {finding_name(s)}" for s in dataset.sources if finding_name(s)]
if findings:
    st.markdown("**The finding each source asks about** (a 'yes' answer): " + "; ".join(findings) + ".")

st.subheader("Group sizes")
attribute = st.selectbox("Attribute", dataset.attributes, key="overview_attribute", format_func=attribute_label)
split = st.radio("Split", ["all", "train", "val", "test"], horizontal=True, key="overview_split")
rows = counts[(counts["attribute"] == attribute) & (counts["split"] == split)]
sizes = rows.pivot_table(index="group", columns="source", values="n", aggfunc="sum", fill_value=0)
sizes = sizes[[*(s for s in dataset.sources if s in sizes.columns), "ALL"]].rename(columns={"ALL": "all sources"})
sizes = sizes.rename(columns=source_label, index=group_label)
st.caption(f"Cases per {attribute_label(attribute)} and source ({split} split).")
st.dataframe(sizes, width="stretch")
left, right = st.columns(2)
left.plotly_chart(group_counts_figure(counts, attribute=attribute, split=split), width="stretch")
right.plotly_chart(prevalence_figure(counts, attribute=attribute, split=split), width="stretch")
with st.expander("Prevalence table (share of cases with the finding)"):
    st.dataframe(
        rows[["source", "group", "n", "n_positive", "prevalence"]].style.format({"prevalence": "{:.3f}"}),
        width="stretch", hide_index=True,
    )

st.subheader("Sample images per group")
source = st.selectbox("Source", dataset.sources, key="overview_source", format_func=source_label)
samples = [s for s in card.samples if s.source == source and s.attribute == attribute]
if not samples:
    st.info(f"{source} does not record {attribute}.")
for group in dict.fromkeys(s.group for s in samples):
    shown = [s for s in samples if s.group == group]
    st.markdown(f"**{attribute_label(attribute)}: {group_label(group)}**")
    st.image(
        [s.image_path for s in shown],
        caption=[f"{case_label(s.case_id, s.source)}: {answer_label(s.answer, s.source)}" for s in shown],
        width=128,
    )

if (dataset.root / "config.json").is_file():
    with st.expander("How this benchmark was generated (bias knobs)"):
        st.markdown(
            "The embedded benchmark is synthetic: every case is a latent patient drawn with its attributes, "
            "so the true counterfactual of each case is known. Its bias knobs are deliberate:"
        )
        st.json((dataset.root / "config.json").read_text(encoding="utf-8"), expanded=False)
