"""A FairGRPO (or baseline) training run: the run folder, held-out evaluation during training, resume.

A run folder ``runs/<id>/`` holds::

    config.json        the job settings, the full FairGRPOConfig and the held-out sample's composition
                       ("held_out_sample": which cases every held-out evaluation answers), written before step 1
    metrics.jsonl      one JSON object per line: {"kind": "train", "step", ...TRL's logs and the FairGRPO
                       weights} and {"kind": "eval", "step", "groups": [...], "summary": [...], "accuracy",
                       "format_failure_rate"}: per source and group accuracy, F1, TPR, FDR, and the FairGRPO gaps
                       (predictive parity, equal opportunity difference, sigma F1, F1_ES) on a held-out split
    checkpoints/       TRL checkpoints (with the FairGRPO statistics), for --resume
    model/             the trained model (save_pretrained + processor), when training ends
    evaluation/        its evaluation on the test split (predictions, audit, run.json): the audit page lists it
    training.json      written last: the run finished (steps, time)

``metrics.jsonl`` is rewritten atomically after every record, so a killed run never leaves a broken line, and on
resume the records after the checkpoint's step are dropped (they will be recomputed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import TrainerCallback

from fairmed_core.data import Dataset, read_manifest
from fairmed_core.data.sampling import SampleComposition, stratified_sample
from fairmed_core.data.schema import ALL, UNKNOWN
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json, atomic_write_text, publish_folder, read_json_object
from fairmed_core.jobs.evaluation import audit_predictions, run_evaluation
from fairmed_core.models.evaluation import evaluate_dataset
from fairmed_core.models.generation import GenerationOptions
from fairmed_core.models.loading import LoadedModel, load_model
from fairmed_core.plain import json_safe
from fairmed_core.runs.training_store import (FINISHED_FILE, METRICS_FILE, TrainingResult, eval_frame, read_metrics,
                                              summary_frame)
from fairmed_core.settings import JOB_FILE
from fairmed_core.training.checkpoints import interrupted_saves
from fairmed_core.training.grpo_config import GRPOJobConfig

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import GRPOTrainingJobConfig

__all__ = ["GRPOJobConfig", "TrainingDynamicsCallback", "eval_frame", "read_metrics", "resume_checkpoint", "run",
           "run_grpo_training", "summary_frame"]

logger = logging.getLogger(__name__)

_GROUP_METRICS = ("accuracy", "f1", "recall", "fdr")
_SUMMARY_KEYS = ("predictive_parity", "equal_opportunity_difference", "sigma_f1", "f1_es", "accuracy", "f1")


class _MetricsLog:
    """metrics.jsonl, rewritten atomically after each record."""

    def __init__(self, path: Path, *, keep_until_step: int | None = None) -> None:
        self.path = path
        self.records = read_metrics(path) if path.exists() else []
        if keep_until_step is not None:
            self.records = [r for r in self.records if r.get("step", 0) <= keep_until_step]
        self._flush()

    def append(self, record: dict) -> None:
        self.records.append(record)
        self._flush()

    def _flush(self) -> None:
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.records)
        atomic_write_text(self.path, text)


def held_out_record(loaded: LoadedModel, dataset: Dataset, *, split: str, case_ids: tuple[str, ...], step: int,
                    max_new_tokens: int) -> dict:
    """Greedy answers on the held-out cases (``case_ids`` of ``split``: the run's fixed sample), scored per
    source and group, as one metrics record."""
    predictions = evaluate_dataset(loaded, dataset, split=split, case_ids=case_ids,
                                   options=GenerationOptions(max_new_tokens=max_new_tokens, batch_size=32))
    attributes = [a for a in dataset.attributes if a in predictions.columns]
    result = audit_predictions(predictions, attributes, positive_label=dataset.positive_label, n_boot=0)
    groups = result.groups_frame()
    groups = groups[groups["metric"].isin(_GROUP_METRICS) & (groups["group"] != UNKNOWN) & (groups["n"] > 0)]
    failures = predictions.assign(failed=~predictions["format_ok"].astype(bool))
    group_rows = [{"source": g.source, "attribute": g.attribute, "group": g.group, "metric": g.metric,
                   "n": int(g.n), "value": json_safe(g.estimate)} for g in groups.itertuples(index=False)]
    for attribute in ["overall", *attributes]:
        keys = ["source"] if attribute == "overall" else ["source", attribute]
        for key, block in failures.groupby(keys):
            key = key if isinstance(key, tuple) else (key,)
            group_rows.append({"source": key[0], "attribute": attribute,
                               "group": ALL if attribute == "overall" else key[1], "metric": "format_failure",
                               "n": len(block), "value": float(block["failed"].mean())})
    summary = result.summary_frame()
    summary_rows = [{"source": row["source"], "attribute": row["attribute"],
                     **{key: json_safe(row[key]) for key in _SUMMARY_KEYS if key in row}}
                    for _, row in summary.iterrows()]
    return {"kind": "eval", "step": step, "split": split, "n_cases": len(predictions),
            "accuracy": float((predictions["y_true"] == predictions["y_pred"]).mean()),
            "format_failure_rate": float(failures["failed"].mean()), "groups": group_rows, "summary": summary_rows}


class TrainingDynamicsCallback(TrainerCallback):
    """Logs TRL's records and a held-out evaluation of the same cases (``eval_ids``) every ``eval_every`` steps
    into metrics.jsonl."""

    def __init__(self, log: _MetricsLog, loaded: LoadedModel, dataset: Dataset, config: GRPOJobConfig,
                 eval_ids: tuple[str, ...], progress: Callable[[int, int], None] | None = None) -> None:
        self.log, self.loaded, self.dataset, self.config, self.progress = log, loaded, dataset, config, progress
        self.eval_ids = eval_ids
        self.trainer = None
        self._evaluated: set[int] = {r["step"] for r in log.records if r.get("kind") == "eval"}

    def _evaluate(self, step: int, model) -> None:
        if step in self._evaluated:
            return
        was_training = model.training
        model.eval()
        try:
            record = held_out_record(self.loaded, self.dataset, split=self.config.eval_split,
                                     case_ids=self.eval_ids, step=step,
                                     max_new_tokens=self.config.max_completion_length)
        finally:
            model.train(was_training)
        self.log.append(record)
        self._evaluated.add(step)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.progress is not None:
            self.progress(state.global_step, state.max_steps)
        if state.global_step % self.config.eval_every == 0 or state.global_step == state.max_steps:
            self._evaluate(state.global_step, model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        record = {"kind": "train", "step": state.global_step}
        plain = {key: json_safe(value) for key, value in logs.items()}
        record.update({key: value for key, value in plain.items() if isinstance(value, (int, float, type(None)))})
        self.log.append(record)


def _is_main_process() -> bool:
    """Whether this is the process that writes the run folder. Under ``accelerate launch`` / ``torchrun`` every
    rank runs this function; ``RANK`` is set by the launcher before any process group exists, so it can be read
    before the trainer is built (the run-folder check and config.json come first). Only rank 0 writes and
    evaluates: every rank holds the same weights (tests/test_fairgrpo_distributed.py), so one evaluation says
    it all, and two writers would overwrite each other's files."""
    return int(os.environ.get("RANK", "0")) == 0


def _training_device() -> str | None:
    """CPU without CUDA; with it, the whole model on this rank's GPU under a multi-process launch (data parallel:
    every rank holds a copy), else ``None`` (``device_map="auto"`` over the visible GPUs)."""
    if not torch.cuda.is_available():
        return "cpu"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return None


def _checkpoint_step(path: Path) -> int | None:
    """The step of a ``checkpoint-N`` folder whose ``trainer_state.json`` is complete, else None."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def resume_checkpoint(folder: Path, state_file: str | None = None, *, reset_state: bool = False) -> Path | None:
    """The checkpoint a resume continues from: the newest complete one in ``folder`` (None: there is none).

    The trainer writes ``trainer_state.json`` after the weights, optimizer and random state, and the method's
    own state (``state_file``: the FairGRPO statistics, Group DRO weights) last, so a run killed during a save
    leaves a folder without them: such a folder is skipped with a warning naming it, never chosen. With
    ``state_file`` a checkpoint lacking it is skipped too, for an older one that has it; where none has it the
    resume is refused unless ``reset_state`` (the state then starts from zero, from the newest checkpoint).
    Checkpoints are saved atomically (:mod:`fairmed_core.training.checkpoints`): a save killed midway is under the
    staging folder, named in a warning, never chosen (older runs' torn folders are still caught above)."""
    for path in interrupted_saves(folder):
        logger.warning("skipping %s: the run was stopped while saving it (the next save removes it)", path)
    numbered = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            numbered.append((int(suffix), path))
    complete = []
    for number, path in sorted(numbered, reverse=True):
        step = _checkpoint_step(path)
        if step != number:
            logger.warning("skipping %s: it was not completely written (trainer_state.json missing, unreadable or "
                           "not for step %d); remove it", path, number)
            continue
        complete.append(path)
    if not complete or state_file is None:
        return complete[0] if complete else None
    with_state = [path for path in complete if (path / state_file).is_file()]
    for path in complete[:complete.index(with_state[0]) if with_state else len(complete)]:
        logger.warning("skipping %s: it has no %s (the run was stopped while saving it)", path, state_file)
    if with_state:
        return with_state[0]
    if reset_state:
        logger.warning("resuming from %s without %s: the method's state starts from zero", complete[0], state_file)
        return complete[0]
    raise FairMedInputError(
        f"cannot resume: no checkpoint has {state_file} (missing in {complete[0] / state_file})",
        source=str(folder), hint="pass --reset-statistics to resume with the statistics reset to zero",
    )


def _check_resumed_sample(recorded: object, drawn: SampleComposition, out: Path) -> None:
    """A resumed run answers the held-out cases its first part answered: refused when the data changed so that
    the sample differs (its curves would join two different sets of cases); a run from before the sample was
    recorded (the first N cases) goes on with a warning."""
    if recorded is None:
        logger.warning("%s recorded no held-out sample (it used the first %s cases of the split): the evaluations "
                       "after the checkpoint use a stratified sample", out / "config.json", drawn.requested or "all")
        return
    before = SampleComposition.from_json(recorded, source=str(out / "config.json"))
    if before.case_ids_sha256 != drawn.case_ids_sha256:
        raise FairMedInputError(
            f"cannot resume: the held-out sample differs from the one this run recorded ({before.describe()}; now "
            f"{drawn.describe()})", source=str(out / "config.json"),
            hint="resume with the manifest the run started with, or start a new run")


def run_grpo_training(model_dir: str | Path, manifest: str | Path, out_dir: str | Path, config: GRPOJobConfig, *,
                      resume: bool = False, reset_statistics: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> TrainingResult:
    """Train with ``config.method`` from ``model_dir`` on ``manifest``'s train split into ``out_dir``; returns
    how it ended (what ``training.json`` holds).

    ``resume`` continues from the newest complete checkpoint in ``out_dir/checkpoints`` (:func:`resume_checkpoint`)
    up to the configured steps and no further: a finished run is returned as it is, and a run whose last
    checkpoint is at the final step is finished (model, evaluation) without training. ``reset_statistics``
    lets a resume go on where no checkpoint holds the method's state (FairGRPO statistics, Group DRO weights)."""
    from fairmed_core.training.fairgrpo_trainer import (FairGRPOConfig, FairGRPOTrainer, grpo_dataset,
                                                        method_state_file)

    out = Path(out_dir)
    checkpoints = out / "checkpoints"
    resume_from = None
    if resume:
        if (out / FINISHED_FILE).is_file():
            # Already finished: nothing to train (a resume never goes past the configured steps). Every rank of a
            # launch sees the same file, so all of them stop here.
            finished = read_json_object(out / FINISHED_FILE)
            if finished is None:
                raise FairMedInputError("unreadable JSON", source=str(out / FINISHED_FILE),
                                        hint="remove it to finish the run again from its last checkpoint")
            result = TrainingResult.from_json(finished, source=str(out / FINISHED_FILE))
            return result if _is_main_process() else TrainingResult(result.method, result.steps,
                                                                    rank=int(os.environ["RANK"]))
        try:
            saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FairMedInputError("nothing to resume: the run folder has no readable config.json",
                                    source=str(out), hint="start the run without --resume") from error
        config = GRPOJobConfig.from_dict(saved["job"])
        # Before the model loads: a refused resume costs nothing.
        resume_from = resume_checkpoint(checkpoints, method_state_file(config), reset_state=reset_statistics)
        if resume_from is None:
            raise FairMedInputError("nothing to resume: no complete checkpoint in the run folder", source=str(out),
                                    hint="start the run without --resume")
    elif _is_main_process() and out.exists() and any(p.name != JOB_FILE for p in out.iterdir()):
        # Other ranks would race rank 0's config.json; a failing rank 0 stops them through the launcher.
        raise FairMedInputError(f"run folder {str(out)!r} is not empty", hint="choose a new folder, or --resume")
    dataset = read_manifest(manifest)
    config.check_data(dataset)  # before the model loads or anything is written: yes/no answers, what the method needs
    # The held-out cases, fixed for the whole run (and for every run on the same data and size): drawn before the
    # model loads, so a missing split costs nothing.
    eval_ids, eval_sample = stratified_sample(dataset.cases, config.eval_limit, split=config.eval_split,
                                              attributes=dataset.attributes)
    if resume:
        _check_resumed_sample(saved.get("held_out_sample"), eval_sample, out)
    loaded = load_model(model_dir, device=_training_device())
    on_cpu = loaded.device.type == "cpu"
    batch = config.prompts_per_step * config.num_generations
    trl_config = FairGRPOConfig(
        output_dir=str(checkpoints), max_steps=config.steps,
        per_device_train_batch_size=batch, num_generations=config.num_generations,
        learning_rate=config.learning_rate, beta=config.beta, temperature=config.temperature,
        max_completion_length=config.max_completion_length, logging_steps=1, save_steps=config.save_every,
        save_strategy="steps", report_to="none", seed=config.seed, bf16=not on_cpu and torch.cuda.is_bf16_supported(),
        use_cpu=on_cpu, label_values=list(dataset.label_values), dataloader_num_workers=0, disable_tqdm=True,
        gradient_checkpointing=config.gradient_checkpointing, **config.trainer_options(),
    )
    train_data = grpo_dataset(dataset, "train", limit=config.train_limit, label_values=dataset.label_values)
    main = _is_main_process()
    out.mkdir(parents=True, exist_ok=True)
    if not resume and main:
        atomic_write_json(out / "config.json", {
            "kind": "grpo-training", "model_dir": str(Path(model_dir).resolve()), "manifest": str(Path(manifest)),
            "dataset": dataset.name, "job": config.to_dict(), "held_out_sample": eval_sample.to_json(),
            "trl": {k: json_safe(v) for k, v in trl_config.to_dict().items()
                    if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
        })
    step_of_checkpoint = int(resume_from.name.split("-")[-1]) if resume_from is not None else None
    log = _MetricsLog(out / METRICS_FILE, keep_until_step=step_of_checkpoint)
    callbacks = [TrainingDynamicsCallback(log, loaded, dataset, config, eval_ids, progress=progress)] if main else []
    torch.manual_seed(config.seed)
    trainer = FairGRPOTrainer(model=loaded.model, args=trl_config, train_dataset=train_data,
                              processing_class=loaded.processor, callbacks=callbacks,
                              peft_config=config.peft_config(), reset_method_state=reset_statistics)
    started = time.time()
    if step_of_checkpoint is not None and step_of_checkpoint >= config.steps:
        # Killed after its final checkpoint: training is done, and TRL would train one step past the end (issue
        # 13). Take the checkpoint's weights and finish the run (model, evaluation, training.json).
        trainer._load_from_checkpoint(str(resume_from))
        trainer.state.global_step = step_of_checkpoint
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    elapsed = time.time() - started
    if not main:
        return TrainingResult(config.method, trainer.state.global_step, rank=int(os.environ["RANK"]))
    trained = trainer.model
    if config.lora_rank:
        # The run's model is a whole model folder like any other (audit, inference, counterfactuals): the adapter
        # is merged into the base weights rather than saved beside a base that lives elsewhere.
        trained = trained.merge_and_unload()
    trained.eval()
    model_out = out / "model"
    # Saved complete under a hidden name, then renamed: a kill here leaves no half-written model folder.
    staged = out / ".model.saving"
    if staged.exists():
        shutil.rmtree(staged)
    trained.save_pretrained(staged)
    loaded.processor.save_pretrained(staged)
    publish_folder(staged, model_out)
    test_accuracy = None
    if config.test_split:
        final = load_model(model_out, device=str(loaded.device))
        run = run_evaluation(final, dataset, out / "evaluation", split=config.test_split,
                             options=GenerationOptions(max_new_tokens=config.max_completion_length, batch_size=32),
                             n_boot=1000)
        test_accuracy = run.record.accuracy
    finished = TrainingResult(
        method=config.method, steps=trainer.state.global_step, train_time_s=round(elapsed, 1),
        seconds_per_step=round(elapsed / max(1, trainer.state.global_step - (step_of_checkpoint or 0)), 3),
        resumed_from=None if resume_from is None else resume_from.name, test_accuracy=test_accuracy)
    atomic_write_json(out / FINISHED_FILE, finished.to_json())
    return finished


def run(config: GRPOTrainingJobConfig, out_dir: str | Path, progress: Callable[[int, int, str], None] | None = None,
        *, resume: bool = False, reset_statistics: bool = False) -> TrainingResult:
    """``fairmed train <method>``: :func:`run_grpo_training` of the model and data ``config`` names."""
    return run_grpo_training(config.model, config.data, out_dir, config.training, resume=resume,
                             reset_statistics=reset_statistics,
                             progress=None if progress is None else lambda done, total: progress(done, total, "steps"))
