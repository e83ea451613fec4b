"""Small image classifiers under review (``fairmed_core.counterfactual.classifiers``) and the benchmark script that
checks the counterfactual-invariance tests with them. The oracle is the benchmark's true counterfactual."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairmed_core.counterfactual.classifiers import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AttributeBlindClassifier,
    ImageClassifierConfig,
    load_image_classifier,
    train_image_classifier,
)
from fairmed_core.counterfactual.invariance import counterfactual_accuracy
from fairmed_core.data.synth import SynthConfig, generate, render_many
from fairmed_core.errors import FairMedInputError

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Counterfactual-invariance tests on the benchmark"


@pytest.fixture(scope="module")
def derm_cases():
    torch.set_num_threads(1)
    return generate(SynthConfig(n=1400, seed=3, sources=("synth_derm",)))


@pytest.fixture(scope="module")
def trained(derm_cases):
    cases = derm_cases[:300]
    images = [Image.fromarray(image) for image in render_many(cases)]
    classifier = train_image_classifier(images, [case.answer for case in cases], source="synth_derm", seed=0,
                                        epochs=2)
    return classifier, images


def _other_sex(cases):
    """The true counterfactual of each case on sex."""
    images = [None] * len(cases)
    for sex, other in (("F", "M"), ("M", "F")):
        index = [i for i, case in enumerate(cases) if case.sex == sex]
        for i, image in zip(index, render_many([cases[i] for i in index], sex=other)):
            images[i] = image
    return images


def test_save_and_load_give_identical_probabilities_and_config(trained, tmp_path):
    classifier, images = trained
    folder = classifier.save(tmp_path / "clf")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    loaded = load_image_classifier(folder)
    assert loaded.config == classifier.config
    np.testing.assert_array_equal(loaded.predict_proba(images), classifier.predict_proba(images))
    assert loaded.answers(images) == classifier.answers(images)
    assert set(loaded.answers(images)) <= {"yes", "no"}
    saved = json.loads((folder / CONFIG_FILE).read_text())
    assert saved["kind"] == "small_cnn" and saved["source"] == "synth_derm" and saved["image_mode"] == "RGB"
    assert saved["image_size"] == 64 and saved["labels"] == ["yes", "no"] and saved["threshold"] == 0.5


def test_answers_follow_the_threshold_and_the_dataset_strings(trained):
    classifier, images = trained
    probabilities = classifier.predict_proba(images)
    expected = ["yes" if p >= 0.5 else "no" for p in probabilities]
    assert classifier.answers(images) == expected
    # numpy arrays straight from render work as well as PIL images
    np.testing.assert_array_equal(classifier.predict_proba([np.asarray(i) for i in images[:5]]), probabilities[:5])


def _corrupt(folder: Path, how: str) -> None:
    if how == "no config":
        (folder / CONFIG_FILE).unlink()
    elif how == "garbled config":
        (folder / CONFIG_FILE).write_text("{not json")
    elif how == "not a classifier config":
        (folder / CONFIG_FILE).write_text(json.dumps({"format": "something-else"}))
    elif how == "no weights":
        (folder / WEIGHTS_FILE).unlink()
    elif how == "pickled weights":
        (folder / WEIGHTS_FILE).unlink()
        (folder / "model.bin").write_bytes(b"\x80\x04not really a pickle")
    elif how == "garbled weights":
        (folder / WEIGHTS_FILE).write_bytes(b"this is not a safetensors file")
    elif how == "weights do not fit":
        config = json.loads((folder / CONFIG_FILE).read_text())
        config["width"] = 4
        (folder / CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize("how, names", [
    ("no config", [CONFIG_FILE]),
    ("garbled config", [CONFIG_FILE]),
    ("not a classifier config", [CONFIG_FILE, "format"]),
    ("no weights", [WEIGHTS_FILE]),
    ("pickled weights", ["model.bin", "pickle"]),
    ("garbled weights", [WEIGHTS_FILE]),
    ("weights do not fit", [WEIGHTS_FILE, CONFIG_FILE]),
])
def test_bad_folders_raise_an_error_naming_the_problem(trained, tmp_path, how, names):
    classifier, _ = trained
    folder = classifier.save(tmp_path / "clf")
    _corrupt(folder, how)
    with pytest.raises(FairMedInputError) as caught:
        load_image_classifier(folder)
    for name in names:
        assert name in str(caught.value)


def test_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(FairMedInputError, match="not found"):
        load_image_classifier(tmp_path / "nowhere")


def test_inputs_of_the_wrong_kind_are_refused_with_their_row(trained):
    classifier, images = trained
    with pytest.raises(FairMedInputError, match="row 1"):
        classifier.predict_proba([images[0], images[1].convert("L")])
    with pytest.raises(FairMedInputError, match="32x32"):
        classifier.predict_proba([images[0].resize((32, 32))])
    with pytest.raises(FairMedInputError, match="neither"):
        train_image_classifier(images[:4], ["yes", "no", "maybe", "no"], source="synth_derm", seed=0, epochs=1)
    with pytest.raises(FairMedInputError, match="labels"):
        train_image_classifier(images[:4], ["yes", "no"], source="synth_derm", seed=0, epochs=1)
    with pytest.raises(FairMedInputError, match="the same"):
        train_image_classifier(images[:4], ["no"] * 4, source="synth_derm", seed=0, epochs=1)
    with pytest.raises(FairMedInputError, match="labels"):
        ImageClassifierConfig(source="s", image_mode="L", image_size=64, labels=("yes", "yes"),
                              channel_mean=(0.5,), channel_std=(0.2,))


def test_a_sex_confounded_classifier_flips_more_than_the_sex_blind_one(derm_cases):
    """Trained where the label goes with sex (hair strands show on men), a classifier learns hair, so its answer
    changes on the true counterfactual; a sex-blind one sees the same image for both sexes and never flips."""
    pool, test = derm_cases[:1000], derm_cases[1000:1250]
    rng = np.random.default_rng(0)
    sex = np.array([c.sex for c in pool])
    label = np.array([c.label for c in pool])
    index = np.concatenate([rng.choice(np.flatnonzero((sex == s) & (label == y)), n, replace=True)
                            for s, y, n in (("M", True, 285), ("M", False, 15), ("F", True, 15), ("F", False, 285))])
    train = [pool[i] for i in rng.permutation(index)]
    answers = [c.answer for c in train]
    confounded = train_image_classifier(render_many(train), answers, source="synth_derm", seed=0, epochs=8)
    blind = AttributeBlindClassifier(
        train_image_classifier(render_many(train, sex="F"), answers, source="synth_derm", seed=0, epochs=8),
        attribute="sex", value="F")

    factual, counterfactual = render_many(test), _other_sex(test)
    confounded_eca = counterfactual_accuracy(confounded.answers(factual), confounded.answers(counterfactual))
    flipped = [dataclasses.replace(c, sex={"F": "M", "M": "F"}[c.sex]) for c in test]
    blind_eca = counterfactual_accuracy(blind.answers(test), blind.answers(flipped))
    assert blind_eca.eca == 1.0
    assert confounded_eca.eca < 0.95, confounded_eca  # at least 13 of 250 answers flip
    with pytest.raises(FairMedInputError, match="SynthCase"):
        blind.answers(factual)


def test_quick_benchmark_run_writes_its_section_and_keeps_the_others(default_workspace, tmp_path):
    results = tmp_path / "RESULTS.md"
    original = (REPO_ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    if SECTION in original:  # the real document holds this section already: start from the others alone
        start = original.index(SECTION)
        after = original.find("\n## ", start + len(SECTION))
        original = original[:start].rstrip("\n") + ("\n" if after < 0 else original[after:])
    results.write_text(original.rstrip("\n") + f"\n\n{SECTION}\n\nstale text from an earlier run\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "counterfactual_tests_validation.py"), "--quick",
         "--results", str(results), "--datasets", str(default_workspace / "datasets")],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = results.read_text(encoding="utf-8")
    assert text.count(SECTION) == 1 and "stale text" not in text
    assert text.startswith(original.rstrip("\n"))  # every other section untouched
    section = text[text.index(SECTION):]
    assert "--quick --results" in section
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| sex-blind")]
    assert rows, section
    for cells in rows:  # model, seed, accuracy, positive rate, ECA, flip rate, ...
        assert cells[4].strip() == "1.000" and cells[5].strip().startswith("0.000")
    assert "type-I error" in section and "| default test split | oracle |" in section
