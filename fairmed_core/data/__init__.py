"""Data: the case schema, readers for data on disk, the synthetic benchmark with true counterfactuals, data cards.

Every reader returns a ``Dataset`` in the data contract of DESIGN section 2 (JSONL manifest: ``problem``,
``images``, ``answer``, ``demo``, ``dataset``); demographic group keys come from ``parse_demo``.
"""

from .card import DataCard, SampleImage, data_card
from .readers import read_csv_manifest, read_manifest
from .schema import AGE_GROUPS, UNKNOWN, Dataset, age_group, parse_demo, sex_group
from .synth import (
    AcquisitionKnob,
    LabelNoiseKnob,
    PrevalenceShift,
    ShortcutKnob,
    SynthCase,
    SynthConfig,
    SynthLatent,
    attribute_region,
    case_from_record,
    cases_from_dataset,
    ensure_default_dataset,
    finding_mask,
    generate,
    render,
    render_many,
    write_dataset,
)

__all__ = [
    # schema
    "UNKNOWN",
    "AGE_GROUPS",
    "Dataset",
    "age_group",
    "sex_group",
    "parse_demo",
    # readers
    "read_manifest",
    "read_csv_manifest",
    # synthetic benchmark
    "SynthConfig",
    "SynthCase",
    "SynthLatent",
    "PrevalenceShift",
    "AcquisitionKnob",
    "LabelNoiseKnob",
    "ShortcutKnob",
    "generate",
    "render",
    "render_many",
    "attribute_region",
    "finding_mask",
    "write_dataset",
    "case_from_record",
    "cases_from_dataset",
    "ensure_default_dataset",
    # data card
    "DataCard",
    "SampleImage",
    "data_card",
]
