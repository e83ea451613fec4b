"""The config of every job FairMed runs, declared once: what the job reads (model, data) and how it runs.

Each is a frozen dataclass whose fields carry their help; :mod:`fairmed_core.settings` turns it into the job's
command-line flags and its JSON file, ``pages/_forms.py`` into its form. A page builds (and so checks) the config
before it starts a job, and hands it over as ``job.json`` (``fairmed ... --config job.json``). Nested settings
that are the job's algorithm (``GRPOJobConfig``, ``FairGradImageConfig``, ...) are the ones their modules
declare, marked ``inline``: their fields are flags and JSON keys of the job itself. Every config imported here
lives in a light module (no torch, transformers or diffusers), so building the command line stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fairmed_core.counterfactual.config import CounterfactualGeneratorConfig
from fairmed_core.counterfactual.settings import AnalysisSettings
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.generation_options import GenerationOptions
from fairmed_core.settings import JOB_FILE
from fairmed_core.training.fairgrad_config import FairGradImageConfig, FairGradTabularConfig
from fairmed_core.training.grpo_config import GRPOJobConfig
from fairmed_core.training.sft_config import SFTConfig

__all__ = ["CounterfactualAnalysisJobConfig", "EvaluationJobConfig", "FairGradImagesJobConfig",
           "FairGradTabularJobConfig", "GeneratorTrainingJobConfig", "GRPOTrainingJobConfig", "JOB_CONFIGS",
           "JOB_FILE", "SFTJobConfig", "job_argv"]


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _path(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise FairMedInputError(f"{name} must name a file or folder, got {value!r}", column=name)


def _count(value: object, name: str, *, least: int = 1, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise FairMedInputError(f"{name} must be a whole number >= {least}, got {value!r}", column=name)


def _device(value: object) -> None:
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise FairMedInputError(f"device must be auto, cpu or cuda:N, got {value!r}", column="device")


@dataclass(frozen=True)
class EvaluationJobConfig:
    """``fairmed evaluate``: a Gemma 3 image-text model answers a dataset split; predictions and audit are stored
    as a run."""

    model: str = field(metadata={"help": "model folder (config.json, processor, safetensors)"})
    data: str = field(metadata={"help": "manifest.jsonl of a dataset"})
    adapter: str | None = field(default=None, metadata={
        "help": "LoRA adapter folder (peft, safetensors) applied to the model"})
    split: str = field(default="test", metadata={"help": "split to answer, or 'all'"})
    limit: int | None = field(default=None, metadata={
        "help": "answer a fixed stratified sample of N cases of the split (by source and group, seed 0; "
                "empty: every case)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda:N"})
    n_boot: int = field(default=1000, metadata={"help": "audit bootstrap resamples (0: no intervals)"})
    generation: GenerationOptions = field(default_factory=GenerationOptions, metadata={
        "help": "how the model decodes", "inline": True})

    def __post_init__(self) -> None:
        _path(self.model, "model")
        _path(self.data, "data")
        _count(self.limit, "limit", optional=True)
        _count(self.n_boot, "n_boot", least=0)
        _device(self.device)

    @property
    def split_or_all(self) -> str | None:
        """The split to answer, None for every case."""
        return None if self.split == "all" else self.split


@dataclass(frozen=True)
class SFTJobConfig:
    """``fairmed train sft``: the supervised warm start of the tiny FairMedGemma, then its model card."""

    data: str = field(metadata={"help": "manifest.jsonl written by `fairmed synth`"})
    eval_split: str = field(default="test", metadata={
        "help": "split to evaluate for the model card and predictions file, or 'none'"})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "the warm start", "inline": True})

    def __post_init__(self) -> None:
        _path(self.data, "data")


@dataclass(frozen=True)
class GRPOTrainingJobConfig:
    """``fairmed train <method>``: GRPO, FairGRPO or a baseline from a model folder on a manifest's train
    split."""

    model: str = field(metadata={"help": "model folder to start from (e.g. the tiny SFT model)"})
    data: str = field(metadata={"help": "manifest.jsonl (trains on its train split)"})
    training: GRPOJobConfig = field(default_factory=GRPOJobConfig, metadata={
        "help": "the training run", "inline": True})

    def __post_init__(self) -> None:
        _path(self.model, "model")
        _path(self.data, "data")


@dataclass(frozen=True)
class FairGradImagesJobConfig:
    """``fairmed train fairgrad``: one small CNN per source of an image dataset, audited as a run."""

    data: str = field(metadata={"help": "manifest.jsonl of an image dataset"})
    n_boot: int = field(default=1000, metadata={"help": "audit bootstrap resamples"})
    fairgrad: FairGradImageConfig = field(default_factory=FairGradImageConfig, metadata={
        "help": "the training", "inline": True})

    def __post_init__(self) -> None:
        _path(self.data, "data")
        _count(self.n_boot, "n_boot")


@dataclass(frozen=True)
class FairGradTabularJobConfig:
    """``fairmed train fairgrad-tabular``: a logistic regression or MLP on a table of one's own, audited as a
    run."""

    table: str = field(metadata={"help": "the table (CSV, TSV, Parquet): one row per patient, a header row"})
    fairgrad: FairGradTabularConfig = field(metadata={"help": "reading, splitting and training", "inline": True})
    n_boot: int = field(default=1000, metadata={"help": "audit bootstrap resamples"})

    def __post_init__(self) -> None:
        _path(self.table, "table")
        _count(self.n_boot, "n_boot")


@dataclass(frozen=True)
class GeneratorTrainingJobConfig:
    """``fairmed train counterfactual``: the class-conditional diffusion generator of counterfactual images, and
    the attribute classifier that judges its edits."""

    data: str = field(metadata={"help": "manifest.jsonl (trains on its train split)"})
    classifier_epochs: int = field(default=12, metadata={"help": "epochs of the attribute classifier (0: none)"})
    generator: CounterfactualGeneratorConfig = field(default_factory=CounterfactualGeneratorConfig, metadata={
        "help": "the generator", "inline": True})

    def __post_init__(self) -> None:
        _path(self.data, "data")
        _count(self.classifier_epochs, "classifier_epochs", least=0)


@dataclass(frozen=True)
class CounterfactualAnalysisJobConfig:
    """``fairmed counterfactual``: generated pairs, the model's answers on both sides, validity of each pair,
    flip rates with McNemar, the conditional-independence test."""

    model: str = field(metadata={"help": "model under review (Gemma 3 folder or FairMed image classifier)"})
    generator: str = field(metadata={"help": "generator folder (fairmed train counterfactual)"})
    data: str = field(metadata={"help": "manifest.jsonl of a dataset"})
    attribute: str = field(metadata={"help": "the attribute the generator changes"})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder applied to the model"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu or cuda:N"})
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings, metadata={
        "help": "what to analyse and how to edit", "inline": True})
    generation: GenerationOptions = field(default_factory=GenerationOptions, metadata={
        "help": "how the model under review decodes", "prefix": ""})

    def __post_init__(self) -> None:
        for name in ("model", "generator", "data"):
            _path(getattr(self, name), name)
        if not isinstance(self.attribute, str) or not self.attribute.strip():
            raise FairMedInputError(f"attribute must name an attribute such as 'sex', got {self.attribute!r}",
                                    column="attribute")
        _device(self.device)


def job_argv(command: Sequence[str], job_file: str | Path, out_dir: str | Path, *, resume: bool = False) -> list[str]:
    """The ``fairmed`` arguments that run a job from the job file a page wrote (``resume``: continue it from
    its last checkpoint, with the same file)."""
    return [*command, "--config", str(job_file), "--out", str(out_dir), *(["--resume"] if resume else [])]


# The job configs by command, for the docs and the test that every setting has a flag and a help.
JOB_CONFIGS = {
    "evaluate": EvaluationJobConfig, "train sft": SFTJobConfig, "train <grpo method>": GRPOTrainingJobConfig,
    "train fairgrad": FairGradImagesJobConfig, "train fairgrad-tabular": FairGradTabularJobConfig,
    "train counterfactual": GeneratorTrainingJobConfig, "counterfactual": CounterfactualAnalysisJobConfig,
}
