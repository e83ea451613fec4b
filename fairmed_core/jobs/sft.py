"""The SFT warm-start job: train the tiny FairMedGemma on a benchmark's train split, evaluate it on a held-out
split into ``<model>/evaluation/`` and write its model card beside the weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fairmed_core.data import read_manifest
from fairmed_core.jobs.evaluation import run_evaluation
from fairmed_core.models.generation import GenerationOptions
from fairmed_core.models.loading import load_model
from fairmed_core.models.model_card import write_model_card
from fairmed_core.runs.eval_store import EvaluationRun
from fairmed_core.training.sft import SFTResult, train_sft

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import SFTJobConfig

__all__ = ["SFTJobResult", "run"]


@dataclass(frozen=True)
class SFTJobResult:
    """What the warm start produced: the training, its evaluation and model card (None with eval_split 'none')."""

    training: SFTResult
    evaluation: EvaluationRun | None
    card: Path | None


def run(config: SFTJobConfig, out_dir: str | Path, progress: Callable[[int, int, str], None] | None = None, *,
        log: Callable[[dict], None] | None = None) -> SFTJobResult:
    """Train into ``out_dir`` (``log`` gets every step's record), then evaluate and write the model card."""
    out = Path(out_dir)

    def on_step(record: dict) -> None:
        if progress is not None:
            progress(record["step"] + 1, record["total_steps"], "steps")
        if log is not None:
            log(record)

    result = train_sft(config.data, out, config.sft, log=on_step)
    if config.eval_split == "none":
        return SFTJobResult(result, None, None)
    loaded = load_model(out, device="cpu")
    # The evaluation lives inside the model folder, so the card's numbers sit beside the card.
    evaluation = run_evaluation(
        loaded, read_manifest(config.data), out / "evaluation", split=config.eval_split,
        options=GenerationOptions(batch_size=32), n_boot=1000,
        progress=None if progress is None else lambda done, total: progress(done, total, "cases"))
    training = json.loads((out / "training_config.json").read_text(encoding="utf-8"))
    card = write_model_card(out, name=out.name, training=training, evaluation=evaluation.record.to_json(),
                            result=evaluation.audit, parameter_count=loaded.parameter_count,
                            architecture=config.sft.model.to_dict())
    return SFTJobResult(result, evaluation, card)
