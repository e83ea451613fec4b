"""The stratified held-out sample: fixed by data, size and seed; every source and group represented; proportional
within rounding; the whole split for None/0 or a split smaller than asked; a bad size refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fairmed_core.data.sampling import (MIN_PER_SOURCE, STRATIFIED, WHOLE_SPLIT, SampleComposition,
                                        stratified_sample)
from fairmed_core.data.schema import UNKNOWN
from fairmed_core.errors import FairMedInputError

ATTRIBUTES = ("sex", "age_group")


def _cases(per_source: dict[str, int], split: str = "val") -> pd.DataFrame:
    """Cases stored in source order (as the benchmark's splits are), sexes and ages cycling, every 10th case
    with sex not recorded."""
    rows = []
    for source, count in per_source.items():
        for i in range(count):
            rows.append({"case_id": f"{source}-{i:05d}", "dataset": source, "split": split,
                         "sex": UNKNOWN if i % 10 == 9 else ("F" if i % 3 else "M"),
                         "age_group": ("A1", "A2", "A3", "A4")[i % 4]})
    return pd.DataFrame(rows)


def _draw(cases, n, **options):
    return stratified_sample(cases, n, split="val", attributes=ATTRIBUTES, **options)


def test_the_same_data_size_and_seed_give_the_same_cases_whatever_the_row_order():
    cases = _cases({"cxr": 200, "derm": 150, "mammo": 120})
    ids, composition = _draw(cases, 90)
    assert _draw(cases, 90) == (ids, composition)
    shuffled_ids, shuffled = _draw(cases.sample(frac=1, random_state=7), 90)
    assert set(shuffled_ids) == set(ids) and shuffled.case_ids_sha256 == composition.case_ids_sha256
    other_ids, other = _draw(cases, 90, seed=1)
    assert set(other_ids) != set(ids) and other.sources == composition.sources and other.seed == 1
    # the ids come back in the split's order, every one of them a case of the split
    position = {case_id: i for i, case_id in enumerate(cases["case_id"])}
    assert [position[i] for i in ids] == sorted(position[i] for i in ids)
    assert len(set(ids)) == len(ids) == composition.n_sample == 90


def test_every_source_is_represented_where_the_first_n_cases_would_be_one_source():
    cases = _cases({"cxr": 500, "derm": 60, "mammo": 10})
    ids, composition = _draw(cases, 60)
    assert cases.head(60)["dataset"].nunique() == 1  # what "the first N" gave
    drawn = cases.set_index("case_id").loc[list(ids), "dataset"].value_counts().to_dict()
    # 30 per source and all 10 mammograms would need 70: the floor drops to the largest that fits (25), and the
    # large source keeps the rest (its proportional share, 53, is above the floor)
    assert drawn == {"cxr": 25, "derm": 25, "mammo": 10}
    _, roomy = _draw(cases, 120)
    assert [k for _, k, _ in roomy.sources] == [80, MIN_PER_SOURCE, 10]
    assert [(s, k) for s, k, _ in composition.sources] == [(s, drawn[s]) for s in ("cxr", "derm", "mammo")]


def test_without_floors_sources_and_groups_get_their_proportional_share_within_rounding():
    cases = _cases({"cxr": 301, "derm": 203, "mammo": 97})
    ids, composition = _draw(cases, 157, min_per_source=0, min_per_group=0)
    assert composition.n_sample == len(ids) == 157 and composition.rule == STRATIFIED
    total = composition.n_split
    for source, sampled, in_split in composition.sources:
        assert abs(sampled - 157 * in_split / total) < 1, source
        groups = [(k, n) for s, _, k, n in composition.groups if s == source]
        assert sum(k for k, _ in groups) == sampled
        for k, n in groups:
            assert abs(k - sampled * n / in_split) < 1
    # the composition counts are the drawn cases' own
    drawn = cases.set_index("case_id").loc[list(ids)]
    for source, values, sampled, in_split in composition.groups:
        mask = (drawn["dataset"] == source) & (drawn["sex"] == values[0]) & (drawn["age_group"] == values[1])
        assert int(mask.sum()) == sampled
        assert in_split == int(((cases["dataset"] == source) & (cases["sex"] == values[0])
                                & (cases["age_group"] == values[1])).sum())


def test_small_groups_and_the_unknown_group_keep_a_case_where_the_size_allows():
    cases = _cases({"cxr": 300})
    rare = cases.index[:2]
    cases.loc[rare, "sex"], cases.loc[rare, "age_group"] = "X", "A1"  # a group of two cases: share 0.27 of 40
    ids, composition = _draw(cases, 40)
    groups = {values: (k, n) for _, values, k, n in composition.groups}
    assert groups[("X", "A1")] == (1, 2)  # proportional would round it to none
    assert all(k >= 1 for k, _ in groups.values())  # every group, the unknown sex too
    assert any(values[0] == UNKNOWN for values in groups)
    # more groups than cases to give: no floor fits, the largest groups get them, still n in all
    ids, composition = _draw(cases, 5)
    assert len(ids) == 5 and sum(k for _, _, k, _ in composition.groups) == 5
    taken = [n for _, _, k, n in composition.groups if k]
    assert min(taken) >= max((n for _, _, k, n in composition.groups if not k), default=0)


@pytest.mark.parametrize("n", [None, 0])
def test_none_or_zero_is_the_whole_split_in_its_order(n):
    cases = pd.concat([_cases({"cxr": 40, "derm": 20}), _cases({"cxr": 5}, split="test")], ignore_index=True)
    ids, composition = _draw(cases, n)
    assert list(ids) == list(cases.loc[cases["split"] == "val", "case_id"])
    assert composition.rule == WHOLE_SPLIT and composition.whole and composition.requested is None
    assert composition.describe() == "held-out sample: the whole val split, 60 cases: cxr 40, derm 20"


def test_a_split_smaller_than_asked_is_taken_whole_and_says_so():
    ids, composition = _draw(_cases({"cxr": 20, "derm": 10}), 300)
    assert len(ids) == 30 and composition.whole and composition.requested == 300
    assert "300 were asked; the split has fewer" in composition.describe()


@pytest.mark.parametrize("n", [-1, 2.5, True, "300"])
def test_a_bad_size_is_refused_with_what_and_where(n):
    with pytest.raises(FairMedInputError, match=r"column 'n'.*whole number >= 0.*got") as error:
        _draw(_cases({"cxr": 20}), n)
    assert error.value.hint


def test_a_missing_split_or_column_is_refused():
    with pytest.raises(FairMedInputError, match=r"no 'test' cases.*splits present: val"):
        stratified_sample(_cases({"cxr": 20}), 5, split="test", attributes=ATTRIBUTES)
    with pytest.raises(FairMedInputError, match="column 'skin_tone'"):
        stratified_sample(_cases({"cxr": 20}), 5, split="val", attributes=("skin_tone",))


def test_the_composition_is_stored_and_read_back_and_described_in_words():
    _, composition = _draw(_cases({"synth_cxr": 200, "synth_derm": 200, "synth_mammo": 200}), 300)
    assert SampleComposition.from_json(json.loads(json.dumps(composition.to_json()))) == composition
    assert composition.describe() == ("held-out sample: 300 of 600 val cases, stratified by source and group: "
                                      "chest X-ray 100, dermoscopy 100, mammography 100; seed 0")
    table = composition.groups_table()
    assert list(table.columns) == ["Source", "Group", "Cases in the sample", "Cases in the split"]
    assert "female, age 26-50" in set(table["Group"]) and "chest X-ray" in set(table["Source"])
    assert table["Cases in the sample"].sum() == 300
    with pytest.raises(FairMedInputError, match="unreadable held-out sample composition"):
        SampleComposition.from_json({"split": "val"}, source="config.json")


def test_the_benchmark_val_sample_covers_every_source_where_the_first_300_did_not(default_manifest):
    from fairmed_core.data import read_manifest

    dataset = read_manifest(default_manifest)
    val = dataset.cases[dataset.cases["split"] == "val"]
    assert val.head(300)["dataset"].nunique() < 3  # the old held-out cases: no mammography
    ids, composition = stratified_sample(dataset.cases, 300, split="val", attributes=dataset.attributes)
    assert {s: k for s, k, _ in composition.sources} == {"synth_cxr": 100, "synth_derm": 100, "synth_mammo": 100}
    assert set(val.set_index("case_id").loc[list(ids), "dataset"]) == {"synth_cxr", "synth_derm", "synth_mammo"}
