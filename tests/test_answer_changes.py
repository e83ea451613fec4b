"""Cases where a model's answer changes on the true counterfactual: each stored change is a real one (the case
review, asked again, shows it), the denominators add up, the files round-trip, and the shipped ones stay small."""

from __future__ import annotations

import pytest

from fairmed_core.data import read_manifest
from fairmed_core.models.answer_changes import (
    CHANGES_CSV,
    find_answer_changes,
    read_answer_changes,
    write_answer_changes,
)
from fairmed_core.models.case_review import review_case
from fairmed_core.models.generation import GenerationOptions
from fairmed_core.models.loading import load_model
from fairmed_core.runs.workspace import TINY_MODEL, shipped_model_dirs

pytestmark = pytest.mark.skipif(not (TINY_MODEL / "config.json").is_file(), reason="shipped tiny model missing")


@pytest.fixture(scope="module")
def model():
    return load_model(TINY_MODEL)


@pytest.fixture(scope="module")
def changes(model, default_manifest):
    return find_answer_changes(model, read_manifest(default_manifest), n=48, options=GenerationOptions(
        max_new_tokens=64, batch_size=32))


def test_every_stored_change_is_seen_again_in_the_case_review(model, changes, default_manifest):
    dataset = read_manifest(default_manifest)
    assert changes.n_pairs == sum(changes.pairs_per_attribute.values()) > changes.n_cases >= 20
    assert len(changes.pairs) == sum(changes.changed_per_attribute.values())
    assert not changes.pairs.empty, "the shipped tiny model changes some answers; none found"
    records = dataset.cases.set_index("case_id", drop=False)
    for _, pair in changes.pairs.head(3).iterrows():
        record = records.loc[pair["case_id"]].to_dict()
        review = review_case(model, record, dataset.load_image(pair["case_id"]),
                             change=(pair["attribute"], pair["counterfactual_group"]),
                             options=GenerationOptions(max_new_tokens=64), choices=dataset.label_values)
        assert review.answer_changed and review.answer.answer == pair["answer"]
        assert review.counterfactual_answer.answer == pair["counterfactual_answer"]
    counts = changes.cases["changes"].tolist()
    assert counts == sorted(counts, reverse=True) and sum(counts) == len(changes.pairs)


def test_the_files_round_trip(changes, tmp_path):
    write_answer_changes(changes, tmp_path)
    again = read_answer_changes(tmp_path)
    assert again.pairs.equals(changes.pairs.astype(str)) and again.summary() == changes.summary()
    assert read_answer_changes(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("model_dir", shipped_model_dirs(), ids=lambda p: p.name)
def test_each_shipped_model_ships_its_changes_small(model_dir):
    stored = read_answer_changes(model_dir / "evaluation")
    assert stored is not None and stored.model == model_dir.name and stored.split == "test"
    assert (model_dir / "evaluation" / CHANGES_CSV).stat().st_size < 200_000
    assert stored.n_cases >= 200 and len(stored.pairs) > 0
