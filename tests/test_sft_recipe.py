"""The SFT recipe's knobs for a learnable tiny model: group undersampling and the vision warm-up (issue 16)."""

from __future__ import annotations

import json

import pytest
import torch

from fairmed_core.data.synth import SynthConfig, generate
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.tiny import build_tiny_model, build_tokenizer
from fairmed_core.models.tiny_config import TinyModelConfig
from fairmed_core.training.sft import SFTConfig, tiny_corpus, train_sft, undersampled
from fairmed_core.training.vision_warmup import warm_up_vision


def test_undersampling_keeps_the_named_fraction_of_one_group_and_every_other_case():
    cases = [c for c in generate(SynthConfig(n=6000)) if c.split == "train"]
    kept = undersampled(cases, {("synth_cxr", "sex", "F"): 0.2}, seed=0)
    women = [c for c in cases if c.source == "synth_cxr" and c.sex == "F"]
    kept_women = [c for c in kept if c.source == "synth_cxr" and c.sex == "F"]
    assert len(kept) - len(kept_women) == len(cases) - len(women)  # nobody else is dropped
    assert 0.14 < len(kept_women) / len(women) < 0.26  # ~300 women: 0.2 within about 2.5 standard errors
    assert kept == undersampled(cases, {("synth_cxr", "sex", "F"): 0.2}, seed=0)  # seeded
    assert undersampled(cases, {}, seed=0) == cases


def test_undersampling_by_answer_keeps_a_fraction_of_one_sources_positives():
    cases = [c for c in generate(SynthConfig(n=6000)) if c.split == "train"]
    kept = undersampled(cases, {("synth_mammo", "answer", "yes"): 0.25}, seed=0)
    positives = [c for c in cases if c.source == "synth_mammo" and c.observed_label]
    kept_positives = [c for c in kept if c.source == "synth_mammo" and c.observed_label]
    assert len(kept) - len(kept_positives) == len(cases) - len(positives)  # negatives and other sources all kept
    assert 0.17 < len(kept_positives) / len(positives) < 0.33  # ~250 positives: 0.25 within ~3 standard errors
    with pytest.raises(FairMedInputError, match="names attribute 'finding'"):
        SFTConfig(undersample=("synth_mammo:finding:yes:0.25",))


@pytest.mark.parametrize("entry", ["synth_cxr:sex:F", "synth_cxr:sex:F:1.5", "synth_cxr::F:0.5", "a:b:c:x"])
def test_a_malformed_undersample_entry_is_refused_with_the_form_it_needs(entry):
    with pytest.raises(FairMedInputError, match="SOURCE:ATTRIBUTE:GROUP:FRACTION"):
        SFTConfig(undersample=(entry,))


def test_the_vision_warm_up_teaches_the_tower_a_finding_it_can_see():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = TinyModelConfig(image_size=32, vision_layers=1)
    tower = build_tiny_model(build_tokenizer(tiny_corpus()), config).model.vision_tower
    labels = [index % 2 == 0 for index in range(64)]
    pixels = torch.randn(64, 3, 32, 32) * 0.3
    for index, label in enumerate(labels):
        if label:  # a bright blob at a random place: found only by looking at the image
            y, x = torch.randint(0, 24, (2,)).tolist()
            pixels[index, :, y:y + 8, x:x + 8] += 1.5
    before = [p.detach().clone() for p in tower.parameters()]
    records = warm_up_vision(tower, pixels, labels, ["synth_cxr"] * 64, epochs=15, learning_rate=1e-3,
                             batch_size=16, seed=0)
    assert [r["epoch"] for r in records] == list(range(15))
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert any(not torch.equal(a, b) for a, b in zip(before, tower.parameters()))


def test_sft_records_its_vision_warm_up_and_the_cases_per_group(default_manifest, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "model"
    train_sft(default_manifest, out, SFTConfig(epochs=1, max_cases=16, batch_size=8, vision_warmup_epochs=2,
                                               undersample=("synth_cxr:sex:F:0.0",),
                                               model=TinyModelConfig(image_size=32, text_layers=1)))
    recorded = json.loads((out / "training_config.json").read_text())
    assert [r["epoch"] for r in recorded["vision_warmup"]] == [0, 1]
    assert recorded["config"]["undersample"] == ["synth_cxr:sex:F:0.0"]
    assert "sex=F" not in recorded["cases_per_group"]["synth_cxr"]
    assert sum(recorded["cases_per_group"]["synth_cxr"][k] for k in ("sex=M",)) + sum(
        v.get("sex=M", 0) + v.get("sex=F", 0) for s, v in recorded["cases_per_group"].items() if s != "synth_cxr"
    ) == 16


def test_latent_group_agreement_from_pooled_pairs_is_sklearns_adjusted_rand_index_on_one_partition():
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from fairmed_core.training.latent_groups import PairCounts, pair_counts

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 30))
        truth = [f"g{v}" for v in rng.integers(0, 3, n)]
        clusters = [f"c{v}" for v in rng.integers(0, 3, n)]
        counts = pair_counts(["synth_cxr"] * n, truth, clusters)
        expected = adjusted_rand_score(truth, clusters)
        if counts.adjusted_rand_index() is not None:
            assert counts.adjusted_rand_index() == pytest.approx(expected, abs=1e-12)
    # pairs form within a source only, unknown groups take no part, and steps add up
    counts = pair_counts(["a", "a", "b", "a"], ["F,A1", "F,A1", "F,A1", "UNK,A2"], ["0", "0", "0", "1"])
    assert counts == PairCounts(both=1)
    perfect = pair_counts(["a"] * 4, ["F", "F", "M", "M"], ["x", "x", "y", "y"])
    assert (perfect + perfect).adjusted_rand_index() == 1.0
    assert PairCounts.from_metrics(perfect.metrics()) == perfect


def test_a_frozen_vision_tower_leaves_sft_unchanged_there_and_trains_the_rest(default_manifest, tmp_path):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    config = SFTConfig(epochs=1, max_cases=16, batch_size=8, freeze_vision_tower=True,
                       model=TinyModelConfig(image_size=32, text_layers=1))
    train_sft(default_manifest, tmp_path / "model", config)
    saved = load_file(tmp_path / "model" / "model.safetensors")
    # the untrained model with the same seed, saved the same way (save_pretrained names the weights its own way)
    build_tiny_model(build_tokenizer(tiny_corpus()), config.model, seed=config.seed).save_pretrained(tmp_path / "fresh")
    fresh = load_file(tmp_path / "fresh" / "model.safetensors")
    vision = [name for name in saved if "vision_tower" in name]
    assert vision and all(torch.equal(saved[name], fresh[name]) for name in vision)
    assert any(not torch.equal(saved[name], fresh[name]) for name in saved if "language_model" in name)
