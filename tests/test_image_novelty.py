"""The out-of-distribution score of single images: images plainly out of scope (flat grey, random noise, a plain
colour) are flagged with the shipped model, ordinary held-out benchmark images almost never are, and a dataset
without the splits to calibrate on is refused with a message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from fairmed_core.data import read_manifest
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.image_novelty import fit_novelty_reference, image_novelty, image_statistics
from fairmed_core.models.loading import load_model
from fairmed_core.runs.workspace import TINY_MODEL

pytestmark = pytest.mark.skipif(not (TINY_MODEL / "config.json").is_file(), reason="shipped tiny model missing")


@pytest.fixture(scope="module")
def model():
    return load_model(TINY_MODEL)


@pytest.fixture(scope="module")
def benchmark(default_manifest):
    return read_manifest(default_manifest)


@pytest.fixture(scope="module")
def reference(model, benchmark):
    # Calibrated on the val split; the images scored below come from the test split, never seen here.
    return fit_novelty_reference(model, benchmark)


def test_flat_grey_noise_and_a_plain_colour_are_flagged(model, reference):
    rng = np.random.default_rng(0)
    odd = {"flat grey": Image.new("L", (64, 64), 128), "flat grey, large RGB": Image.new("RGB", (512, 400), (128,) * 3),
           "colour noise": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
           "grey noise": Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)),
           "plain skin colour": Image.new("RGB", (64, 64), (200, 150, 120))}
    scores = image_novelty(model, reference, list(odd.values()))
    for name, score in zip(odd, scores):
        assert score.unusual and score.reasons, (name, score)


def test_held_out_benchmark_images_are_rarely_flagged(model, reference, benchmark):
    cases = benchmark.cases[benchmark.cases["split"] == "test"]
    sample = cases.groupby("dataset").sample(n=40, random_state=3)  # 120 held-out images, 40 per source
    scores = image_novelty(model, reference, [benchmark.load_image(c) for c in sample["case_id"]])
    false_flags = np.mean([s.unusual for s in scores])
    assert false_flags < 0.05, false_flags
    # The thresholds are the held-out quantiles: about 0.5% of the calibration images lie above each.
    assert reference.vision.held_out[-1] >= reference.vision.threshold
    assert np.mean(reference.statistics.held_out > reference.statistics.threshold) <= 0.01
    assert {s.nearest_source for s in scores} == {"synth_cxr", "synth_derm", "synth_mammo"}


def test_image_statistics_do_not_depend_on_image_size():
    small = Image.new("L", (64, 64), 90)
    large = small.resize((640, 480))
    assert np.allclose(image_statistics([small]), image_statistics([large]))


def test_a_dataset_without_a_held_out_split_is_refused(model, benchmark):
    only_train = dataclasses.replace(benchmark, cases=benchmark.cases[benchmark.cases["split"] == "train"])
    with pytest.raises(FairMedInputError, match="no 'val' split"):
        fit_novelty_reference(model, only_train)
