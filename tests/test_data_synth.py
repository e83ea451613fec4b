"""The synthetic benchmark: determinism, true counterfactuals, and the measurable effect of every bias knob."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from fairmed_core.data import synth
from fairmed_core.data.synth import (
    SKIN_TONES,
    SOURCES,
    AcquisitionKnob,
    LabelNoiseKnob,
    PrevalenceShift,
    ShortcutKnob,
    SynthConfig,
    attribute_region,
    case_from_record,
    ensure_default_dataset,
    finding_mask,
    generate,
    render,
    render_many,
    write_dataset,
)
from fairmed_core.errors import FairMedInputError

SMALL = SynthConfig(n=90)


def _without_finding(case):
    """The same patient without the drawn finding (derm: without the lesion, which every derm case has)."""
    if case.source == "synth_derm":
        return dataclasses.replace(case, latent=dataclasses.replace(case.latent, finding_intensity=0.0))
    return dataclasses.replace(case, latent=dataclasses.replace(case.latent, finding=False))


def _other_sex(case):
    return "F" if case.sex == "M" else "M"


@pytest.fixture(scope="module")
def cases():
    return generate(SMALL)


# ------------------------------------------------------------------------------------------- determinism


def test_same_config_gives_identical_images_and_manifest_bytes(tmp_path):
    first = write_dataset(generate(SMALL), tmp_path / "a", config=SMALL)
    second = write_dataset(generate(SMALL), tmp_path / "b", config=SMALL)
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a" / "config.json").read_bytes() == (tmp_path / "b" / "config.json").read_bytes()
    for png in sorted((tmp_path / "a" / "img").iterdir()):
        assert png.read_bytes() == (tmp_path / "b" / "img" / png.name).read_bytes()


def test_different_seeds_give_different_cases_and_images():
    first, second = generate(SMALL), generate(dataclasses.replace(SMALL, seed=1))
    assert [c.latent for c in first] != [c.latent for c in second]
    assert not all(np.array_equal(a, b) for a, b in zip(render_many(first[:10]), render_many(second[:10])))


def test_cases_are_divided_among_sources_with_unique_ids(cases):
    assert [c.source for c in cases] == [s for s in SOURCES for _ in range(30)]
    assert len({c.case_id for c in cases}) == len(cases)
    assert all(c.label == c.latent.finding for c in cases)
    assert all((c.skin_tone is not None) == (c.source == "synth_derm") for c in cases)


def test_render_many_equals_render_one_by_one(cases):
    for case, image in zip(cases[::7], render_many(cases[::7])):
        assert np.array_equal(image, render(case))


def test_images_have_the_documented_shape_and_type(cases):
    for case in cases[::30]:
        image = render(case)
        assert image.dtype == np.uint8
        assert image.shape == ((64, 64, 3) if case.source == "synth_derm" else (64, 64))
    big = dataclasses.replace(cases[0], settings=dataclasses.replace(cases[0].settings, image_size=96))
    assert render(big).shape == (96, 96)


def test_generate_and_render_take_well_under_a_second_per_thousand_cases():
    start = time.perf_counter()
    render_many(generate(SynthConfig(n=1000)))
    assert time.perf_counter() - start < 1.0  # measured ~0.25 s; generous for a loaded CI machine


# ---------------------------------------------------------------------------------------- counterfactuals


def _overrides(case):
    yield "sex", _other_sex(case)
    yield "age", 22 if case.age > 50 else 84
    if case.source == "synth_derm":
        yield "skin_tone", next(t for t in SKIN_TONES if t != case.skin_tone)


def test_null_intervention_returns_the_factual_image(cases):
    for case in cases[::3]:
        factual = render(case)
        assert np.array_equal(render(case, sex=case.sex), factual)
        assert np.array_equal(render(case, age=case.age), factual)
        if case.source == "synth_derm":
            assert np.array_equal(render(case, skin_tone=case.skin_tone), factual)


def test_override_draws_the_patient_as_if_it_had_those_attributes(cases):
    for case in cases[::3]:
        for attribute, value in _overrides(case):
            assert np.array_equal(render(case, **{attribute: value}),
                                  render(dataclasses.replace(case, **{attribute: value})))


def test_there_and_back_returns_the_original_exactly(cases):
    for case in cases[::3]:
        for attribute, value in _overrides(case):
            moved = dataclasses.replace(case, **{attribute: value})
            assert np.array_equal(render(moved, **{attribute: getattr(case, attribute)}), render(case))


def test_sex_counterfactual_changes_only_the_documented_region(cases):
    changed_somewhere = {source: False for source in SOURCES}
    for case in cases:
        region = attribute_region(case, "sex")
        factual, counterfactual = render(case), render(case, sex=_other_sex(case))
        changed = np.any(factual != counterfactual, axis=-1) if factual.ndim == 3 else factual != counterfactual
        assert not (changed & ~region).any(), case.case_id
        changed_somewhere[case.source] |= bool(changed.any())
        if case.source == "synth_cxr":  # breast shadows lie over the lower lung fields, never the upper third
            assert not region[:26].any()
        if case.source == "synth_derm":  # hair strands are thin: a small part of the image
            assert region.mean() < 0.15
    assert all(changed_somewhere.values())


def test_age_counterfactual_in_chest_xray_stays_inside_the_torso_without_the_noise_knob():
    config = dataclasses.replace(SMALL, sources=("synth_cxr",), acquisition=())
    for case in generate(config)[:20]:
        region = attribute_region(case, "age")
        changed = render(case) != render(case, age=22 if case.age > 50 else 84)
        assert changed.any() and not (changed & ~region).any()
        assert not region.all()


def test_the_finding_stays_in_place_under_every_override(cases):
    for case in [c for c in cases if c.label][::2]:
        core = finding_mask(case)
        for attribute, value in _overrides(case):
            with_finding = render(case, **{attribute: value}).astype(int)
            without = render(_without_finding(case), **{attribute: value}).astype(int)
            footprint = np.abs(with_finding - without)
            footprint = footprint.max(axis=-1) if footprint.ndim == 3 else footprint
            assert (footprint[core] > 0).all(), (case.case_id, attribute)
            rows, columns = np.nonzero(footprint)
            core_rows, core_columns = np.nonzero(core)
            assert abs(rows.mean() - core_rows.mean()) < 1.5 and abs(columns.mean() - core_columns.mean()) < 1.5


def test_invalid_overrides_are_refused(cases):
    cxr = next(c for c in cases if c.source == "synth_cxr")
    with pytest.raises(FairMedInputError):
        render(cxr, skin_tone="dark")
    with pytest.raises(FairMedInputError):
        render(cxr, sex="X")
    with pytest.raises(FairMedInputError):
        render(cxr, race="any")
    assert np.array_equal(render(cxr, age="A4"), render(cxr, age=84))


def test_a_manifest_line_rebuilds_the_same_case(tmp_path, cases):
    manifest = write_dataset(cases, tmp_path)
    for case, line in zip(cases, manifest.read_text().splitlines()):
        assert case_from_record(json.loads(line)) == case


def test_a_record_without_latent_is_not_a_synthetic_case():
    with pytest.raises(FairMedInputError):
        case_from_record({"id": "x", "dataset": "synth_cxr", "split": "test"})


def test_default_dataset_is_written_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "SynthConfig", lambda: SMALL)
    manifest = ensure_default_dataset(tmp_path)
    assert manifest == tmp_path / "synth-default" / "manifest.jsonl"
    assert len(manifest.read_text().splitlines()) == SMALL.n
    assert [p.name for p in tmp_path.iterdir()] == ["synth-default"]  # no staging folder left behind

    def must_not_write(*args, **kwargs):
        raise AssertionError("rewrote an existing default dataset")

    monkeypatch.setattr(synth, "write_dataset", must_not_write)
    assert ensure_default_dataset(tmp_path) == manifest


# ------------------------------------------------------------------------------------------------- knobs
# Every random decision is drawn before the knobs apply, so configs that differ in one knob differ only in it.

BIG = SynthConfig(n=15000)


def _share(values) -> float:
    return float(np.mean(values))


@pytest.fixture(scope="module")
def big_cases():
    return generate(BIG)


def _by_source(cases, source):
    return [c for c in cases if c.source == source]


def test_representation_knobs_set_group_shares(big_cases):
    for source, female in BIG.female_share:
        assert _share([c.sex == "F" for c in _by_source(big_cases, source)]) == pytest.approx(female, abs=0.02)
    cxr_shares = dict(BIG.age_group_shares)["synth_cxr"]
    for group, share in zip(("A1", "A2", "A3", "A4"), cxr_shares):
        assert _share([c.age_group == group for c in _by_source(big_cases, "synth_cxr")]) == pytest.approx(
            share, abs=0.02)
    derm = _by_source(big_cases, "synth_derm")
    for tone, share in zip(SKIN_TONES, BIG.skin_tone_shares):
        assert _share([c.skin_tone == tone for c in derm]) == pytest.approx(share, abs=0.02)


def test_changing_a_representation_knob_changes_only_that_attribute(big_cases):
    balanced = generate(dataclasses.replace(BIG, female_share={"synth_cxr": 0.5}, n=5000, sources=("synth_cxr",)))
    cxr, cxr_balanced = _by_source(big_cases, "synth_cxr"), _by_source(balanced, "synth_cxr")
    assert _share([c.sex == "F" for c in cxr_balanced]) == pytest.approx(0.5, abs=0.02)
    assert [c.latent for c in cxr] == [c.latent for c in cxr_balanced]
    assert [c.age for c in cxr] == [c.age for c in cxr_balanced]


def test_prevalence_and_prevalence_shift_set_group_prevalence():
    config = dataclasses.replace(
        BIG, prevalence={"synth_cxr": 0.2}, prevalence_shift=(PrevalenceShift("synth_cxr", "age_group", "A4", 0.3),),
        sources=("synth_cxr",), n=8000)
    cxr = generate(config)
    assert _share([c.label for c in cxr if c.age_group == "A3"]) == pytest.approx(0.2, abs=0.02)
    assert _share([c.label for c in cxr if c.age_group == "A4"]) == pytest.approx(0.5, abs=0.03)


def test_label_noise_flips_answers_in_its_group_only(big_cases):
    cxr = _by_source(big_cases, "synth_cxr")
    knob = BIG.label_noise[0]
    assert (knob.source, knob.attribute, knob.group) == ("synth_cxr", "sex", "F")
    women_positive = [c for c in cxr if c.sex == "F" and c.label]
    assert _share([not c.observed_label for c in women_positive]) == pytest.approx(0.10, abs=0.03)
    assert all(c.observed_label == c.label for c in cxr if c.sex == "M")
    assert all(c.observed_label == c.label for c in cxr if c.sex == "F" and not c.label)
    false_positive = dataclasses.replace(
        BIG, sources=("synth_cxr",), n=5000,
        label_noise=(LabelNoiseKnob("synth_cxr", "sex", "M", false_positive_rate=0.2),))
    men_negative = [c for c in generate(false_positive) if c.sex == "M" and not c.label]
    assert _share([c.observed_label for c in men_negative]) == pytest.approx(0.2, abs=0.02)


def test_missing_demographics_fraction_empties_demo_strings(big_cases):
    assert _share([c.demo_missing for c in big_cases]) == pytest.approx(BIG.missing_demographics_fraction, abs=0.01)
    assert all((c.demo == "") == c.demo_missing for c in big_cases[:500])
    none_missing = generate(dataclasses.replace(SMALL, missing_demographics_fraction=0.0))
    assert not any(c.demo_missing for c in none_missing)


def test_shortcut_marker_tracks_the_label_in_one_group_only(big_cases):
    derm = _by_source(big_cases, "synth_derm")
    knob = BIG.shortcut
    light = [c for c in derm if c.skin_tone == knob.group]
    others = [c for c in derm if c.skin_tone != knob.group]
    assert _share([c.latent.shortcut for c in light if c.label]) == pytest.approx(knob.rate_if_positive, abs=0.04)
    assert _share([c.latent.shortcut for c in light if not c.label]) == pytest.approx(knob.rate_if_negative, abs=0.02)
    for label in (True, False):
        assert _share([c.latent.shortcut for c in others if c.label == label]) == pytest.approx(
            knob.rate_other_groups, abs=0.04)
    assert not any(c.latent.shortcut for c in big_cases if c.source != knob.source)
    moved = dataclasses.replace(BIG, sources=("synth_cxr",), n=5000,
                                shortcut=ShortcutKnob("synth_cxr", "sex", "F", 0.9, 0.0, 0.0))
    cxr = generate(moved)
    assert _share([c.latent.shortcut for c in cxr if c.sex == "F" and c.label]) == pytest.approx(0.9, abs=0.03)


def test_shortcut_marker_is_drawn_exactly_when_present(cases):
    derm = [c for c in cases if c.source == "synth_derm"]
    marked = next(c for c in derm if c.latent.shortcut)
    unmarked = dataclasses.replace(marked, latent=dataclasses.replace(marked.latent, shortcut=False))
    difference = np.any(render(marked) != render(unmarked), axis=-1)
    assert difference[:12, :12].sum() > 10 and not difference[20:, 20:].any()  # top-left corner only


def test_split_fractions_give_exact_counts():
    config = dataclasses.replace(SMALL, n=300, split_fractions=(0.5, 0.2, 0.3))
    for source in SOURCES:
        splits = [c.split for c in generate(config) if c.source == source]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (50, 20, 30)


def _noise_std(case, **overrides) -> float:
    """Std of the rendered noise, on mid-grey pixels where quantisation bounds cannot clip it."""
    silent = dataclasses.replace(case, settings=dataclasses.replace(case.settings, noise_std=0.0))
    clean = render(silent, **overrides).astype(float)
    noise = render(case, **overrides).astype(float) - clean
    return float(noise[(clean > 60) & (clean < 195)].std())


def test_acquisition_noise_knob_makes_its_group_noisier(cases):
    knob = BIG.acquisition[0]
    assert (knob.source, knob.group, knob.noise_factor) == ("synth_cxr", "A4", 1.8)
    cxr = [c for c in cases if c.source == "synth_cxr"]
    ratio = np.mean([_noise_std(c, age=84) / _noise_std(c, age=63) for c in cxr])
    assert ratio == pytest.approx(1.8, rel=0.05)
    assert _noise_std(cxr[0], age=63) == pytest.approx(0.06 * 255, rel=0.1)


def _finding_signal(case, **overrides) -> float:
    """Mean absolute change the finding makes inside its core (noise cancels: same noise realisation)."""
    difference = np.abs(render(case, **overrides).astype(float) - render(_without_finding(case), **overrides))
    difference = difference.mean(axis=-1) if difference.ndim == 3 else difference
    return float(difference[finding_mask(case)].mean())


def test_acquisition_contrast_knob_makes_dark_skin_lesions_fainter(cases):
    lesions = [c for c in cases if c.source == "synth_derm" and c.label]
    off = [dataclasses.replace(c, settings=dataclasses.replace(c.settings, acquisition=())) for c in lesions]
    ratio = np.mean([_finding_signal(a, skin_tone="dark") / _finding_signal(b, skin_tone="dark")
                     for a, b in zip(lesions, off)])
    assert 0.6 < ratio < 0.8  # knob 0.7
    assert all(_finding_signal(a, skin_tone="light") == _finding_signal(b, skin_tone="light")
               for a, b in zip(lesions[:3], off[:3]))


def test_breast_attenuation_hides_opacities_under_breast_shadows(big_cases):
    cxr = [c for c in _by_source(big_cases, "synth_cxr")[:1000] if c.label]
    under = [c for c in cxr if (finding_mask(c) & attribute_region(c, "sex")).sum() > 20][:12]
    assert len(under) >= 6
    ratio = np.mean([_finding_signal(c, sex="F") / _finding_signal(c, sex="M") for c in under])
    assert ratio < 0.9
    off = [dataclasses.replace(c, settings=dataclasses.replace(c.settings, cxr_breast_attenuation=0.0))
           for c in under]
    assert np.mean([_finding_signal(c, sex="F") / _finding_signal(c, sex="M") for c in off]) == pytest.approx(
        1.0, abs=0.02)


def test_density_masking_hides_masses_in_younger_women(cases):
    masses = [c for c in cases if c.source == "synth_mammo" and c.label]
    young_over_old = np.mean([_finding_signal(c, age=25) / _finding_signal(c, age=80) for c in masses])
    assert young_over_old < 0.7
    off = [dataclasses.replace(c, settings=dataclasses.replace(c.settings, mammo_density_masking=0.0)) for c in masses]
    assert np.mean([_finding_signal(c, age=25) / _finding_signal(c, age=80) for c in off]) == pytest.approx(
        1.0, abs=0.02)


def test_config_round_trips_through_its_json_form():
    config = SynthConfig(n=120, female_share={"synth_cxr": 0.4},
                         acquisition=(AcquisitionKnob("synth_mammo", "age_group", "A2", noise_factor=1.5),))
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert set(SynthConfig.field_help()) == {f.name for f in dataclasses.fields(SynthConfig)}
    assert all(SynthConfig.field_help().values())


def test_invalid_configs_are_refused():
    with pytest.raises(FairMedInputError):
        SynthConfig(sources=("synth_ct",))
    with pytest.raises(FairMedInputError):
        SynthConfig(skin_tone_shares=(0.5, 0.5, 0.5))
    with pytest.raises(FairMedInputError):
        SynthConfig(missing_demographics_fraction=1.5)
