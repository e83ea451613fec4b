"""Supervised warm start of the tiny FairMedGemma on the benchmark's training split.

The model sees the image and the FairGRPO prompt; the loss is on the completion only (reasoning grounded in
the case's latent findings, the boxed manifest answer, the end-of-turn token). The benchmark is used as it is,
imbalanced and with its label noise: the disparities the model learns are what the audit and FairGRPO are for.
A plain PyTorch loop (AdamW, warmup then cosine decay, gradient clipping): on a CPU with a sub-million
parameter model, the Trainer's machinery costs more than the model.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fairmed_core.data import read_manifest
from fairmed_core.data.synth import QUESTIONS, SynthCase, cases_from_dataset
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json, atomic_write_text, publish_folder
from fairmed_core.models.answers import build_prompt
from fairmed_core.models.prompting import chat_messages, to_model_image
from fairmed_core.models.tiny import build_processor, build_tiny_model, build_tokenizer
from fairmed_core.training.reasoning_targets import reasoning_target, target_corpus
from fairmed_core.training.sft_config import SFTConfig
from fairmed_core.training.vision_warmup import warm_up_vision

__all__ = ["SFTConfig", "SFTResult", "encode_sft_examples", "train_sft", "tiny_corpus"]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SFTResult:
    """What a warm start produced."""

    out_dir: Path
    steps: int
    train_cases: int
    first_loss: float
    final_loss: float
    train_time_s: float


def tiny_corpus() -> list[str]:
    """Every text the tiny tokenizer must cover: chat framing, the benchmark's prompts, every target."""
    framing = ["user\n", "model\n", "\n\n", "\n"]
    prompts = [build_prompt(question.replace("<image>", "").strip()) for question in QUESTIONS.values()]
    return framing + prompts + target_corpus()


def encode_sft_examples(processor, cases: list[SynthCase], images) -> dict[str, torch.Tensor]:
    """Prompt + target token ids (right-padded), labels masked to the completion, pixel values."""
    tokenizer = processor.tokenizer
    prompts = processor.apply_chat_template([chat_messages(case.problem, 1) for case in cases],
                                            add_generation_prompt=True, tokenize=False)
    completions = [f"{reasoning_target(case)}<end_of_turn>" for case in cases]
    tokenizer.padding_side = "right"
    full = processor(text=[p + c for p, c in zip(prompts, completions)],
                     images=[[to_model_image(image)] for image in images], return_tensors="pt", padding=True)
    prompt_only = processor(text=prompts, images=[[to_model_image(image)] for image in images],
                            return_tensors="pt", padding=True)
    tokenizer.padding_side = "left"
    labels = full["input_ids"].clone()
    prompt_lengths = prompt_only["attention_mask"].sum(dim=1)
    for row, length in enumerate(prompt_lengths.tolist()):
        labels[row, :length] = IGNORE_INDEX
    labels[full["attention_mask"] == 0] = IGNORE_INDEX
    unknown = int((full["input_ids"] == tokenizer.unk_token_id).sum())
    if unknown:
        raise ValueError(f"{unknown} training tokens are out of the tiny vocabulary; extend tiny_corpus()")
    return {"input_ids": full["input_ids"], "attention_mask": full["attention_mask"],
            "token_type_ids": full["token_type_ids"], "pixel_values": full["pixel_values"], "labels": labels}


def _case_value(case: SynthCase, attribute: str) -> str | None:
    """The case's group for a demographic attribute, or its manifest answer ('yes'/'no') for ``"answer"``."""
    if attribute == "answer":
        return "yes" if case.observed_label else "no"
    return case.group(attribute)


def undersampled(cases: list[SynthCase], rules: dict[tuple[str, str, str], float], *, seed: int) -> list[SynthCase]:
    """``cases`` with only ``fraction`` of each named group's cases kept (one seeded draw per case, in order)."""
    if not rules:
        return cases
    draws = torch.rand(len(cases), generator=torch.Generator().manual_seed(seed)).tolist()
    kept = []
    for case, draw in zip(cases, draws):
        fraction = min((rules[key] for key in rules
                        if key[0] == case.source and _case_value(case, key[1]) == key[2]), default=1.0)
        if draw < fraction:
            kept.append(case)
    return kept


def _group_counts(cases: list[SynthCase]) -> dict[str, dict[str, int]]:
    """Cases trained on per source and group, and per manifest answer (what the card reports of the warm start's
    data)."""
    counts: dict[str, dict[str, int]] = {}
    for case in cases:
        for attribute in ("sex", "age_group", "skin_tone", "answer"):
            group = _case_value(case, attribute)
            if group is not None:
                key = f"{attribute}={group}"
                counts.setdefault(case.source, {}).setdefault(key, 0)
                counts[case.source][key] += 1
    return counts


def _learning_rate(step: int, total: int, config: SFTConfig) -> float:
    warmup = max(1, int(total * config.warmup_fraction))
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def train_sft(manifest: str | Path, out_dir: str | Path, config: SFTConfig | None = None, *,
              log: Callable[[dict], None] | None = None) -> SFTResult:
    """Build the tiny model, train it on ``manifest``'s ``config.split`` cases, save it to ``out_dir``.

    Writes ``save_pretrained`` model and processor files, ``training_config.json`` and ``training_log.jsonl``,
    all at once: saved into a hidden sibling folder and renamed into place (files already in ``out_dir`` stay).
    ``log`` receives each step's record (step, epoch, loss, learning rate)."""
    config = config or SFTConfig()
    dataset = read_manifest(manifest)
    try:
        all_cases = cases_from_dataset(dataset)
    except FairMedInputError as error:
        raise FairMedInputError(
            f"the SFT warm start needs the benchmark's latent findings: {error.message}", source=str(manifest),
            hint="train on a manifest written by `fairmed synth`") from error
    cases = [case for case in all_cases
             if case.split == config.split and (config.sources is None or case.source in config.sources)]
    cases = undersampled(cases, config.undersampling(), seed=config.seed)
    if config.max_cases is not None:
        cases = cases[: config.max_cases]
    if not cases:
        raise FairMedInputError(f"no {config.split!r} cases to train on", source=str(manifest), column="split")
    torch.manual_seed(config.seed)
    tokenizer = build_tokenizer(tiny_corpus())
    processor = build_processor(tokenizer, config.model)
    model = build_tiny_model(tokenizer, config.model, seed=config.seed)
    images = [dataset.load_image(case.case_id) for case in cases]
    examples = encode_sft_examples(processor, cases, images)
    n = len(cases)
    warmup_records = []
    if config.vision_warmup_epochs:
        warmup_records = warm_up_vision(
            model.model.vision_tower, examples["pixel_values"], [case.answer == "yes" for case in cases],
            [case.source for case in cases], epochs=config.vision_warmup_epochs,
            learning_rate=config.vision_warmup_lr, batch_size=config.batch_size, seed=config.seed)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.freeze_vision_tower:
        model.model.vision_tower.requires_grad_(False)
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    started = time.perf_counter()
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            rows = order[start:start + config.batch_size]
            batch = {name: tensor[rows] for name, tensor in examples.items()}
            # Trim the right padding this batch does not need.
            width = int(batch["attention_mask"].sum(dim=1).max())
            batch = {name: (tensor[:, :width] if tensor.dim() == 2 else tensor) for name, tensor in batch.items()}
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, total_steps, config)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
            optimizer.step()
            record = {"step": step, "total_steps": total_steps, "epoch": epoch, "loss": float(loss.detach()),
                      "learning_rate": optimizer.param_groups[0]["lr"],
                      "elapsed_s": round(time.perf_counter() - started, 3)}
            records.append(record)
            if log is not None:
                log(record)
            step += 1
    model.eval()
    train_time_s = time.perf_counter() - started
    # Saved complete beside the folder and renamed into place: a kill while saving leaves the folder as it was.
    staged = out.with_name(f".{out.name}.saving")
    if staged.exists():
        shutil.rmtree(staged)
    model.save_pretrained(staged)
    processor.save_pretrained(staged)
    atomic_write_json(staged / "training_config.json", {
        "method": "supervised warm start (fairmed_core.training.sft)",
        "data": str(manifest), "split": config.split, "train_cases": n, "cases_per_group": _group_counts(cases),
        "steps": total_steps,
        "train_time_s": round(train_time_s, 1), "torch_threads": torch.get_num_threads(),
        "config": config.to_dict(), "vision_warmup": warmup_records,
    })
    atomic_write_text(staged / "training_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    publish_folder(staged, out, carry_over=True)  # files of an earlier model there (its card) stay
    return SFTResult(out_dir=out, steps=total_steps, train_cases=n, first_loss=records[0]["loss"],
                     final_loss=records[-1]["loss"], train_time_s=train_time_s)
