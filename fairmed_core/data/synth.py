"""The embedded synthetic benchmark: latent patients, explicit bias knobs, and the true counterfactual of every case.

Each case is a latent patient (anatomy, finding present/position/size/shape, a noise seed, a shortcut marker)
plus attributes (sex, age, and skin tone for dermatology). ``render(case, **overrides)`` draws the same latent
patient with other attributes: that image is the case's true counterfactual (DESIGN sections 2 and 6).

Sources
-------
- ``synth_cxr``: grayscale chest-like radiograph: torso, two lung fields, heart, ribs and spine; the finding is an
  opacity in one lung. *Sex*: female patients get breast soft-tissue shadows over the lower lateral lung fields,
  which also attenuate an opacity lying beneath them (``cxr_breast_attenuation``). *Age*: bone brightness falls
  with age (lower bone density) and lung texture (interstitial markings) rises.
- ``synth_derm``: RGB skin patch; the sensitive attribute is skin tone in three groups (``light`` ~ Fitzpatrick
  I-II, ``medium`` ~ III-IV, ``dark`` ~ V-VI). A pigmented lesion is always present; the finding is a lesion that
  is irregular, asymmetric, larger and darker (suspicious) rather than round and even (benign). Darkening is
  multiplicative, so a lesion has less contrast on darker skin. *Sex*: male patients show terminal hair strands.
  *Age*: skin mottling rises with age.
- ``synth_mammo``: grayscale breast-like shape with fibroglandular tissue; the finding is a mass. *Age*: density
  falls with age (dense breasts in younger women); dense tissue hides a mass (``mammo_density_masking``). *Sex*:
  male breasts have little glandular tissue.

Counterfactual rule
-------------------
An override changes exactly the appearance tied to that attribute, and nothing drawn from the latent patient.
Group-dependent acquisition difficulty (``SynthConfig.acquisition``: noise and finding contrast per group) is
part of how that group's images look, so it follows the attribute; the noise realisation (``noise_seed``) stays
the same. ``attribute_region(case, attribute)`` returns the pixels an attribute may change. The shortcut marker
and the label are latent: a counterfactual keeps them.

Determinism and speed
---------------------
Everything is a function of ``SynthConfig`` (seed included). All random decisions of ``generate`` are drawn
before any knob is applied, so two configs that differ in one knob differ only in what that knob controls.
Measured on the 2-core development machine (numpy 2.4, 64x64, default config): ``generate`` takes ~0.02 s per
1,000 cases and ``render_many`` ~0.25-0.3 s per 1,000 (synth_cxr ~0.3, synth_derm ~0.45, synth_mammo ~0.16 s
per 1,000): well under a second per thousand together. ``write_dataset`` (PNG encoding and the manifest) adds
~0.9 s per 1,000; the default 6,000-case benchmark is written in ~7 s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from fairmed_core.errors import FairMedInputError
from fairmed_core.settings import config_from_dict

from .schema import AGE_GROUPS, NO, UNKNOWN, YES, age_group, canonical_label, sex_group

__all__ = [
    "SOURCES",
    "SKIN_TONES",
    "RENDER_KEYWORDS",
    "QUESTIONS",
    "PrevalenceShift",
    "AcquisitionKnob",
    "LabelNoiseKnob",
    "ShortcutKnob",
    "SynthConfig",
    "RenderSettings",
    "SynthLatent",
    "SynthCase",
    "generate",
    "render",
    "render_many",
    "attribute_region",
    "finding_mask",
    "write_dataset",
    "case_from_record",
    "cases_from_dataset",
    "ensure_default_dataset",
    "DEFAULT_DATASET_DIR",
]

SOURCES = ("synth_cxr", "synth_derm", "synth_mammo")
SKIN_TONES = ("light", "medium", "dark")
# The data contract's attribute names, and the keyword ``render`` / ``attribute_region`` take for each.
RENDER_KEYWORDS = {"sex": "sex", "age_group": "age", "skin_tone": "skin_tone"}
QUESTIONS = {
    "synth_cxr": "<image> Is there an opacity in this chest X-ray? Answer yes or no.",
    "synth_derm": "<image> Is this skin lesion suspicious for malignancy (irregular, asymmetric, dark)? "
    "Answer yes or no.",
    "synth_mammo": "<image> Is there a mass in this mammogram? Answer yes or no.",
}
# Ages are drawn uniformly inside the age group's range.
AGE_RANGES = {"A1": (18, 25), "A2": (26, 50), "A3": (51, 75), "A4": (76, 95)}
# The age used when a counterfactual asks for an age group rather than an age.
REPRESENTATIVE_AGE = {"A1": 22, "A2": 38, "A3": 63, "A4": 84}
DEFAULT_DATASET_DIR = "synth-default"
_ATTRIBUTES = ("sex", "age_group", "skin_tone")
_CHUNK = 128  # cases drawn together: ~2 MB per float32 layer at 64x64, fast and cache-friendly


# --------------------------------------------------------------------------------------------------- knobs


@dataclass(frozen=True)
class PrevalenceShift:
    """Adds ``delta`` to a source's prevalence for the cases of one group (e.g. more opacities in A4)."""

    source: str
    attribute: str  # "sex" | "age_group" | "skin_tone"
    group: str
    delta: float


@dataclass(frozen=True)
class AcquisitionKnob:
    """Group-dependent acquisition difficulty: multiplies image noise and the finding's contrast for one group.

    It follows the attribute in counterfactuals (it is how that group's images look)."""

    source: str
    attribute: str
    group: str
    noise_factor: float = 1.0  # > 1: noisier images for this group
    finding_contrast: float = 1.0  # < 1: the finding is fainter for this group


@dataclass(frozen=True)
class LabelNoiseKnob:
    """Group-dependent label noise: the manifest answer is wrong at these rates for one group.

    ``false_negative_rate``: a true finding is recorded as "no" (under-diagnosis);
    ``false_positive_rate``: no finding is recorded as "yes"."""

    source: str
    attribute: str
    group: str
    false_negative_rate: float = 0.0
    false_positive_rate: float = 0.0


@dataclass(frozen=True)
class ShortcutKnob:
    """A spurious marker (a corner mark, e.g. a skin-marker pen dot) correlated with the label in one group only.

    In the group, the marker is present with ``rate_if_positive`` on positives and ``rate_if_negative`` on
    negatives; in every other group of the source it is present with ``rate_other_groups`` whatever the label.
    A model that learns the marker gains recall in that group and false positives elsewhere."""

    source: str
    attribute: str
    group: str
    rate_if_positive: float = 0.5
    rate_if_negative: float = 0.05
    rate_other_groups: float = 0.1


_KNOB_TYPES = {
    "prevalence_shift": PrevalenceShift,
    "acquisition": AcquisitionKnob,
    "label_noise": LabelNoiseKnob,
}
_PER_SOURCE_FIELDS = ("female_share", "age_group_shares", "prevalence", "noise_std", "finding_contrast")


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of the synthetic benchmark; the field help strings are its documentation.

    Per-source fields take a mapping (or pairs) ``{source: value}``; a source not named gets the neutral default
    given in the help. Per-group knobs are tuples of small knob dataclasses. The defaults create disparities a
    reviewer should find, each with a clinical story:
    under-represented women in chest X-rays whose breast shadows hide lower-zone opacities and whose findings
    are under-recorded; noisier, lower-quality films of the oldest patients; fainter lesions on dark skin plus
    a skin-marker shortcut that only holds for light skin; dense breast tissue in younger women that masks masses.

    The setting whose effect a clinician sees at once is ``mammo_density_masking``: render one patient at 25 and
    at 80 and the mass that stands out in the fatty breast is lost in the dense one; the audit then shows lower
    sensitivity in A2 than in A3/A4 (the reference model's recall on the default test split: A2 0.35, A3 0.53).
    Measured with the reference model on the default dataset's test split: recall F 0.53 vs M 0.67 (synth_cxr),
    accuracy A4 0.67 vs A2-A3 ~0.79 (synth_cxr), recall dark 0.62 vs light 0.74 (synth_derm); the shortcut adds
    ~11 points of recall on light skin (large-sample comparison with ``shortcut=None``).
    """

    n: int = _help("total number of cases, divided evenly among the sources", default=6000)
    seed: int = _help("random seed: the same config gives identical cases, images and manifest bytes", default=0)
    image_size: int = _help("image side in pixels (images are square)", default=64)
    sources: tuple[str, ...] = _help(f"data sources to generate, from {SOURCES}", default=SOURCES)
    # -- representation -------------------------------------------------------------------------------------
    female_share: tuple[tuple[str, float], ...] = _help(
        "fraction of female patients per source (neutral 0.5). Default: women are the minority in chest "
        "X-rays (0.30); mammography is almost all women",
        default=(("synth_cxr", 0.30), ("synth_derm", 0.50), ("synth_mammo", 0.97)),
    )
    age_group_shares: tuple[tuple[str, tuple[float, float, float, float]], ...] = _help(
        "shares of age groups A1..A4 per source (neutral 0.25 each); A1 and A4 are small minorities by default",
        default=(
            ("synth_cxr", (0.07, 0.28, 0.45, 0.20)),
            ("synth_derm", (0.12, 0.40, 0.36, 0.12)),
            ("synth_mammo", (0.04, 0.40, 0.44, 0.12)),
        ),
    )
    skin_tone_shares: tuple[float, float, float] = _help(
        "shares of light / medium / dark skin in synth_derm; dark skin is the minority (as in public "
        "dermatology datasets)",
        default=(0.62, 0.26, 0.12),
    )
    # -- prevalence ------------------------------------------------------------------------------------------
    prevalence: tuple[tuple[str, float], ...] = _help(
        "fraction of cases with the finding per source (neutral 0.3)",
        default=(("synth_cxr", 0.35), ("synth_derm", 0.30), ("synth_mammo", 0.30)),
    )
    prevalence_shift: tuple[PrevalenceShift, ...] = _help(
        "per-group additions to the prevalence (results clipped to [0.01, 0.99]). Default: opacities are "
        "more common in the oldest and rarer in the youngest chest patients; masses are rarer in young women",
        default=(
            PrevalenceShift("synth_cxr", "age_group", "A4", +0.15),
            PrevalenceShift("synth_cxr", "age_group", "A1", -0.15),
            PrevalenceShift("synth_mammo", "age_group", "A1", -0.15),
        ),
    )
    # -- acquisition difficulty ------------------------------------------------------------------------------
    noise_std: tuple[tuple[str, float], ...] = _help(
        "standard deviation of the acquisition noise (fraction of the intensity range) per source (neutral 0.05)",
        default=(("synth_cxr", 0.06), ("synth_derm", 0.04), ("synth_mammo", 0.06)),
    )
    finding_contrast: tuple[tuple[str, float], ...] = _help(
        "contrast of the finding per source (1.0 = the documented base; lower makes the task harder)",
        default=(("synth_cxr", 1.0), ("synth_derm", 1.0), ("synth_mammo", 1.0)),
    )
    acquisition: tuple[AcquisitionKnob, ...] = _help(
        "group-dependent acquisition difficulty. Default: the oldest chest patients get noisier films "
        "(portable, poorly positioned: noise x1.8); lesions on dark skin have 70% of the contrast",
        default=(
            AcquisitionKnob("synth_cxr", "age_group", "A4", noise_factor=1.8),
            AcquisitionKnob("synth_derm", "skin_tone", "dark", finding_contrast=0.7),
        ),
    )
    cxr_breast_attenuation: float = _help(
        "fraction of an opacity's contrast hidden under a full breast soft-tissue shadow (synth_cxr, women); "
        "0 turns the effect off",
        default=0.5,
    )
    mammo_density_masking: float = _help(
        "fraction of a mass's contrast hidden by fully dense breast tissue (synth_mammo). Density falls with age, "
        "so this lowers sensitivity in younger women, as dense breasts do in screening; 0 turns it off",
        default=0.6,
    )
    # -- spurious shortcut -----------------------------------------------------------------------------------
    shortcut: ShortcutKnob | None = _help(
        "a spurious corner marker correlated with the label in one group only (None: no marker). Default: "
        "skin-marker pen dots drawn next to suspicious lesions, only on light skin",
        default=ShortcutKnob("synth_derm", "skin_tone", "light", 0.5, 0.05, 0.10),
    )
    # -- labels and demographics -----------------------------------------------------------------------------
    label_noise: tuple[LabelNoiseKnob, ...] = _help(
        "group-dependent label noise in the manifest answer (the true label stays in the latent). Default: "
        "10% of women's chest opacities are recorded as 'no' (under-diagnosis)",
        default=(LabelNoiseKnob("synth_cxr", "sex", "F", false_negative_rate=0.10),),
    )
    missing_demographics_fraction: float = _help(
        "fraction of cases whose demo string is empty (every attribute UNK in the manifest)", default=0.10
    )
    split_fractions: tuple[float, float, float] = _help(
        "fractions of train / val / test cases per source", default=(0.5, 0.1, 0.4)
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise user-friendly inputs (dicts, lists) into hashable tuples
        set_(self, "sources", tuple(self.sources))
        for name in _PER_SOURCE_FIELDS:
            value = getattr(self, name)
            pairs = value.items() if isinstance(value, Mapping) else value
            set_(self, name, tuple((str(s), tuple(v) if isinstance(v, (list, tuple)) else float(v)) for s, v in pairs))
        for name, kind in _KNOB_TYPES.items():
            set_(self, name, tuple(k if isinstance(k, kind) else kind(**k) for k in getattr(self, name)))
        if isinstance(self.shortcut, Mapping):
            set_(self, "shortcut", ShortcutKnob(**self.shortcut))
        set_(self, "skin_tone_shares", tuple(float(x) for x in self.skin_tone_shares))
        set_(self, "split_fractions", tuple(float(x) for x in self.split_fractions))
        self._validate()

    def _validate(self) -> None:
        def fail(message: str, name: str) -> None:
            raise FairMedInputError(message, column=name, hint="see SynthConfig field help")

        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources or len(set(self.sources)) != len(self.sources):
            fail(f"sources must be distinct names from {SOURCES}, got {self.sources}", "sources")
        if self.n < len(self.sources):
            fail("n must be at least the number of sources", "n")
        if self.image_size < 16:
            fail("image_size must be at least 16", "image_size")
        for name in ("female_share", "prevalence", "cxr_breast_attenuation", "mammo_density_masking",
                     "missing_demographics_fraction"):
            values = [v for _, v in getattr(self, name)] if name in _PER_SOURCE_FIELDS else [getattr(self, name)]
            if any(not 0.0 <= v <= 1.0 for v in values):
                fail(f"{name} must lie in [0, 1]", name)
        for name, shares, size in [("skin_tone_shares", self.skin_tone_shares, 3),
                                   ("split_fractions", self.split_fractions, 3)] + [
            ("age_group_shares", v, 4) for _, v in self.age_group_shares
        ]:
            if len(shares) != size or min(shares) < 0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
                fail(f"{name} must be {size} non-negative shares summing to 1, got {shares}", name)
        knobs = [*self.prevalence_shift, *self.acquisition, *self.label_noise]
        knobs += [self.shortcut] if self.shortcut is not None else []
        for knob in knobs:
            if knob.attribute not in _ATTRIBUTES:
                fail(f"knob attribute must be one of {_ATTRIBUTES}, got {knob.attribute!r}", type(knob).__name__)
        for knob in self.label_noise:
            if not (0 <= knob.false_negative_rate <= 1 and 0 <= knob.false_positive_rate <= 1):
                fail("label noise rates must lie in [0, 1]", "label_noise")
        for knob in self.acquisition:
            if knob.noise_factor < 0 or knob.finding_contrast < 0:
                fail("acquisition factors must be non-negative", "acquisition")
        if self.shortcut is not None:
            rates = (self.shortcut.rate_if_positive, self.shortcut.rate_if_negative, self.shortcut.rate_other_groups)
            if any(not 0 <= r <= 1 for r in rates):
                fail("shortcut rates must lie in [0, 1]", "shortcut")

    def source_value(self, name: str, source: str, default: object) -> object:
        """The value of a per-source field for ``source`` (``default`` when the source is not named)."""
        return dict(getattr(self, name)).get(source, default)

    def settings_for(self, source: str) -> RenderSettings:
        """The appearance parameters of one source's images (what ``render`` needs besides the case)."""
        return RenderSettings(
            image_size=self.image_size,
            noise_std=float(self.source_value("noise_std", source, 0.05)),
            finding_contrast=float(self.source_value("finding_contrast", source, 1.0)),
            acquisition=tuple(k for k in self.acquisition if k.source == source),
            cxr_breast_attenuation=self.cxr_breast_attenuation,
            mammo_density_masking=self.mammo_density_masking,
        )

    def to_dict(self) -> dict:
        """JSON-ready dict (per-source fields as ``{source: value}`` objects); ``from_dict`` inverts it."""
        out = asdict(self)
        for name in _PER_SOURCE_FIELDS:
            out[name] = {s: list(v) if isinstance(v, tuple) else v for s, v in getattr(self, name)}
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthConfig:
        return config_from_dict(cls, data, what="SynthConfig")

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field name: help text}``: drives CLI flags and the dashboard form."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


# ---------------------------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class RenderSettings:
    """Appearance parameters a case carries so that it can be re-rendered on its own (from a manifest line)."""

    image_size: int
    noise_std: float
    finding_contrast: float
    acquisition: tuple[AcquisitionKnob, ...]
    cxr_breast_attenuation: float
    mammo_density_masking: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> RenderSettings:
        values = dict(data)
        values["acquisition"] = tuple(
            k if isinstance(k, AcquisitionKnob) else AcquisitionKnob(**k) for k in values.get("acquisition", ())
        )
        values["image_size"] = int(values["image_size"])
        return cls(**values)


@dataclass(frozen=True)
class SynthLatent:
    """The latent patient: everything about a case that no attribute changes. Coordinates are in image units
    (-1..1, x to the right, y down). Fields a source does not use are 0."""

    noise_seed: int  # seeds the noise realisation and the texture fields (and hair strand geometry)
    shift_x: float  # anatomy offset
    shift_y: float
    scale: float  # anatomy size
    finding: bool  # the true finding: opacity (cxr), suspicious lesion (derm), mass (mammo)
    finding_x: float  # centre of the opacity / lesion / mass (also drawn when ``finding`` is False)
    finding_y: float
    finding_size: float  # radius
    finding_intensity: float  # relative strength (opacity density, lesion darkness, mass density)
    finding_irregularity: float  # border irregularity and colour asymmetry (derm)
    finding_phase: float  # orientation of the irregularity (derm)
    sex_feature_size: float  # 0..1 magnitude of sex-tied features: breast shadow (cxr), hair (derm), glands (mammo)
    texture_amount: float  # 0..1 scale of the patient's texture (lung markings, skin mottling, gland pattern)
    tone_jitter: float  # -1..1 position of the skin colour within its tone group (derm)
    heart_size: float  # relative heart width (cxr)
    shortcut: bool  # the spurious corner marker is present

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthLatent:
        values = {}
        for f in fields(cls):
            if f.name not in data:
                raise FairMedInputError(f"latent patient lacks {f.name!r}", column="latent")
            value = data[f.name]
            values[f.name] = int(value) if f.name == "noise_seed" else bool(value) if f.type in (
                "bool", bool) else float(value)
        return cls(**values)


@dataclass(frozen=True)
class SynthCase:
    """One synthetic case: a latent patient, its true attributes, its labels, and how it is rendered."""

    case_id: str
    source: str
    split: str  # "train" | "val" | "test"
    sex: str  # "M" | "F"
    age: int  # years
    skin_tone: str | None  # "light" | "medium" | "dark" for synth_derm, None elsewhere
    label: bool  # the TRUE finding (equals latent.finding)
    observed_label: bool  # the manifest answer, after group-dependent label noise
    demo_missing: bool  # the manifest's demo string is empty
    latent: SynthLatent
    settings: RenderSettings

    @property
    def age_group(self) -> str:
        return age_group(self.age)

    @property
    def answer(self) -> str:
        """The manifest answer (observed label)."""
        return YES if self.observed_label else NO

    @property
    def true_answer(self) -> str:
        return YES if self.label else NO

    @property
    def problem(self) -> str:
        return QUESTIONS[self.source]

    @property
    def demo(self) -> str:
        """The demo string as the manifest states it (empty when demographics are missing)."""
        return "" if self.demo_missing else _demo_text(self.sex, self.age, self.skin_tone)

    def group(self, attribute: str) -> str | None:
        """The case's true group for ``"sex"``, ``"age_group"`` or ``"skin_tone"`` (None: not applicable)."""
        return {"sex": self.sex, "age_group": self.age_group, "skin_tone": self.skin_tone}[attribute]


def _demo_text(sex: str, age: int, skin_tone: str | None) -> str:
    text = f"sex: {'Female' if sex == 'F' else 'Male'}, age: {age}"
    return f"{text}, skin tone: {skin_tone}" if skin_tone is not None else text


# ----------------------------------------------------------------------------------------------- generate


def _source_stream(seed: int, source: str) -> np.random.Generator:
    # The stream depends on the source's name, not its position, so dropping a source leaves the others as they were.
    return np.random.default_rng([seed, zlib.crc32(source.encode())])


def _groups_of(attribute: str, sex: np.ndarray, ages: np.ndarray, tones: np.ndarray | None) -> np.ndarray:
    if attribute == "sex":
        return sex
    if attribute == "age_group":
        return np.array([age_group(int(a)) for a in ages], dtype=object)
    if tones is None:
        return np.full(len(sex), None, dtype=object)
    return tones


# The uniform draws of one source, one column each; all are drawn whatever the knobs say.
_DRAWS = ("sex", "age_group", "age", "skin_tone", "label", "shortcut", "label_noise", "demo_missing",
          "shift_x", "shift_y", "scale", "side", "finding_x", "finding_y", "finding_size", "finding_intensity",
          "finding_irregularity", "finding_phase", "sex_feature_size", "texture_amount", "tone_jitter", "heart_size")


def _generate_source(config: SynthConfig, source: str, count: int) -> list[SynthCase]:
    rng = _source_stream(config.seed, source)
    draws = dict(zip(_DRAWS, rng.random((len(_DRAWS), count))))
    noise_seeds = rng.integers(0, 2**31 - 1, size=count)
    order = rng.permutation(count)

    female = draws["sex"] < float(config.source_value("female_share", source, 0.5))
    sex = np.where(female, "F", "M").astype(object)
    shares = np.asarray(config.source_value("age_group_shares", source, (0.25,) * 4), dtype=float)
    group_index = np.minimum(np.searchsorted(np.cumsum(shares), draws["age_group"], side="right"), 3)
    low = np.array([AGE_RANGES[g][0] for g in AGE_GROUPS])[group_index]
    high = np.array([AGE_RANGES[g][1] for g in AGE_GROUPS])[group_index]
    ages = (low + np.floor(draws["age"] * (high - low + 1))).astype(int)
    tones = None
    if source == "synth_derm":
        tone_index = np.minimum(np.searchsorted(np.cumsum(config.skin_tone_shares), draws["skin_tone"], "right"), 2)
        tones = np.array(SKIN_TONES, dtype=object)[tone_index]

    def in_group(knob) -> np.ndarray:
        return _groups_of(knob.attribute, sex, ages, tones) == knob.group

    prevalence = np.full(count, float(config.source_value("prevalence", source, 0.3)))
    for shift in config.prevalence_shift:
        if shift.source == source:
            prevalence += np.where(in_group(shift), shift.delta, 0.0)
    label = draws["label"] < np.clip(prevalence, 0.01, 0.99)

    shortcut = np.zeros(count, dtype=bool)
    knob = config.shortcut
    if knob is not None and knob.source == source:
        rate = np.where(in_group(knob), np.where(label, knob.rate_if_positive, knob.rate_if_negative),
                        knob.rate_other_groups)
        shortcut = draws["shortcut"] < rate

    false_negative, false_positive = np.zeros(count), np.zeros(count)
    for noise in config.label_noise:
        if noise.source == source:
            false_negative += np.where(in_group(noise), noise.false_negative_rate, 0.0)
            false_positive += np.where(in_group(noise), noise.false_positive_rate, 0.0)
    flipped = draws["label_noise"] < np.clip(np.where(label, false_negative, false_positive), 0.0, 1.0)
    observed = label ^ flipped
    demo_missing = draws["demo_missing"] < config.missing_demographics_fraction

    split = np.empty(count, dtype=object)
    n_train = int(round(count * config.split_fractions[0]))
    n_val = int(round(count * config.split_fractions[1]))
    split[order[:n_train]] = "train"
    split[order[n_train:n_train + n_val]] = "val"
    split[order[n_train + n_val:]] = "test"

    geometry = _latent_geometry(source, draws, label)
    settings = config.settings_for(source)
    width = max(5, len(str(count - 1)))
    cases = []
    for i in range(count):
        latent = SynthLatent(
            noise_seed=int(noise_seeds[i]),
            finding=bool(label[i]),
            shortcut=bool(shortcut[i]),
            **{name: float(values[i]) for name, values in geometry.items()},
        )
        cases.append(
            SynthCase(
                case_id=f"{source}-{i:0{width}d}",
                source=source,
                split=str(split[i]),
                sex=str(sex[i]),
                age=int(ages[i]),
                skin_tone=None if tones is None else str(tones[i]),
                label=bool(label[i]),
                observed_label=bool(observed[i]),
                demo_missing=bool(demo_missing[i]),
                latent=latent,
                settings=settings,
            )
        )
    return cases


def _latent_geometry(source: str, d: dict[str, np.ndarray], label: np.ndarray) -> dict[str, np.ndarray]:
    """Latent geometry per source from the uniform draws, rounded to 6 decimals so a manifest line holds it exactly."""
    zero = np.zeros_like(d["scale"])

    def span(u: np.ndarray, low: float, high: float) -> np.ndarray:
        return low + (high - low) * u

    shift_x, shift_y = span(d["shift_x"], -0.05, 0.05), span(d["shift_y"], -0.05, 0.05)
    scale = span(d["scale"], 0.93, 1.07)
    out = {"shift_x": shift_x, "shift_y": shift_y, "scale": scale, "finding_irregularity": zero,
           "finding_phase": zero, "tone_jitter": zero, "heart_size": zero,
           "sex_feature_size": d["sex_feature_size"], "texture_amount": span(d["texture_amount"], 0.5, 1.0)}
    if source == "synth_cxr":
        side = np.where(d["side"] < 0.5, -1.0, 1.0)
        out["finding_x"] = shift_x + scale * side * span(d["finding_x"], 0.22, 0.46)
        out["finding_y"] = shift_y + scale * span(d["finding_y"], -0.30, 0.50)
        out["finding_size"] = span(d["finding_size"], 0.15, 0.25)
        out["finding_intensity"] = span(d["finding_intensity"], 0.75, 1.25)
        out["heart_size"] = span(d["heart_size"], 0.9, 1.15)
    elif source == "synth_derm":
        out["finding_x"] = span(d["finding_x"], -0.12, 0.12)
        out["finding_y"] = span(d["finding_y"], -0.12, 0.12)
        out["finding_size"] = np.where(label, span(d["finding_size"], 0.22, 0.38), span(d["finding_size"], 0.16, 0.32))
        out["finding_intensity"] = np.where(label, span(d["finding_intensity"], 0.40, 0.60),
                                            span(d["finding_intensity"], 0.27, 0.47))
        out["finding_irregularity"] = np.where(label, span(d["finding_irregularity"], 0.12, 0.28),
                                               span(d["finding_irregularity"], 0.0, 0.06))
        out["finding_phase"] = span(d["finding_phase"], 0.0, 2 * math.pi)
        out["tone_jitter"] = span(d["tone_jitter"], -1.0, 1.0)
    else:  # synth_mammo: the mass lies inside the glandular region, in polar coordinates from the chest wall
        angle = span(d["finding_phase"], -0.9, 0.9)
        radius = span(d["finding_x"], 0.25, 0.75)
        out["finding_x"] = shift_x - 1.0 + 1.15 * scale * radius * np.cos(angle)
        out["finding_y"] = shift_y + 0.72 * scale * radius * np.sin(angle)
        out["finding_size"] = span(d["finding_size"], 0.16, 0.28)
        out["finding_intensity"] = span(d["finding_intensity"], 0.75, 1.25)
    return {name: np.round(values, 6) for name, values in out.items()}


def generate(config: SynthConfig | None = None) -> list[SynthCase]:
    """The cases of the benchmark described by ``config`` (default ``SynthConfig()``), sources in order.

    Deterministic by ``config.seed``; ``n`` is divided evenly among the sources (the remainder goes to the
    first ones). Takes ~0.02 s per 1,000 cases (no images are drawn here; see ``render_many``)."""
    config = SynthConfig() if config is None else config
    base, remainder = divmod(config.n, len(config.sources))
    cases: list[SynthCase] = []
    for index, source in enumerate(config.sources):
        cases.extend(_generate_source(config, source, base + (1 if index < remainder else 0)))
    return cases


# ------------------------------------------------------------------------------------------------- render


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return axis[None, None, :], axis[None, :, None]  # u (x, columns), v (y, rows)


def _smoothstep_(t: np.ndarray) -> np.ndarray:
    """In place: clip to [0, 1] and apply 3t^2 - 2t^3."""
    np.clip(t, 0.0, 1.0, out=t)
    ramp = 3.0 - 2.0 * t
    t *= t
    t *= ramp
    return t


def _soft_ellipse(u, v, cx, cy, ax, ay, edge: float) -> np.ndarray:
    """1 inside the ellipse, 0 outside, with a smooth rim where the normalised radius is within 1 +- ``edge``;
    exactly 0 beyond the rim. ``u``/``v`` broadcast along rows/columns, so only the sum is full size."""
    x = (u - cx) / ax
    y = (v - cy) / ay
    t = x * x + y * y
    inner, outer = (1.0 - edge) ** 2, (1.0 + edge) ** 2
    np.subtract(np.float32(outer), t, out=t)
    t *= np.float32(1.0 / (outer - inner))
    return _smoothstep_(t)


def _bump(u, v, cx, cy, radius) -> np.ndarray:
    """A compact round bump: 1 at the centre, exactly 0 beyond ``radius`` (so a finding never leaks far)."""
    x = (u - cx) / radius
    y = (v - cy) / radius
    t = x * x + y * y
    np.subtract(np.float32(1.0), t, out=t)
    np.maximum(t, 0.0, out=t)
    t *= t
    return t


def _upsample_matrix(coarse: int, size: int) -> np.ndarray:
    """Bilinear interpolation matrix (size x coarse) to turn coarse random grids into smooth texture fields."""
    position = np.clip((np.arange(size) + 0.5) / size * coarse - 0.5, 0, coarse - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, coarse - 1)
    weight = position - low
    matrix = np.zeros((size, coarse))
    matrix[np.arange(size), low] += 1.0 - weight
    matrix[np.arange(size), high] += weight
    return matrix.astype(np.float32)


_HAIR_STRANDS = 6
_NOISE_SCALE = np.float32(math.sqrt(12.0))  # uniform(-0.5, 0.5) * sqrt(12) has unit variance; ~4x faster than normals


def _case_fields(case: SynthCase, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-case random fields from the latent noise seed, drawn in a fixed order whatever the attributes."""
    rng = np.random.default_rng(case.latent.noise_seed)
    coarse = rng.standard_normal((8, 8)).astype(np.float32)
    fine = rng.standard_normal((12, 12)).astype(np.float32)
    hair = rng.random((_HAIR_STRANDS, 4)).astype(np.float32)
    shape = (3, size, size) if case.source == "synth_derm" else (size, size)
    noise = rng.random(shape, dtype=np.float32)
    return coarse, fine, hair, noise


def _apply_overrides(case: SynthCase, overrides: Mapping[str, object]) -> tuple[str, float, str | None]:
    unknown = set(overrides) - {"sex", "age", "skin_tone"}
    if unknown:
        raise FairMedInputError(
            f"cannot override {sorted(unknown)}", hint="overridable attributes: sex, age, skin_tone"
        )
    sex, age, tone = case.sex, float(case.age), case.skin_tone
    if "sex" in overrides:
        sex = sex_group(overrides["sex"])
        if sex == UNKNOWN:
            raise FairMedInputError(f"sex override must be M or F, got {overrides['sex']!r}", column="sex")
    if "age" in overrides:
        value = overrides["age"]
        if isinstance(value, str) and value.strip().upper() in REPRESENTATIVE_AGE:
            age = float(REPRESENTATIVE_AGE[value.strip().upper()])
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and (
            0 <= value <= 130
        ):
            age = float(value)
        else:
            raise FairMedInputError(f"age override must be years or A1..A4, got {value!r}", column="age")
    if "skin_tone" in overrides:
        if case.source != "synth_derm":
            raise FairMedInputError(f"skin tone is an attribute of synth_derm only, not {case.source}",
                                    column="skin_tone")
        if overrides["skin_tone"] not in SKIN_TONES:
            raise FairMedInputError(f"skin_tone override must be one of {SKIN_TONES}", column="skin_tone")
        tone = str(overrides["skin_tone"])
    return sex, age, tone


def _acquisition(settings: RenderSettings, sex: str, age: float, tone: str | None) -> tuple[float, float]:
    groups = {"sex": sex, "age_group": age_group(age), "skin_tone": tone}
    noise, contrast = 1.0, settings.finding_contrast
    for knob in settings.acquisition:
        if groups.get(knob.attribute) == knob.group:
            noise *= knob.noise_factor
            contrast *= knob.finding_contrast
    return noise, contrast


def _column(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _take(p: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in p.items()}


def _marker_square(size: int) -> np.ndarray:
    """The shortcut marker of the grayscale sources: a bright square in the top-right corner."""
    u, v = _grid(size)
    return ((u >= 0.70) & (u <= 0.86) & (v >= -0.88) & (v <= -0.72)).astype(np.float32)[0]


def _cxr_breast(u, v, p) -> np.ndarray:
    """Breast soft-tissue shadows over both lower lateral lung fields (drawn for women); 0 outside their rims."""
    size = p["scale"] * (0.8 + 0.4 * p["sex_feature_size"])
    # The two shadows mirror each other about the midline: one ellipse in |u - shift_x|.
    return _soft_ellipse(np.abs(u - p["shift_x"]), v, 0.42 * p["scale"], p["shift_y"] + 0.50, 0.36 * size,
                         0.28 * size, 0.3)


def _finish(image: np.ndarray, noise: np.ndarray, noise_std: np.ndarray) -> np.ndarray:
    """Add the acquisition noise (uniform draws, centred and scaled to ``noise_std``) and quantise to uint8."""
    noise -= np.float32(0.5)
    noise *= noise_std * _NOISE_SCALE
    image += noise
    image *= np.float32(255.0)
    image += np.float32(0.5)
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8)


def _render_cxr(u, v, p, female, age, settings, noise_factor, contrast, fields_) -> np.ndarray:
    sx, sy, sc = p["shift_x"], p["shift_y"], p["scale"]
    image = _soft_ellipse(u, v, sx, sy + 0.12, 0.84 * sc, 1.2 * sc, 0.10)  # torso
    # Ribs: curved bands whose brightness (bone density) falls with age; the spine a vertical band.
    bone = np.clip(0.15 - 0.0011 * (age - 20.0), 0.06, 0.16)
    ribs = (v - sy) / (0.21 * sc) + (0.30 / 0.21) * ((u - sx) ** 2 / sc)
    ribs *= np.float32(2 * np.pi)
    np.cos(ribs, out=ribs)
    ribs += 1.0
    ribs *= 0.5
    ribs *= ribs * ribs
    ribs *= ribs
    ribs *= 0.9 * bone
    ribs += 1.2 * bone * np.clip(1.0 - np.abs(u - sx) / (0.07 * sc), 0.0, 1.0)
    ribs += 0.42
    image *= ribs
    image += 0.10
    # Lungs (mirrored about the midline): dark air with interstitial markings that rise with age.
    lungs = _soft_ellipse(np.abs(u - sx), v, 0.36 * sc, sy - 0.02, 0.26 * sc, 0.60 * sc, 0.18)
    markings = (0.03 + 0.0007 * (age - 20.0)) * p["texture_amount"] * fields_["coarse"]
    markings -= 0.28
    markings *= lungs
    image += markings
    heart = _soft_ellipse(u, v, sx + 0.09 * sc, sy + 0.30, 0.22 * p["heart_size"] * sc, 0.20 * sc, 0.35)
    heart *= 0.22
    image += heart
    breast = np.zeros_like(image)
    women = np.flatnonzero(female[:, 0, 0])
    if len(women):
        breast[women] = _cxr_breast(u, v, _take(p, women))
        image += 0.13 * breast
    found = np.flatnonzero(p["finding"][:, 0, 0])
    if len(found):
        q = _take(p, found)
        opacity = _bump(u, v, q["finding_x"], q["finding_y"], q["finding_size"])
        opacity *= 0.33 * q["finding_intensity"] * contrast[found]
        opacity *= 1.0 - settings.cxr_breast_attenuation * breast[found]
        image[found] += opacity
    marked = np.flatnonzero(p["shortcut"][:, 0, 0])
    if len(marked):
        marker = _marker_square(image.shape[-1])
        image[marked] = image[marked] * (1.0 - marker) + 0.95 * marker
    return _finish(image, fields_["noise"], settings.noise_std * noise_factor)


_SKIN_RGB = {"light": (0.92, 0.78, 0.68), "medium": (0.76, 0.56, 0.40), "dark": (0.42, 0.28, 0.20)}
# Pigment darkening is multiplicative, so on darker skin the same lesion changes fewer grey levels. This gain
# partly compensates, so that the acquisition knob, not the rendering, sets most of the skin-tone gap.
_LESION_GAIN = {"light": 1.0, "medium": 1.25, "dark": 2.0}
_LESION_ABSORPTION = np.array([0.55, 0.70, 0.78], dtype=np.float32)  # brown pigment absorbs green/blue most
_PEN_RGB = np.array([0.50, 0.22, 0.60], dtype=np.float32)  # gentian-violet skin marker


def _lesion(u, v, p) -> tuple[np.ndarray, np.ndarray]:
    """Soft lesion mask with an irregular border r(theta), exactly 0 outside its rim; and the darkness map, darker
    on one side of an irregular lesion (colour asymmetry)."""
    dx, dy = u - p["finding_x"], v - p["finding_y"]
    theta = np.arctan2(dy, dx)
    phase, irregular = p["finding_phase"], p["finding_irregularity"]
    border = np.cos(2 * theta + phase)
    border *= 0.6
    border += 0.4 * np.cos(3 * theta + (1.7 * phase + 1.0))
    border += 0.3 * np.cos(5 * theta + (2.3 * phase + 2.0))
    border *= irregular
    border += 1.0
    border *= p["finding_size"]
    mask = np.sqrt(dx * dx + dy * dy)
    mask /= border
    np.subtract(np.float32(1.12), mask, out=mask)
    mask *= np.float32(1 / 0.24)
    _smoothstep_(mask)
    darkness = np.cos(theta - phase)
    darkness *= irregular
    darkness += 1.0
    darkness *= p["finding_intensity"]
    return mask, darkness


def _hair(hair_params: np.ndarray, visible: np.ndarray, size: int) -> np.ndarray:
    """Hair strands (line segments from the latent seed) as a 0/1 mask: strand k is drawn where ``visible[:, k]``."""
    mask = np.zeros((len(hair_params), size, size), dtype=np.float32)
    steps = np.linspace(0.0, 1.0, 2 * size, dtype=np.float32)  # half-pixel steps along the longest strand
    x0 = hair_params[:, :, 0, None] * 2 - 1
    y0 = hair_params[:, :, 1, None] * 2 - 1
    angle = hair_params[:, :, 2, None] * np.float32(np.pi)
    length = 0.3 + 0.5 * hair_params[:, :, 3, None]
    along = steps * length
    columns = np.floor((x0 + along * np.cos(angle) + 1.0) * (size / 2.0)).astype(np.int64)
    rows = np.floor((y0 + along * np.sin(angle) + 1.0) * (size / 2.0)).astype(np.int64)
    case = np.broadcast_to(np.arange(len(hair_params))[:, None, None], rows.shape)
    keep = (rows >= 0) & (rows < size) & (columns >= 0) & (columns < size) & visible[:, :, None]
    mask[case[keep], rows[keep], columns[keep]] = 1.0
    return mask


def _render_derm(u, v, p, female, age, tones, settings, noise_factor, contrast, fields_) -> np.ndarray:
    skin = np.array([_SKIN_RGB[t] for t in tones], dtype=np.float32)[:, :, None, None]
    contrast = contrast * _column([_LESION_GAIN[t] for t in tones])
    skin *= 1.0 + 0.05 * p["tone_jitter"][:, None]
    shade = (0.015 + 0.0012 * (age - 18.0)) * p["texture_amount"] * fields_["coarse"]  # mottling rises with age
    shade += 1.0
    count = np.round(_HAIR_STRANDS * p["sex_feature_size"][:, 0, 0]) * (1.0 - female[:, 0, 0])
    visible = np.arange(_HAIR_STRANDS)[None, :] < count[:, None]
    if visible.any():
        hair = _hair(fields_["hair"], visible, shade.shape[-1])
        hair *= -0.6
        hair += 1.0
        shade *= hair
    mask, darkness = _lesion(u, v, p)
    mask *= darkness
    mask *= contrast
    # Channels first: numpy broadcasts poorly over a trailing axis of 3.
    image = np.empty((len(shade), 3, *shade.shape[1:]), dtype=np.float32)
    for channel in range(3):
        # Multiplicative darkening: skin * shade * (1 - absorption_c * lesion), never below 5% of the skin.
        darkening = np.minimum(mask * _LESION_ABSORPTION[channel], np.float32(0.95), out=image[:, channel])
        np.subtract(np.float32(1.0), darkening, out=darkening)
        darkening *= shade
        darkening *= skin[:, channel]
    marked = np.flatnonzero(p["shortcut"][:, 0, 0])
    if len(marked):
        u0, v0 = _grid(image.shape[-1])
        pen = 0.85 * _soft_ellipse(u0, v0, -0.78, -0.78, 0.10, 0.10, 0.3)[0]
        image[marked] = image[marked] * (1.0 - pen) + pen * _PEN_RGB[:, None, None]
    image = _finish(image, fields_["noise"], (settings.noise_std * noise_factor)[..., None])
    return np.ascontiguousarray(image.transpose(0, 2, 3, 1))


def _mammo_density(age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Breast density 0..1: high in young women, falling with age; male breasts have little glandular tissue."""
    density = np.clip(0.92 - 0.012 * (age - 30.0), 0.15, 0.9)
    return density * (1.0 - 0.65 * (1.0 - female))


def _mammo_glands(u, v, p) -> np.ndarray:
    return _soft_ellipse(u, v, p["shift_x"] - 1.0, p["shift_y"], 1.15 * p["scale"], 0.72 * p["scale"], 0.25)


def _render_mammo(u, v, p, female, age, settings, noise_factor, contrast, fields_) -> np.ndarray:
    image = _soft_ellipse(u, v, p["shift_x"] - 1.0, p["shift_y"], 1.45 * p["scale"], 0.92 * p["scale"], 0.06)
    image *= 0.26
    image += 0.06
    density = _mammo_density(age, female)
    glands = _mammo_glands(u, v, p)
    # Dense tissue shows as heterogeneous bright texture; images are windowed for presentation, so the mean
    # brightness of the glandular region hardly changes with density while its texture does.
    tissue = (0.18 * p["texture_amount"]) * fields_["fine"]
    tissue *= density
    tissue += 0.12
    tissue *= glands
    image += tissue
    found = np.flatnonzero(p["finding"][:, 0, 0])
    if len(found):
        q = _take(p, found)
        mass = _bump(u, v, q["finding_x"], q["finding_y"], q["finding_size"])
        hidden = 1.0 - settings.mammo_density_masking * density[found]  # dense tissue hides a mass
        mass *= 0.38 * q["finding_intensity"] * contrast[found] * hidden
        image[found] += mass
    marked = np.flatnonzero(p["shortcut"][:, 0, 0])
    if len(marked):
        marker = _marker_square(image.shape[-1])
        image[marked] = image[marked] * (1.0 - marker) + 0.95 * marker
    return _finish(image, fields_["noise"], settings.noise_std * noise_factor)


_LATENT_FLOATS = ("shift_x", "shift_y", "scale", "finding_x", "finding_y", "finding_size", "finding_intensity",
                  "finding_irregularity", "finding_phase", "sex_feature_size", "texture_amount", "tone_jitter",
                  "heart_size", "finding", "shortcut")
_UPSAMPLE: dict[tuple[int, int], np.ndarray] = {}


def _upsampled(grids: list[np.ndarray], size: int) -> np.ndarray:
    coarse = grids[0].shape[0]
    matrix = _UPSAMPLE.get((coarse, size))
    if matrix is None:
        matrix = _UPSAMPLE.setdefault((coarse, size), _upsample_matrix(coarse, size))
    return matrix @ np.stack(grids) @ matrix.T


def _latent_columns(cases: Sequence[SynthCase]) -> dict[str, np.ndarray]:
    return {name: _column([float(getattr(c.latent, name)) for c in cases]) for name in _LATENT_FLOATS}


def _render_chunk(cases: Sequence[SynthCase], overrides: Mapping[str, object]) -> np.ndarray:
    source, settings = cases[0].source, cases[0].settings
    size = settings.image_size
    u, v = _grid(size)
    attributes = [_apply_overrides(case, overrides) for case in cases]
    factors = [_acquisition(settings, *a) for a in attributes]
    p = _latent_columns(cases)
    female = _column([a[0] == "F" for a in attributes])
    age = _column([a[1] for a in attributes])
    noise_factor = _column([f[0] for f in factors])
    contrast = _column([f[1] for f in factors])
    drawn = [_case_fields(case, size) for case in cases]
    fields_ = {"hair": np.stack([d[2] for d in drawn]), "noise": np.stack([d[3] for d in drawn])}
    if source == "synth_cxr":
        fields_["coarse"] = _upsampled([d[0] for d in drawn], size)
        return _render_cxr(u, v, p, female, age, settings, noise_factor, contrast, fields_)
    if source == "synth_derm":
        fields_["coarse"] = _upsampled([d[0] for d in drawn], size)
        tones = [a[2] for a in attributes]
        return _render_derm(u, v, p, female, age, tones, settings, noise_factor, contrast, fields_)
    fields_["fine"] = _upsampled([d[1] for d in drawn], size)
    return _render_mammo(u, v, p, female, age, settings, noise_factor, contrast, fields_)


def render_many(cases: Sequence[SynthCase], **attribute_overrides: object) -> list[np.ndarray]:
    """``render`` for many cases at once: vectorised numpy drawing in chunks, ~0.25-0.3 s per 1,000 64x64 cases;
    each result is identical to ``render`` of that case alone."""
    images: list[np.ndarray | None] = [None] * len(cases)
    batches: dict[tuple[str, RenderSettings], list[int]] = {}
    for index, case in enumerate(cases):
        if case.source not in SOURCES:
            raise FairMedInputError(f"unknown synthetic source {case.source!r}", hint=f"one of {SOURCES}")
        batches.setdefault((case.source, case.settings), []).append(index)
    for indices in batches.values():
        for start in range(0, len(indices), _CHUNK):
            chunk = indices[start:start + _CHUNK]
            for index, image in zip(chunk, _render_chunk([cases[i] for i in chunk], attribute_overrides)):
                images[index] = image
    return images  # type: ignore[return-value]


def render(case: SynthCase, **attribute_overrides: object) -> np.ndarray:
    """The case's image: uint8 HxW (synth_cxr, synth_mammo) or HxWx3 (synth_derm).

    ``attribute_overrides`` (``sex="F"``, ``age=80`` or ``age="A4"``, ``skin_tone="dark"`` for derm) draw the same
    latent patient with other attributes: the true counterfactual. Only the appearance tied to the overridden
    attribute changes (see the module docstring and ``attribute_region``); ``render(case, sex=case.sex)`` is the
    factual image, bit for bit.
    """
    return render_many([case], **attribute_overrides)[0]


def attribute_region(case: SynthCase, attribute: str) -> np.ndarray:
    """Boolean HxW mask of the pixels whose value may depend on ``attribute`` (``"sex"``, ``"age"``,
    ``"skin_tone"``) for this latent patient; outside it a counterfactual on that attribute is bit-identical.

    - sex: cxr, the breast shadows with their rims; derm, the hair strands; mammo, the glandular region and the mass.
    - age: cxr, the torso and lungs; derm, the whole image; mammo, the glandular region and the mass.
    - skin_tone (derm): the whole image.
    An acquisition knob on the attribute's groups for this source (noise/contrast) widens it to the whole image.
    """
    size = case.settings.image_size
    everything = np.ones((size, size), dtype=bool)
    group_attribute = "age_group" if attribute == "age" else attribute
    if attribute not in ("sex", "age", "skin_tone"):
        raise FairMedInputError(f"unknown attribute {attribute!r}", hint="one of sex, age, skin_tone")
    if any(k.attribute == group_attribute for k in case.settings.acquisition) or attribute == "skin_tone":
        return everything
    u, v = _grid(size)
    p = _latent_columns([case])
    if case.source == "synth_cxr":
        if attribute == "age":  # bones (inside the torso) and lung markings
            sx, sy, sc = p["shift_x"], p["shift_y"], p["scale"]
            torso = _soft_ellipse(u, v, sx, sy + 0.12, 0.84 * sc, 1.2 * sc, 0.10)
            lungs = _soft_ellipse(np.abs(u - sx), v, 0.36 * sc, sy - 0.02, 0.26 * sc, 0.60 * sc, 0.18)
            return (torso[0] > 0) | (lungs[0] > 0)
        return _cxr_breast(u, v, p)[0] > 0
    if case.source == "synth_derm":
        if attribute == "age":
            return everything
        _, _, hair, _ = _case_fields(case, size)
        visible = np.arange(_HAIR_STRANDS)[None, :] < np.round(_HAIR_STRANDS * case.latent.sex_feature_size)
        return _hair(hair[None], visible, size)[0] > 0
    glands = _mammo_glands(u, v, p)[0] > 0
    mass = _bump(u, v, p["finding_x"], p["finding_y"], p["finding_size"])[0] > 0
    return glands | mass


def finding_mask(case: SynthCase) -> np.ndarray:
    """Boolean HxW mask of where the finding is drawn (or would be, for a case without it): the opacity, lesion
    or mass core (more than half its peak). It depends on the latent patient only, never on the attributes."""
    size = case.settings.image_size
    u, v = _grid(size)
    p = _latent_columns([case])
    if case.source == "synth_derm":
        return _lesion(u, v, p)[0][0] > 0.5
    return _bump(u, v, p["finding_x"], p["finding_y"], p["finding_size"])[0] > 0.5


# -------------------------------------------------------------------------------------------------- write


def _record(case: SynthCase) -> dict:
    return {
        "id": case.case_id,
        "problem": case.problem,
        "images": [f"img/{case.case_id}.png"],
        "answer": case.answer,
        "demo": case.demo,
        "dataset": case.source,
        "split": case.split,
        "true_answer": case.true_answer,
        "true_attributes": {"sex": case.sex, "age": case.age, "skin_tone": case.skin_tone},
        "latent": case.latent.to_dict(),
        "render": case.settings.to_dict(),
    }


def write_dataset(cases: Sequence[SynthCase], out_dir: str | Path, *, config: SynthConfig | None = None) -> Path:
    """Write cases in the data contract: PNGs under ``out_dir/img/``, ``manifest.jsonl`` (contract fields plus
    ``id``, ``split``, ``true_answer``, ``true_attributes``, ``latent``, ``render``), and ``config.json``.

    Returns the manifest path. Same cases -> identical bytes."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for start in range(0, len(cases), 2048):
        batch = cases[start:start + 2048]
        for case, image in zip(batch, render_many(batch)):
            Image.fromarray(image).save(out / "img" / f"{case.case_id}.png")
            lines.append(json.dumps(_record(case), separators=(",", ":")))
    manifest = out / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {
        "format_version": 1,
        "generator": "fairmed_core.data.synth",
        "n_cases": len(cases),
        "sources": sorted({c.source for c in cases}),
        "config": None if config is None else config.to_dict(),
    }
    (out / "config.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return manifest


def _get(record: object, key: str, default: object = None) -> object:
    try:
        value = record[key]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return default
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else value


def case_from_record(record: Mapping) -> SynthCase:
    """Rebuild a ``SynthCase`` from a manifest line (dict) or a ``Dataset.cases`` row, so ``render`` works on
    loaded data. Needs the fields ``write_dataset`` writes (``latent``, ``true_attributes``, ``render``)."""
    case_id = _get(record, "case_id") or _get(record, "id")
    missing = [k for k in ("latent", "true_attributes", "render", "dataset", "split") if _get(record, k) is None]
    if case_id is None or missing:
        raise FairMedInputError(
            f"not a synthetic benchmark case: missing {missing or ['id']}",
            row=None,
            hint="only cases written by fairmed_core.data.synth.write_dataset can be re-rendered",
        )
    truth = _get(record, "true_attributes")
    true_answer = canonical_label(_get(record, "true_answer"))
    observed = canonical_label(_get(record, "answer"))
    latent = SynthLatent.from_dict(_get(record, "latent"))  # type: ignore[arg-type]
    demo = _get(record, "demo", "")
    return SynthCase(
        case_id=str(case_id),
        source=str(_get(record, "dataset")),
        split=str(_get(record, "split")),
        sex=str(truth["sex"]),  # type: ignore[index]
        age=int(truth["age"]),  # type: ignore[index]
        skin_tone=None if truth.get("skin_tone") is None else str(truth["skin_tone"]),  # type: ignore[union-attr]
        label=(true_answer == YES) if true_answer is not None else latent.finding,
        observed_label=observed == YES,
        demo_missing=not str(demo).strip(),
        latent=latent,
        settings=RenderSettings.from_dict(_get(record, "render")),  # type: ignore[arg-type]
    )


def cases_from_dataset(dataset) -> list[SynthCase]:
    """``case_from_record`` for every row of a ``Dataset`` loaded from a synthetic manifest."""
    return [case_from_record(row) for row in dataset.cases.to_dict(orient="records")]


def ensure_default_dataset(root: str | Path) -> Path:
    """Write the default benchmark (``SynthConfig()``) to ``root/"synth-default"`` once; return its manifest path.

    Atomic: written to a temporary folder next to it, then renamed, so a reader never sees a half-written
    dataset and two processes racing both end with the same complete one."""
    root = Path(root)
    target = root / DEFAULT_DATASET_DIR
    manifest = target / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    if target.exists():
        raise FairMedInputError(
            f"{str(target)!r} exists but holds no manifest.jsonl", hint="delete that folder and try again"
        )
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_DATASET_DIR}-", dir=root))
    try:
        config = SynthConfig()
        write_dataset(generate(config), staging, config=config)
        try:
            os.rename(staging, target)
        except OSError:
            if not manifest.is_file():  # not a lost race: a real error
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest

