"""The CUDA paths: bf16 loading with ``device_map="auto"`` (or the whole model on one numbered GPU), batched
generation, a stored evaluation run, the MedGemma-4B throughput script and FairGRPO training steps of a
MedGemma-4B-sized model (all weights and LoRA) on a GPU.

Skipped without CUDA (CI has none), except CPU smoke runs of both scripts at test size; run them on a GPU machine
with ``pytest -q tests/test_gpu_paths.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairmed_core.data import read_manifest
from fairmed_core.jobs.evaluation import run_evaluation
from fairmed_core.models.architectures import scaled_down_medgemma_config, write_random_checkpoint
from fairmed_core.models.generation import GenerationOptions, generate_answers
from fairmed_core.models.loading import load_model
from fairmed_core.training.sft import tiny_corpus

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cases(default_manifest):
    dataset = read_manifest(default_manifest)
    picked = dataset.cases[dataset.cases["split"] == "test"].groupby("dataset").head(16)
    return dataset, list(picked["problem"]), [[dataset.load_image(c)] for c in picked["case_id"]]


@needs_cuda
def test_the_tiny_model_loads_in_bf16_on_cuda_and_answers_like_fp32_on_cpu(tiny_model_dir, cases):
    _, questions, images = cases
    gpu = load_model(tiny_model_dir)  # auto: CUDA, bf16
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    cpu = load_model(tiny_model_dir, device="cpu")
    options = GenerationOptions(batch_size=16, max_new_tokens=48)
    on_gpu = generate_answers(gpu, questions, images, options, choices=["yes", "no"])
    on_cpu = generate_answers(cpu, questions, images, options, choices=["yes", "no"])
    assert all(g.new_tokens > 0 for g in on_gpu)
    # bf16 rounds logits differently: most answers agree, not necessarily all of them.
    agree = sum(a.answer == b.answer for a, b in zip(on_gpu, on_cpu)) / len(on_cpu)
    assert agree >= 0.85, agree


@needs_cuda
def test_a_medgemma_layout_checkpoint_loads_with_device_map_auto(tmp_path, cases):
    _, questions, images = cases
    folder = write_random_checkpoint(tmp_path / "medgemma-like", scaled_down_medgemma_config(), tiny_corpus())
    loaded = load_model(folder, device="cuda")
    assert loaded.dtype == torch.bfloat16 and getattr(loaded.model, "hf_device_map", None)
    generations = generate_answers(loaded, questions[:8], images[:8], GenerationOptions(max_new_tokens=6))
    assert len(generations) == 8 and all(1 <= g.new_tokens <= 6 for g in generations)


@needs_cuda
def test_an_evaluation_run_on_cuda_records_the_device(tiny_model_dir, cases, tmp_path):
    dataset, _, _ = cases
    loaded = load_model(tiny_model_dir)
    run = run_evaluation(loaded, dataset, tmp_path / "run", split="test", limit=48, n_boot=100)
    assert run.record.device.startswith("cuda") and run.record.dtype == "bfloat16"
    assert run.record.n_cases == 48 and run.predictions_path.is_file()


def _throughput_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_medgemma_throughput.py"), *args],
                          capture_output=True, text=True, timeout=600)


def test_the_throughput_script_runs_at_test_size_on_cpu():
    result = _throughput_script("--scaled-down", "--device", "cpu", "--new-tokens", "2", "--batch-sizes", "1",
                                "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert "| 1 |" in result.stdout and "new tokens per s" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_the_throughput_script_says_it_needs_a_gpu():
    result = _throughput_script()
    assert result.returncode == 2 and "no CUDA device" in result.stderr


@needs_cuda
def test_the_throughput_script_measures_medgemma_4b_in_bf16():
    result = _throughput_script("--new-tokens", "8", "--batch-sizes", "1", "4", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert "4.30B parameters in bfloat16" in result.stdout


def _training_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_fairgrpo_steps.py"), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run is for machines without CUDA")
def test_the_training_script_runs_a_lora_step_at_test_size_on_cpu(tmp_path):
    result = _training_script("--scaled-down", "--device", "cpu", "--steps", "1", "--prompts", "2",
                              "--generations", "2", "--completion-tokens", "8", "--lora-rank", "2",
                              "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["steps"] == 1 and record["lora_rank"] == 2 and record["median_step_s"] > 0
    assert "| scaled-down MedGemma |" in result.stdout
    assert (tmp_path / "run-fairgrpo-lora2" / "model" / "config.json").is_file()  # the merged model was saved


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_the_training_script_says_it_needs_a_gpu():
    result = _training_script()
    assert result.returncode == 2 and "no CUDA device" in result.stderr


@needs_cuda
@pytest.mark.parametrize("lora_rank", [16, 0])
def test_the_training_script_runs_medgemma_4b_sized_fairgrpo_steps_in_bf16(tmp_path, lora_rank):
    result = _training_script("--steps", "2", "--completion-tokens", "16", "--lora-rank", str(lora_rank),
                              "--gradient-checkpointing", "--out", str(tmp_path), timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["parameters"] > 3.5e9 and record["steps"] == 2 and record["peak_gpu_memory_gib"] > 7


@needs_cuda
def test_a_numbered_gpu_holds_the_whole_model(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cuda:0")
    assert loaded.model.hf_device_map == {"": 0} and loaded.device == torch.device("cuda", 0)
