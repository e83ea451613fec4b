"""The diffusion counterfactual generator: training and exact resumption, safe loading, deterministic edits,
input errors, and the shipped generator's reconstruction quality."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairmed_core.counterfactual import (
    CounterfactualGeneratorConfig,
    export_generator,
    load_generator,
    measure_on_benchmark,
    train_generator,
)
from fairmed_core.counterfactual.checkpoint import recover, replace_folder
from fairmed_core.data import read_manifest
from fairmed_core.errors import FairMedInputError
from tests.conftest import link_case_images

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "assets" / "counterfactual" / "synth-sex"
# Null-intervention MAE (0..255) of the shipped generator on the first 8 test cases (round-robin over sources)
# at 20 DDIM steps, measured 2026-11-23: CXR and mammography 5.1-10.6 (mean 7.4), dermoscopy 9.6-37.5 (mean
# 19.9; see assets/counterfactual/synth-sex/README.md). The bounds leave margin for floating-point differences
# between machines and are far below an untrained network's (tens to a hundred grey levels).
SHIPPED_GRAY_BOUND = 10.0
SHIPPED_DERM_BOUND = 25.0

# A tiny UNet (three levels, so its one attention level is 16x16: at 32x32 a step costs eight times more).
TINY = CounterfactualGeneratorConfig(
    attribute="sex", block_out_channels=(8, 16, 16), norm_num_groups=4, train_steps=30, batch_size=8,
    learning_rate=2e-3, warmup_steps=5, checkpoint_every=10, inversion_steps=10, seed=0,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_manifest(default_manifest, tmp_path_factory) -> Path:
    """36 training cases with a known sex (12 per source, both sexes in each, male mammograms included) and
    12 test cases, images linked beside it, every other field as the benchmark wrote it."""
    records = [json.loads(line) for line in default_manifest.read_text().splitlines() if line.strip()]
    folder = tmp_path_factory.mktemp("cf-data")
    chosen, taken = [], {}
    for record in records:
        sex = record["true_attributes"]["sex"]
        known = bool(record["demo"])
        key = (record["dataset"], record["split"], sex)
        limit = {"train": 6, "test": 2}.get(record["split"], 0)
        if known and taken.get(key, 0) < limit:
            taken[key] = taken.get(key, 0) + 1
            chosen.append(link_case_images(dict(record), default_manifest.parent, folder))
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


@pytest.fixture(scope="module")
def small_dataset(small_manifest):
    return read_manifest(small_manifest)


@pytest.fixture(scope="module")
def trained(small_manifest, tmp_path_factory):
    """The tiny config trained for 30 steps without interruption: (folder, summary)."""
    out = tmp_path_factory.mktemp("cf-tiny") / "generator"
    return out, train_generator(small_manifest, out, TINY)


@pytest.fixture(scope="module")
def generator(trained):
    return load_generator(trained[0])


def _test_cases(dataset, sources=("synth_cxr", "synth_derm", "synth_mammo"), per_source=1):
    cases = dataset.cases[dataset.cases["split"] == "test"]
    rows = [r for s in sources for r in cases[cases["dataset"] == s].head(per_source).to_dict(orient="records")]
    images = [dataset.load_image(r["case_id"]) for r in rows]
    return images, [r["dataset"] for r in rows], [r["sex"] for r in rows]


def _mae(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


# -- training and checkpoints ---------------------------------------------------------------------------------
def test_training_writes_a_loadable_safetensors_checkpoint(trained, generator):
    out, summary = trained
    assert summary.step == 30 and len(summary.losses) == 30 and summary.resumed_from == 0
    assert all(np.isfinite(summary.losses))
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "unet" / "config.json").is_file() and (out / "scheduler" / "scheduler_config.json").is_file()
    assert not list(out.parent.glob(".generator.*")), "no temporary or old checkpoint folders are left"
    metadata = json.loads((out / "generator_config.json").read_text())
    assert metadata["step"] == 30
    assert metadata["config"]["classes"] == ["F", "M"]
    assert metadata["source_modes"] == {"synth_cxr": "L", "synth_derm": "RGB", "synth_mammo": "L"}
    assert metadata["class_counts"]["synth_mammo"] == {"F": 6, "M": 6}
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["beta_schedule"] == "squaredcos_cap_v2"
    assert scheduler["timestep_spacing"] == "trailing" and scheduler["set_alpha_to_one"] is True
    assert scheduler["clip_sample"] is False
    # The training state holds plain tensors only: it loads with weights_only.
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert int(state["step"]) == 30 and state["losses"].shape == (30,)
    assert generator.info.step == 30 and generator.config.num_class_embeds == 9


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_batches_and_losses(small_manifest, trained,
                                                                                   tmp_path):
    _, uninterrupted = trained
    out = tmp_path / "generator"

    def kill_at_17(step, total):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generator(small_manifest, out, TINY, progress=kill_at_17)
    assert json.loads((out / "generator_config.json").read_text())["step"] == 10  # the last checkpoint
    seen = []
    resumed = train_generator(small_manifest, out, TINY, progress=lambda s, t: seen.append((s, t)))
    assert resumed.resumed_from == 10 and resumed.step == 30
    assert seen[0] == (11, 30) and seen[-1] == (30, 30)
    assert len(resumed.losses) == 30
    np.testing.assert_allclose(resumed.losses, uninterrupted.losses, rtol=1e-6)
    # Extending a finished run: more steps continue from 30.
    longer = train_generator(small_manifest, out, CounterfactualGeneratorConfig(
        **{**TINY.to_dict(), "train_steps": 34}))
    assert longer.resumed_from == 30 and longer.step == 34 and len(longer.losses) == 34
    assert longer.losses[:30] == resumed.losses
    # Asking for no more steps than done trains nothing.
    again = train_generator(small_manifest, out, CounterfactualGeneratorConfig(
        **{**TINY.to_dict(), "train_steps": 34}))
    assert again.resumed_from == 34 and again.losses == longer.losses


def test_resume_refuses_a_checkpoint_with_other_settings(small_manifest, trained, tmp_path):
    out = tmp_path / "generator"
    shutil.copytree(trained[0], out)
    other = CounterfactualGeneratorConfig(**{**TINY.to_dict(), "learning_rate": 1e-4})
    with pytest.raises(FairMedInputError, match="other settings"):
        train_generator(small_manifest, out, other)


def test_checkpoint_swap_is_atomic_and_recovers_from_a_crash(tmp_path):
    target = tmp_path / "gen"
    replace_folder(target, lambda d: (d / "a.txt").write_text("1"))
    (target / "README.md").write_text("card")

    def broken(folder):
        (folder / "a.txt").write_text("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_folder(target, broken)
    assert (target / "a.txt").read_text() == "1" and not (tmp_path / ".gen.tmp").exists()
    replace_folder(target, lambda d: (d / "a.txt").write_text("3"))
    assert (target / "a.txt").read_text() == "3" and (target / "README.md").read_text() == "card"
    # A crash between the two renames: the old folder moved aside, the complete new one not yet in place.
    target.rename(tmp_path / ".gen.old")
    (tmp_path / ".gen.tmp").mkdir()
    (tmp_path / ".gen.tmp" / "a.txt").write_text("4")
    recover(target)
    assert (target / "a.txt").read_text() == "4"
    assert not (tmp_path / ".gen.old").exists() and not (tmp_path / ".gen.tmp").exists()


# -- edits ----------------------------------------------------------------------------------------------------
def test_reconstruction_is_deterministic_keeps_modes_and_beats_a_random_image(generator, small_dataset):
    images, sources, factual = _test_cases(small_dataset)
    first = generator.reconstruct(images, sources, factual)
    second = generator.reconstruct(images, sources, factual)
    assert [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, second)] == [True] * 3
    assert [im.mode for im in first] == ["L", "RGB", "L"] and all(im.size == (64, 64) for im in first)
    rng = np.random.default_rng(0)
    for original, rebuilt in zip(images, first):
        noise = Image.fromarray(rng.integers(0, 256, np.asarray(original).shape, dtype=np.uint8), original.mode)
        assert _mae(rebuilt, original) < 0.5 * _mae(noise, original)


def test_a_batch_of_two_equals_two_single_edits(generator, small_dataset):
    images, sources, factual = _test_cases(small_dataset, ("synth_cxr", "synth_derm"))
    target = ["M" if value == "F" else "F" for value in factual]
    together = generator.counterfactuals(images, sources, factual, target)
    alone = [generator.counterfactuals([im], [s], [f], [t])[0] for im, s, f, t in zip(images, sources, factual,
                                                                                       target)]
    for a, b in zip(together, alone):
        assert a.mode == b.mode
        # Equal up to float rounding of batched convolutions: at most one grey level, on few pixels.
        difference = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    # The edit is an edit: changing the class changes the image.
    reconstructed = generator.reconstruct(images, sources, factual)
    assert any(_mae(a, b) > 0 for a, b in zip(together, reconstructed))


def test_export_drops_the_training_state_and_edits_the_same(generator, trained, small_dataset, tmp_path):
    shipped = export_generator(trained[0], tmp_path / "shipped")
    assert not (shipped / "training_state.pt").exists()
    exported = load_generator(shipped)
    images, sources, factual = _test_cases(small_dataset, ("synth_derm",))
    assert np.array_equal(np.asarray(exported.reconstruct(images, sources, factual)[0]),
                          np.asarray(generator.reconstruct(images, sources, factual)[0]))
    # New edit defaults travel with the export; settings that change the network cannot.
    (trained[0] / "attribute_classifier").mkdir(exist_ok=True)
    (trained[0] / "attribute_classifier" / "classifier_config.json").write_text("{}")
    tuned = load_generator(export_generator(trained[0], tmp_path / "tuned", edit_defaults={"inversion_steps": 20,
                                                                                             "strength": 0.8}))
    assert (tuned.config.inversion_steps, tuned.config.strength) == (20, 0.8)
    assert tuned.config.same_model(generator.config)
    assert (tmp_path / "tuned" / "attribute_classifier" / "classifier_config.json").is_file()
    shutil.rmtree(trained[0] / "attribute_classifier")
    with pytest.raises(FairMedInputError, match="only edit settings"):
        export_generator(trained[0], tmp_path / "bad", edit_defaults={"image_size": 32})
    with pytest.raises(FairMedInputError, match="inversion_steps must divide"):
        export_generator(trained[0], tmp_path / "bad", edit_defaults={"inversion_steps": 7})


def test_measure_on_benchmark_compares_with_true_counterfactuals(generator, small_dataset):
    measured = measure_on_benchmark(generator, small_dataset, n=3, steps=10)
    assert len(measured.case_ids) == 3 and {m.source for m in measured.per_source} == {
        "synth_cxr", "synth_derm", "synth_mammo"}
    overall = measured.overall
    assert overall.n == 3 and 0 < overall.reconstruction_mae < 255 and overall.baseline_mae > 0
    # Outside the attribute's region the true counterfactual is the factual image, so the baseline error
    # concentrates in the region.
    assert overall.region_baseline_mae > overall.baseline_mae


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_edit_inputs_are_named(generator, small_dataset):
    images, sources, factual = _test_cases(small_dataset, ("synth_cxr",))
    with pytest.raises(FairMedInputError, match="never saw"):
        generator.counterfactuals(images, sources, factual, ["X"])
    with pytest.raises(FairMedInputError, match="not trained on source"):
        generator.counterfactuals(images, ["synth_ct"], factual, ["M"])
    with pytest.raises(FairMedInputError, match="32x32"):
        generator.counterfactuals([images[0].resize((32, 32))], sources, factual, ["M"])
    with pytest.raises(FairMedInputError, match="mode"):
        generator.counterfactuals([images[0].convert("RGB")], sources, factual, ["M"])
    with pytest.raises(FairMedInputError, match="per image"):
        generator.counterfactuals(images, sources, factual, ["M", "F"])
    with pytest.raises(FairMedInputError, match="divide"):
        generator.reconstruct(images, sources, factual, steps=33)


def test_check_compatible_names_attribute_source_and_image_size(generator, small_dataset, small_manifest,
                                                                tmp_path):
    generator.check_compatible(small_dataset, "sex")
    with pytest.raises(FairMedInputError, match="edits 'sex', not 'age_group'"):
        generator.check_compatible(small_dataset, "age_group")
    # The same cases with 32x32 images.
    records = [json.loads(line) for line in small_manifest.read_text().splitlines()][:6]
    for index, record in enumerate(records):
        path = tmp_path / f"{index}.png"
        Image.open(small_manifest.parent / record["images"][0]).resize((32, 32)).save(path)
        record["images"] = [str(path)]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(FairMedInputError, match="works on 64x64"):
        generator.check_compatible(read_manifest(manifest), "sex")


def test_settings_are_checked():
    with pytest.raises(FairMedInputError, match="divide 1000"):
        CounterfactualGeneratorConfig(inversion_steps=33)
    with pytest.raises(FairMedInputError, match="norm_num_groups"):
        CounterfactualGeneratorConfig(block_out_channels=(12, 24), norm_num_groups=8)
    with pytest.raises(FairMedInputError, match="UNK"):
        CounterfactualGeneratorConfig(classes=("F", "UNK"))


def test_training_refuses_a_group_without_cases_and_an_attribute_with_one_group(small_manifest, small_dataset,
                                                                                 tmp_path):
    from dataclasses import replace

    from fairmed_core.counterfactual.training import load_training_data

    no_men = replace(small_dataset, cases=small_dataset.cases[small_dataset.cases["sex"] != "M"])
    with pytest.raises(FairMedInputError, match=r"sex \['M'\] has no training cases"):
        load_training_data(no_men, replace(TINY, classes=("F", "M")))
    with pytest.raises(FairMedInputError, match="at least two groups"):
        load_training_data(no_men, TINY)  # classes resolved from the data: F alone
    with pytest.raises(FairMedInputError, match="no attribute 'race'"):
        train_generator(small_manifest, tmp_path / "g", replace(TINY, attribute="race"))
    assert not (tmp_path / "g").exists()


class _Trap:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_refuses_missing_folders_files_and_pickled_weights(trained, tmp_path):
    with pytest.raises(FairMedInputError, match="not found"):
        load_generator(tmp_path / "nowhere")
    no_config = tmp_path / "no-config"
    shutil.copytree(trained[0], no_config)
    (no_config / "generator_config.json").unlink()
    with pytest.raises(FairMedInputError, match="missing generator_config.json"):
        load_generator(no_config)

    pickled = tmp_path / "pickled"
    shutil.copytree(trained[0], pickled)
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    trap = _Trap()
    trap.marker = marker
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(trap))
    with pytest.raises(FairMedInputError, match="pickled"):
        load_generator(pickled)
    assert not marker.exists(), "the pickle must not be loaded"


# -- the shipped generator ------------------------------------------------------------------------------------
@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no shipped generator in assets/counterfactual/synth-sex")
def test_shipped_generator_is_small_and_reconstructs_the_benchmark(default_manifest):
    weights = SHIPPED / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 8_000_000
    assert not (SHIPPED / "training_state.pt").exists() and (SHIPPED / "README.md").is_file()
    generator = load_generator(SHIPPED)
    dataset = read_manifest(default_manifest)
    generator.check_compatible(dataset, "sex")
    cases = dataset.cases[(dataset.cases["split"] == "test") & (dataset.cases["sex"] != "UNK")]
    rows = [r for depth in range(3) for s in generator.config.sources
            for r in cases[cases["dataset"] == s].iloc[depth:depth + 1].to_dict(orient="records")][:8]
    images = [dataset.load_image(r["case_id"]) for r in rows]
    rebuilt = generator.reconstruct(images, [r["dataset"] for r in rows], [r["sex"] for r in rows], steps=20)
    errors = [_mae(a, b) for a, b in zip(rebuilt, images)]
    gray = [e for e, r in zip(errors, rows) if r["dataset"] != "synth_derm"]
    derm = [e for e, r in zip(errors, rows) if r["dataset"] == "synth_derm"]
    assert np.mean(gray) < SHIPPED_GRAY_BOUND and np.mean(derm) < SHIPPED_DERM_BOUND, errors


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no shipped generator in assets/counterfactual/synth-sex")
def test_shipped_generator_makes_valid_chest_xray_pairs(default_manifest):
    """Validity on cases whose truth is known: chest X-rays edited to the other sex are recognised as that sex by
    the shipped attribute classifier and land closer to the true counterfactual than the unedited image."""
    from fairmed_core.counterfactual.analysis import generator_classifier, true_counterfactual
    from fairmed_core.counterfactual.validity import make_pairs

    generator = load_generator(SHIPPED)
    classifier = generator_classifier(generator)
    assert classifier is not None and classifier.infos["synth_cxr"].trustworthy
    assert not classifier.infos["synth_mammo"].trustworthy  # the card says so: mammography is not judged
    dataset = read_manifest(default_manifest)
    cases = dataset.cases[(dataset.cases["split"] == "test") & (dataset.cases["dataset"] == "synth_cxr")]
    rows = pd.concat([cases[cases["sex"] == "F"].head(2), cases[cases["sex"] == "M"].head(2)]).to_dict("records")
    pairs = make_pairs(generator, [dataset.load_image(r["case_id"]) for r in rows], [r["case_id"] for r in rows],
                       [r["dataset"] for r in rows], [r["sex"] for r in rows],
                       [["M" if r["sex"] == "F" else "F"] for r in rows], classifier=classifier,
                       truths=lambda i, t: true_counterfactual(rows[i], "sex", t), reversibility=False)
    assert all(p.validity.effectiveness_judged for p in pairs)
    assert sum(p.validity.effectiveness >= 0.5 for p in pairs) >= 3, [p.validity for p in pairs]
    assert np.mean([p.validity.truth_mae for p in pairs]) < np.mean([p.validity.baseline_mae for p in pairs])
