"""The counterfactual analysis: stratified case selection, pairs with validity, the model's answers on both sides
and on the benchmark's true counterfactuals, the tests, and the run folder (complete or absent, never overwritten)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairmed_core.counterfactual.analysis import (
    AnalysisSettings,
    ModelAnswer,
    VLMPredictor,
    difference_map,
    read_analysis,
    run_counterfactual_analysis,
    select_cases,
)
from fairmed_core.counterfactual.attribute_classifier import load_attribute_classifier, train_attribute_classifier
from fairmed_core.counterfactual.validity import ValidityThresholds, make_pairs, mean_absolute_error
from fairmed_core.errors import FairMedInputError
from tests.test_counterfactual_generator import _one_thread, generator, small_dataset, small_manifest, trained  # noqa: F401

pytestmark = pytest.mark.usefixtures("_one_thread")


class BrightnessPredictor:
    """A real, if crude, model: 'yes' when the image's mean grey level exceeds a threshold. Its answers change
    exactly when an edit moves the mean across the threshold, which makes flips predictable in a test."""

    name = "brightness"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.calls = 0

    def answer(self, images, questions, progress=None):
        self.calls += 1
        out = [ModelAnswer("yes" if np.asarray(i.convert("L"), dtype=float).mean() > self.threshold else "no",
                           reasoning="mean grey level") for i in images]
        if progress:
            progress(len(images), len(images))
        return out


@pytest.fixture(scope="module")
def tiny_vlm(tiny_model_dir):
    from fairmed_core.models.loading import load_model

    return VLMPredictor(load_model(tiny_model_dir), name="tiny")


def test_selection_is_stratified_by_source_and_group(generator, small_dataset):
    picked = select_cases(small_dataset, generator, AnalysisSettings(n=6))
    strata = set(zip(picked["dataset"], picked["sex"]))
    assert len(picked) == 6 and len(strata) == 6, strata  # 3 sources x 2 sexes, one case each
    assert all(t == ("M",) if s == "F" else t == ("F",) for s, t in zip(picked["sex"], picked["targets"]))
    only_f = select_cases(small_dataset, generator, AnalysisSettings(n=50, group="F"))
    assert set(only_f["sex"]) == {"F"} and len(only_f) == 6  # 2 test cases per source in the small set


def test_selection_refuses_unknown_groups_and_splits(generator, small_dataset):
    with pytest.raises(FairMedInputError, match="never saw"):
        select_cases(small_dataset, generator, AnalysisSettings(group="X"))
    with pytest.raises(FairMedInputError, match="target sex 'X'"):
        select_cases(small_dataset, generator, AnalysisSettings(targets=("X",)))
    with pytest.raises(FairMedInputError, match="no 'holdout' split"):
        select_cases(small_dataset, generator, AnalysisSettings(split="holdout"))
    with pytest.raises(FairMedInputError, match="n must be"):
        AnalysisSettings(n=0)


def test_pairs_carry_validity_and_thresholds_mark_failures(generator, small_dataset):
    cases = select_cases(small_dataset, generator, AnalysisSettings(n=3))
    images = [small_dataset.load_image(c) for c in cases["case_id"]]
    args = (generator, images, list(cases["case_id"]), list(cases["dataset"]), list(cases["sex"]),
            list(cases["targets"]))
    pairs = make_pairs(*args, steps=10)
    # Without an attribute classifier no pair can be shown as valid: its effectiveness was never checked.
    assert all(p.validity.failures[-1] == "effectiveness not checked (no attribute classifier)" for p in pairs)
    assert [p.target_group for p in pairs] == [t[0] for t in cases["targets"]]
    for pair, image in zip(pairs, images):
        v = pair.validity
        assert v.composition_mae == pytest.approx(mean_absolute_error(pair.reconstruction, image))
        assert v.reversibility_mae is not None and v.reversibility_mae >= 0
        assert v.effectiveness is None and pair.latent.shape == (192,)
        assert pair.counterfactual.mode == image.mode
    strict = make_pairs(*args, steps=10, thresholds=ValidityThresholds(composition_mae=1e-6), reversibility=False)
    assert all(not p.validity.valid and "not composable" in p.validity.failures[0] for p in strict)
    assert all(p.validity.reversibility_mae is None for p in strict)


def test_attribute_classifier_round_trips_and_reports_its_quality(small_dataset, tmp_path):
    classifier = train_attribute_classifier(small_dataset, "sex", epochs=3)
    assert set(classifier.infos) == {"synth_cxr", "synth_derm", "synth_mammo"}
    assert all(dict(i.train_counts) == {"F": 6, "M": 6} for i in classifier.infos.values())
    # The small set has no validation cases: quality unknown, so effectiveness is not judged.
    assert all(i.val_balanced_accuracy is None and not i.trustworthy for i in classifier.infos.values())
    images = [small_dataset.load_image(c) for c in small_dataset.cases["case_id"][:6]]
    sources = list(small_dataset.cases["dataset"][:6])
    probabilities = classifier.probabilities(images, sources)
    assert probabilities.shape == (6, 2) and np.allclose(probabilities.sum(axis=1), 1)
    again = load_attribute_classifier(classifier.save(tmp_path / "clf"))
    assert np.allclose(again.probabilities(images, sources), probabilities)
    with pytest.raises(FairMedInputError, match="no network for source"):
        classifier.probabilities(images[:1], ["synth_ct"])
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(FairMedInputError, match="unreadable attribute classifier"):
        load_attribute_classifier(tmp_path / "clf")


def test_analysis_writes_a_complete_run_with_true_counterfactuals(generator, small_dataset, tiny_vlm, tmp_path):
    stages = []
    result = run_counterfactual_analysis(
        tiny_vlm, generator, small_dataset, AnalysisSettings(n=6, steps=10, reversibility=False),
        out_dir=tmp_path / "run", progress=lambda stage, done, total: stages.append(stage))
    assert {"generating", "answering", "testing"} <= set(stages)
    table, tests, meta = read_analysis(tmp_path / "run")
    assert len(table) == 6 and meta["kind"] == "counterfactual" and meta["attribute"] == "sex"
    for column in ("factual_png", "counterfactual_png", "difference_png", "truth_png"):
        assert all((tmp_path / "run" / name).is_file() for name in table[column]), column
    assert set(table["factual_group"]) == {"F", "M"}
    # Every answer comes from the model on the image shown: flipped is exactly "the answers differ".
    assert (table["flipped"] == (table["answer"].fillna("") != table["counterfactual_answer"].fillna(""))).all()
    assert tests == result.tests  # the typed record read back from tests.json is the one the analysis returned
    overall = tests.flips.overall
    assert overall.attribute == "ALL" and overall.n_pairs == 6 and overall.flips == int(table["flipped"].sum())
    assert tests.true_counterfactuals.eca.n == 6
    ci = tests.ci_test  # 6 cases are too few to fit the heads, unless the answers are constant (then p = 1)
    assert (not ci.ran and "not run" in ci.note) or (ci.p_value == 1.0 and "every prediction" in ci.note)
    assert result.pairs["truth_mae"].notna().all()
    with pytest.raises(FairMedInputError, match="never overwritten"):
        run_counterfactual_analysis(tiny_vlm, generator, small_dataset, AnalysisSettings(n=2, steps=10),
                                    out_dir=tmp_path / "run")
    assert len(pd.read_csv(tmp_path / "run" / "pairs.csv")) == 6


def test_flips_follow_the_model_and_the_answers_are_asked_once(generator, small_dataset):
    cases = list(select_cases(small_dataset, generator, AnalysisSettings(n=4))["case_id"])
    always = BrightnessPredictor(threshold=-1.0)  # every image is brighter: "yes" everywhere, never a flip
    result = run_counterfactual_analysis(always, generator, small_dataset, AnalysisSettings(steps=10,
                                                                                            reversibility=False),
                                         case_ids=cases)
    assert list(result.pairs["case_id"]) == cases and always.calls == 1
    assert not result.pairs["flipped"].any() and result.tests.flips.overall.flip_rate == 0.0
    # At each pair's own midpoint between factual and counterfactual brightness, the answer must flip.
    pair = result.pair_objects[0]
    mean = lambda image: np.asarray(image.convert("L"), dtype=float).mean()  # noqa: E731
    middle = (mean(pair.factual) + mean(pair.counterfactual)) / 2
    if abs(mean(pair.factual) - mean(pair.counterfactual)) > 1e-9:
        edge = run_counterfactual_analysis(BrightnessPredictor(middle), generator, small_dataset,
                                           AnalysisSettings(steps=10, reversibility=False), case_ids=cases[:1])
        assert bool(edge.pairs["flipped"].iloc[0])
    with pytest.raises(FairMedInputError, match="cannot be edited"):
        run_counterfactual_analysis(always, generator, small_dataset, AnalysisSettings(steps=10),
                                    case_ids=["no-such-case"])


def test_difference_map_is_zero_for_identical_images_and_bright_where_they_differ():
    a = Image.fromarray(np.full((8, 8), 100, dtype=np.uint8), mode="L")
    b = a.copy()
    b.putpixel((3, 4), 140)
    assert np.asarray(difference_map(a, a)).max() == 0
    diff = np.asarray(difference_map(a, b))
    assert diff[4, 3] == 255 and diff.sum() == 255


def test_cli_trains_a_generator_with_its_classifier_and_runs_the_analysis(small_manifest, tiny_model_dir, tmp_path,
                                                                          capsys):
    from fairmed_core.cli import main

    generator_dir = tmp_path / "generator"
    assert main(["train", "counterfactual", "--data", str(small_manifest), "--attribute", "sex", "--out",
                 str(generator_dir), "--steps", "3", "--batch-size", "4", "--checkpoint-every", "2",
                 "--classifier-epochs", "1", "--threads", "1"]) == 0
    assert "3 steps (fresh" in capsys.readouterr().out
    assert (generator_dir / "attribute_classifier" / "model.safetensors").is_file()
    # More steps resume from the checkpoint; the classifier folder survives the checkpoint swap.
    assert main(["train", "counterfactual", "--data", str(small_manifest), "--attribute", "sex", "--out",
                 str(generator_dir), "--steps", "4", "--batch-size", "4", "--classifier-epochs", "0",
                 "--threads", "1"]) == 0
    assert "4 steps (resumed from 3" in capsys.readouterr().out
    assert (generator_dir / "attribute_classifier" / "model.safetensors").is_file()

    run = tmp_path / "run"
    assert main(["counterfactual", "--model", str(tiny_model_dir), "--generator", str(generator_dir), "--data",
                 str(small_manifest), "--attribute", "sex", "--out", str(run), "--n", "3", "--steps", "10",
                 "--no-reversibility", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 pairs of 3 cases" in out and "true counterfactuals (benchmark): ECA" in out
    table, tests, meta = read_analysis(run)
    assert len(table) == 3 and table["effectiveness"].notna().all()  # the stored classifier judged each edit
    assert tests.validity.classifier["synth_cxr"]["trustworthy"] is False  # no val split: not judged
    assert tests.n_valid_pairs == 0 and table["failures"].str.contains("effectiveness not judged").all()

    assert main(["counterfactual", "--model", str(tiny_model_dir), "--generator", str(generator_dir), "--data",
                 str(small_manifest), "--attribute", "age_group", "--out", str(tmp_path / "other")]) == 2
    assert "edits 'sex', not 'age_group'" in capsys.readouterr().err
    assert main(["counterfactual", "--model", str(tiny_model_dir), "--generator", str(generator_dir), "--data",
                 str(small_manifest), "--attribute", "sex", "--out", str(run)]) == 2
    assert "not empty" in capsys.readouterr().err
