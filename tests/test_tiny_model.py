"""The tiny FairMedGemma: tokenizer, builder, SFT targets and warm start, evaluation, and the shipped model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fairmed_core.cli import main
from fairmed_core.data import read_manifest
from fairmed_core.data.synth import SynthConfig, cases_from_dataset, generate
from fairmed_core.models.answers import parse_completion
from fairmed_core.models.loading import load_model
from fairmed_core.models.tiny import TinyModelConfig, build_processor, build_tokenizer
from fairmed_core.runs.workspace import TINY_MODEL, TINY_MODEL_PREDICTIONS
from fairmed_core.training.reasoning_targets import reasoning_target, target_corpus
from fairmed_core.training.sft import IGNORE_INDEX, SFTConfig, encode_sft_examples, tiny_corpus, train_sft


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(tiny_corpus())


def test_tokenizer_round_trips_every_training_text(tokenizer):
    for text in tiny_corpus():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text


def test_tokenizer_keeps_gemma_special_tokens_whole_and_maps_unknown_words_to_unk(tokenizer):
    ids = tokenizer("<start_of_turn>user\n<start_of_image>zebra<end_of_turn>", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<start_of_turn>" and tokens[-1] == "<end_of_turn>"
    assert "<start_of_image>" in tokens and "<unk>" in tokens
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<eos>", "<bos>"]) == [0, 1, 2]
    # Reasoning tags survive decoding without special tokens; the turn marker does not.
    text = tokenizer.decode(tokenizer("<think> the lesion </think><end_of_turn>")["input_ids"],
                            skip_special_tokens=True)
    assert text == "<think> the lesion </think>"


def test_tiny_config_rejects_a_projector_that_cannot_pool_the_patch_grid():
    with pytest.raises(ValueError, match="perfect square"):
        TinyModelConfig(image_tokens=15)
    with pytest.raises(ValueError, match="multiple"):
        TinyModelConfig(image_size=64, patch_size=8, image_tokens=9)


def test_sft_targets_follow_the_manifest_answer_and_ground_the_location():
    cases = generate(SynthConfig(n=1500, seed=1))
    corpus = set(target_corpus())
    for case in cases:
        target = reasoning_target(case)
        assert target in corpus
        parsed = parse_completion(target, choices=["yes", "no"])
        assert parsed.format_ok and parsed.answer == case.answer
    positives = [c for c in cases if c.source == "synth_cxr" and c.answer == "yes"]
    for case in positives:
        # Radiological convention: the patient's right lung is on the image's left (x < centre).
        side = "right" if case.latent.finding_x < case.latent.shift_x else "left"
        assert f"of the {side} lung" in reasoning_target(case)
    noisy = [c for c in cases if c.answer != c.true_answer]
    assert noisy, "the default benchmark has label noise"
    assert all(parse_completion(reasoning_target(c)).answer == c.answer for c in noisy)


def test_sft_labels_cover_the_completion_only(default_manifest, tokenizer):
    dataset = read_manifest(default_manifest)
    cases = [c for c in cases_from_dataset(dataset) if c.split == "train"][:4]
    processor = build_processor(tokenizer, TinyModelConfig())
    batch = encode_sft_examples(processor, cases, [dataset.load_image(c.case_id) for c in cases])
    for row, case in enumerate(cases):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert tokenizer.decode(labelled) == reasoning_target(case) + "<end_of_turn>"
        # Image tokens are marked for Gemma 3's bidirectional image attention.
        assert int(batch["token_type_ids"][row].sum()) == TinyModelConfig().image_tokens


def test_sft_warm_start_lowers_the_loss_and_saves_a_loadable_model(tiny_model_dir):
    log = [json.loads(line) for line in (tiny_model_dir / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    recorded = json.loads((tiny_model_dir / "training_config.json").read_text())
    assert recorded["train_cases"] == 192 and recorded["config"]["model"] == TinyModelConfig().to_dict()
    loaded = load_model(tiny_model_dir)
    assert loaded.device.type == "cpu" and loaded.dtype == torch.float32
    assert type(loaded.model).__name__ == "Gemma3ForConditionalGeneration"


def test_sft_publishes_the_model_folder_whole_keeping_files_already_there(default_manifest, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("the reviewer's notes")
    train_sft(default_manifest, out, SFTConfig(epochs=1, max_cases=8, batch_size=8, model=TinyModelConfig(
        text_layers=1)))
    assert (out / "notes.txt").read_text() == "the reviewer's notes"
    assert {"model.safetensors", "config.json", "training_config.json", "training_log.jsonl"} <= {
        p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left beside it


def test_sft_config_from_json_rejects_unknown_settings():
    assert SFTConfig.from_dict({"epochs": 2, "model": {"text_layers": 1}}).model.text_layers == 1
    with pytest.raises(ValueError, match="unknown SFT settings"):
        SFTConfig.from_dict({"epochs": 2, "learnin_rate": 1.0})
    with pytest.raises(ValueError, match="unknown model settings"):
        SFTConfig.from_dict({"model": {"layers": 1}})


@pytest.mark.slow
def test_cli_trains_evaluates_and_writes_a_model_card(default_manifest, tmp_path, capsys):
    config = tmp_path / "sft.json"
    config.write_text(json.dumps({"max_cases": 64, "batch_size": 32, "model": {"text_layers": 1}}))
    out = tmp_path / "model"
    assert main(["train", "sft", "--data", str(default_manifest), "--out", str(out), "--config", str(config),
                 "--epochs", "1", "--eval-split", "val"]) == 0
    run = json.loads((out / "evaluation" / "run.json").read_text())
    assert run["split"] == "val" and run["n_cases"] == 600
    card = (out / "README.md").read_text()
    assert f"{run['accuracy']:.3f}" in card and "Per group" in card
    predictions = pd.read_csv(out / "evaluation" / "predictions.csv", keep_default_na=False)
    assert {"case_id", "source", "sex", "age_group", "y_true", "y_pred", "format_ok", "reasoning",
            "generation_time_s"} <= set(predictions.columns)
    # A second run into the same folder is refused: a trained model is never overwritten by accident.
    assert main(["train", "sft", "--data", str(default_manifest), "--out", str(out), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_evaluate_writes_a_run_with_an_audit(default_manifest, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(default_manifest), "--limit", "24",
                 "--n-boot", "50", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["n_cases"] == 24 and run["split"] == "test" and run["generation"]["do_sample"] is False
    assert (out / "audit" / "audit.json").is_file()
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    # --limit is a stratified sample: every source, where the briefly trained model fails some formats
    assert len(predictions) == 24 and set(predictions["y_pred"]) <= {"yes", "no", "(format failure)"}
    assert predictions["source"].value_counts().to_dict() == {"synth_cxr": 8, "synth_derm": 8, "synth_mammo": 8}
    assert run["sample"]["rule"] == "stratified by source and group"


def test_cli_evaluate_errors_are_one_line(default_manifest, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(default_manifest),
                 "--out", str(tmp_path / "run")]) == 2
    assert "model directory does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown SFT settings"):
        SFTConfig.from_dict({"epoch": 1})


def test_a_format_failure_is_scored_as_a_wrong_answer(default_manifest, tiny_model_dir, monkeypatch):
    from fairmed_core.models import evaluation
    from fairmed_core.models.generation import Generation

    def broken(loaded, questions, images, options=None, *, choices=None, progress=None):
        return [Generation("no box here", None, "", False, "no \\boxed{} answer", 3, 0.0) for _ in questions]

    monkeypatch.setattr(evaluation, "generate_answers", broken)
    dataset = read_manifest(default_manifest)
    frame = evaluation.evaluate_dataset(load_model(tiny_model_dir), dataset, split="test", limit=40)
    assert not frame["format_ok"].any()
    assert (frame["y_pred"] != frame["y_true"]).all()


@pytest.mark.skipif(not (TINY_MODEL / "config.json").is_file(), reason="shipped tiny model not built yet")
class TestShippedTinyModel:
    def test_it_is_small_and_documented(self):
        weights = TINY_MODEL / "model.safetensors"
        assert weights.stat().st_size < 8 * 2**20
        card = (TINY_MODEL / "README.md").read_text()
        run = json.loads((TINY_MODEL / "evaluation" / "run.json").read_text())
        assert f"{run['accuracy']:.3f}" in card
        assert run["n_cases"] == 2400 and run["format_failure_rate"] < 0.01

    @pytest.mark.slow
    def test_its_shipped_predictions_are_reproduced(self, default_manifest):
        from fairmed_core.models.evaluation import evaluate_dataset
        from fairmed_core.models.generation import GenerationOptions

        torch.set_num_threads(1)
        shipped = pd.read_csv(TINY_MODEL_PREDICTIONS, keep_default_na=False)
        dataset = read_manifest(default_manifest)
        ids = set(shipped["case_id"].iloc[::40])  # 60 cases over all sources
        subset = dataset.cases[dataset.cases["case_id"].isin(ids)]
        from dataclasses import replace

        fresh = evaluate_dataset(load_model(TINY_MODEL), replace(dataset, cases=subset), split="test",
                                 options=GenerationOptions(batch_size=32))
        merged = fresh.merge(shipped, on="case_id", suffixes=("", "_shipped"))
        assert len(merged) == len(ids)
        # Same weights, same greedy decoding; allow a rare argmax tie to break differently on another CPU.
        assert (merged["completion"] == merged["completion_shipped"]).mean() >= 0.95


def test_model_card_labels_gap_units_and_names_a_source_the_model_cannot_see():
    import numpy as np

    from fairmed_core.models.model_card import model_card_markdown
    from fairmed_core.models.prediction_audit import audit_predictions

    rng = np.random.default_rng(0)
    rows = []
    for source in ("synth_cxr", "synth_derm"):
        for i in range(400):
            truth = "yes" if rng.random() < 0.4 else "no"
            # cxr: always "no" (blind); derm: right 85% of the time
            pred = "no" if source == "synth_cxr" else (truth if rng.random() < 0.85 else {"yes": "no", "no": "yes"}[truth])
            rows.append({"case_id": f"{source}-{i}", "source": source, "sex": "MF"[i % 2],
                         "skin_tone": ("light", "dark")[i % 2] if source == "synth_derm" else "UNK",
                         "y_true": truth, "y_pred": pred})
    result = audit_predictions(pd.DataFrame(rows), ["sex", "skin_tone"], positive_label="yes", n_boot=50)
    card = model_card_markdown(name="m", training={"config": {}}, evaluation={"split": "test", "n_cases": 800,
                               "accuracy": 0.7, "format_failure_rate": 0.0}, result=result, parameter_count=1,
                               architecture={})
    assert "| EOD (pp) | EqOdds (fraction) | PP (pp) |" in card
    assert "In `synth_cxr` the model finds almost no positive cases (recall 0.000)" in card
    assert "synth_derm` the model finds" not in card
    # skin tone is not recorded for chest X-rays: no n/a summary row and no empty group rows for it.
    assert "| synth_cxr | skin_tone |" not in card
    assert "| synth_derm | skin_tone | 0.8" in card
