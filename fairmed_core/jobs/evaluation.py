"""The batch-evaluation job: load a model, answer a dataset split, audit the answers, store the run.

The CLI (``fairmed evaluate``, through :func:`run`) and the Inference page both run :func:`run_evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fairmed_core.data import Dataset, read_manifest
from fairmed_core.data.sampling import DEFAULT_SAMPLE_SEED, stratified_sample
from fairmed_core.models.evaluation import evaluate_dataset
from fairmed_core.models.generation import GenerationOptions
from fairmed_core.models.loading import LoadedModel, load_model
from fairmed_core.models.prediction_audit import audit_predictions
from fairmed_core.runs.eval_store import EvaluationRecord, EvaluationRun, save_evaluation

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import EvaluationJobConfig

__all__ = ["audit_predictions", "run", "run_evaluation"]


def run(config: EvaluationJobConfig, out_dir: str | Path,
        progress: Callable[[int, int, str], None] | None = None) -> EvaluationRun:
    """``fairmed evaluate``: load the model and the dataset ``config`` names, answer the split, audit, store."""
    dataset = read_manifest(config.data)
    loaded = load_model(config.model, adapter=config.adapter, device=config.device)
    return run_evaluation(loaded, dataset, out_dir, split=config.split_or_all, options=config.generation,
                          limit=config.limit, n_boot=config.n_boot,
                          progress=None if progress is None else lambda done, total: progress(done, total, "cases"))


def run_evaluation(
    loaded: LoadedModel,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    split: str | None = "test",
    options: GenerationOptions | None = None,
    limit: int | None = None,
    sample_seed: int = DEFAULT_SAMPLE_SEED,
    n_boot: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationRun:
    """Evaluate ``loaded`` on ``dataset``'s ``split`` (``limit``: a fixed stratified sample of that many cases,
    by source and group, drawn with ``sample_seed``; None or 0: every case) and save predictions, audit and
    ``run.json`` to ``out_dir``; ``run.json`` holds the sample's composition under ``"sample"``."""
    options = options or GenerationOptions()
    case_ids, sample = stratified_sample(dataset.cases, limit, split=split, attributes=dataset.attributes,
                                         seed=sample_seed)
    started = time.time()
    predictions = evaluate_dataset(loaded, dataset, split=split, options=options, case_ids=case_ids,
                                   progress=progress)
    elapsed = time.time() - started
    attributes = [a for a in dataset.attributes if a in predictions.columns]
    result = audit_predictions(predictions, attributes, positive_label=dataset.positive_label, n_boot=n_boot)
    record = EvaluationRecord(
        kind="evaluation",
        model=loaded.name,
        model_dir=str(loaded.directory),
        adapter=None if loaded.adapter is None else str(loaded.adapter),
        device=str(loaded.device),
        dtype=str(loaded.dtype).replace("torch.", ""),
        dataset=dataset.name,
        manifest_root=str(dataset.root),
        split=split,
        n_cases=len(predictions),
        sample=sample.to_json(),
        attributes=tuple(attributes),
        positive_label=dataset.positive_label,
        accuracy=float((predictions["y_true"] == predictions["y_pred"]).mean()),
        format_failure_rate=float((~predictions["format_ok"].astype(bool)).mean()),
        format_failures=result.settings.format_failures,  # how the audit scored them
        generation=options.to_dict(),
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        wall_time_s=round(elapsed, 2),
        cases_per_s=round(len(predictions) / elapsed, 2) if elapsed > 0 else None,
    )
    return save_evaluation(out_dir, predictions, record, result)
