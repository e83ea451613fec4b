"""The data card: its counts equal a plain pandas groupby, and its samples come from the right groups."""

from __future__ import annotations

import pandas as pd
import pytest

from fairmed_core.data import SynthConfig, data_card, generate, read_manifest, write_dataset
from fairmed_core.data.card import ALL_SOURCES, ALL_SPLITS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    config = SynthConfig(n=240)
    return read_manifest(write_dataset(generate(config), tmp_path_factory.mktemp("card") / "bench", config=config))


def _oracle(cases: pd.DataFrame, attribute: str) -> pd.DataFrame:
    positive = cases["answer"] == "yes"
    frame = cases.assign(positive=positive)
    return frame.groupby(["dataset", attribute, "split"])["positive"].agg(n="size", n_positive="sum")


def test_counts_equal_pandas_groupby(dataset):
    card = data_card(dataset)
    counts = card.group_counts.set_index(["source", "attribute", "group", "split"])
    cases = dataset.cases
    for attribute in ("sex", "age_group"):
        oracle = _oracle(cases, attribute)
        for (source, group, split), row in oracle.iterrows():
            got = counts.loc[(source, attribute, group, split)]
            assert (got["n"], got["n_positive"]) == (row["n"], row["n_positive"])
            assert got["prevalence"] == pytest.approx(row["n_positive"] / row["n"])
        pooled = cases.assign(positive=cases["answer"] == "yes").groupby(attribute)["positive"].agg(["size", "sum"])
        for group, row in pooled.iterrows():
            got = counts.loc[(ALL_SOURCES, attribute, group, ALL_SPLITS)]
            assert (got["n"], got["n_positive"]) == (row["size"], row["sum"])
    assert card.n_cases == len(cases) == 240
    assert list(card.group_counts.columns) == [
        "source", "attribute", "group", "split", "n", "n_positive", "prevalence"]


def test_every_slice_of_an_attribute_sums_to_its_source_total(dataset):
    counts = data_card(dataset).group_counts
    totals = counts[counts["split"] == ALL_SPLITS].groupby(["source", "attribute"])["n"].sum()
    for (source, _attribute), total in totals.items():
        expected = len(dataset.cases) if source == ALL_SOURCES else int((dataset.cases["dataset"] == source).sum())
        assert total == expected


def test_an_attribute_a_source_never_records_has_no_rows_for_it(dataset):
    counts = data_card(dataset).group_counts
    skin = counts[counts["attribute"] == "skin_tone"]
    assert set(skin["source"]) == {"synth_derm", ALL_SOURCES}


def test_samples_belong_to_their_group_mix_answers_and_are_deterministic(dataset):
    card = data_card(dataset, samples_per_group=4, seed=3)
    assert card.samples == data_card(dataset, samples_per_group=4, seed=3).samples
    rows = dataset.cases.set_index("case_id")
    per_group: dict[tuple, list] = {}
    for sample in card.samples:
        row = rows.loc[sample.case_id]
        assert (row["dataset"], row[sample.attribute], row["answer"], row["image_path"]) == (
            sample.source, sample.group, sample.answer, sample.image_path)
        per_group.setdefault((sample.source, sample.attribute, sample.group), []).append(sample)
    for key, samples in per_group.items():
        assert len(samples) <= 4
        group = dataset.cases[(dataset.cases["dataset"] == key[0]) & (dataset.cases[key[1]] == key[2])]
        if (group["answer"] == "yes").sum() >= 2 and (group["answer"] == "no").sum() >= 2:
            assert {s.answer for s in samples} == {"yes", "no"}
    assert data_card(dataset, samples_per_group=0).samples == ()
