"""The reference classifier: deterministic, clearly above chance, and showing the disparities the knobs create."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairmed_core.data import Dataset, SynthConfig, generate, read_manifest, write_dataset
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.reference import reference_predictions

# Dermatology only, with light and dark skin equally represented so both groups' recall is well estimated; the
# default knobs (fainter lesions on dark skin, a pen-marker shortcut on light skin) stay on.
CONFIG = SynthConfig(
    n=1000,
    image_size=32,  # downsampled to 16x16 anyway; 4x less drawing and PNG work
    sources=("synth_derm",),
    skin_tone_shares=(0.5, 0.0, 0.5),
    missing_demographics_fraction=0.0,
    split_fractions=(0.5, 0.0, 0.5),
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return read_manifest(write_dataset(generate(CONFIG), tmp_path_factory.mktemp("ref") / "derm", config=CONFIG))


@pytest.fixture(scope="module")
def predictions(dataset) -> pd.DataFrame:
    return reference_predictions(dataset)


def test_predictions_cover_the_test_split_with_the_documented_columns(dataset, predictions):
    assert list(predictions.columns) == [
        "case_id", "source", "split", "sex", "age_group", "skin_tone", "y_true", "y_pred", "score", "model"]
    test = dataset.cases[dataset.cases["split"] == "test"]
    assert sorted(predictions["case_id"]) == sorted(test["case_id"])
    assert set(predictions["y_pred"]) <= {"yes", "no"}
    assert ((predictions["score"] >= 0.5) == (predictions["y_pred"] == "yes")).all()


def test_reference_model_is_deterministic(dataset, predictions):
    pd.testing.assert_frame_equal(reference_predictions(dataset), predictions)


def test_reference_model_is_clearly_above_chance(predictions):
    y_true = predictions["y_true"] == "yes"
    accuracy = float((y_true == (predictions["y_pred"] == "yes")).mean())
    majority = max(y_true.mean(), 1 - y_true.mean())
    assert accuracy > majority + 0.1
    assert roc_auc_score(y_true, predictions["score"]) > 0.85


def test_reference_model_misses_more_lesions_on_dark_skin(predictions):
    positives = predictions[predictions["y_true"] == "yes"]
    recall = positives.groupby("skin_tone")["y_pred"].apply(lambda p: float((p == "yes").mean()))
    mean_score = positives.groupby("skin_tone")["score"].mean()
    assert recall["light"] > recall["dark"]
    assert mean_score["light"] - mean_score["dark"] > 0.05  # less noisy than thresholded recall on ~75 lesions


def test_refuses_non_binary_answers_and_missing_train_split(dataset):
    multi = dataclasses.replace(dataset, label_values=("a", "b", "c"), positive_label=None)
    with pytest.raises(FairMedInputError, match="binary"):
        reference_predictions(multi)
    no_train = dataclasses.replace(dataset, cases=dataset.cases[dataset.cases["split"] != "train"])
    with pytest.raises(FairMedInputError, match="train"):
        reference_predictions(no_train)
    with pytest.raises(FairMedInputError, match="val"):
        reference_predictions(dataset, split="val")


def test_grayscale_sources_are_predicted_too(tmp_path):
    config = SynthConfig(n=240, sources=("synth_cxr", "synth_mammo"))
    dataset = read_manifest(write_dataset(generate(config), tmp_path / "gray", config=config))
    predictions = reference_predictions(dataset, downsample=8)
    assert set(predictions["source"]) == {"synth_cxr", "synth_mammo"}
    assert "skin_tone" not in predictions.columns
    assert np.isfinite(predictions["score"]).all()
