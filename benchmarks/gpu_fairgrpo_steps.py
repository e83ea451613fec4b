"""A few FairGRPO training steps of a MedGemma-4B-sized model on CUDA in bf16 (all weights, or LoRA): the same job
code as ``fairmed train fairgrpo``, timed, with the GPU memory it needed.

The model is MedGemma-4B's architecture (``fairmed_core.models.architectures.medgemma_4b_config``: 896-pixel
SigLIP tower, 34-layer Gemma 3 decoder, 5 local : 1 global attention) with random weights, written to disk in
MedGemma's hub layout (sharded bf16 safetensors) by ``write_random_checkpoint`` and loaded back through
``load_model`` -- the path a real MedGemma folder takes. ``write_random_checkpoint`` sizes the vocabulary to its
small word-level tokenizer, so the model has 3.6B parameters rather than 4.3B (the 262k-row embedding is the
difference; the decoder and the vision tower are full size). The data is the embedded benchmark, its images
upscaled to 896 x 896 by the Gemma 3 processor.

Random weights never produce a correct answer, so every reward is 0 and the advantages are 0: the run measures
time and memory (generation of full-length completions, the forward and backward passes, the optimizer step),
not learning. Every step runs the full FairGRPO path (rewards gathered, the weighting with its zero-variance
fallback, statistics persisted).

Run on a GPU machine:   python benchmarks/gpu_fairgrpo_steps.py --steps 3                 (all weights, AdamW)
                        python benchmarks/gpu_fairgrpo_steps.py --steps 3 --lora-rank 16
Smoke test on a CPU:    python benchmarks/gpu_fairgrpo_steps.py --scaled-down --device cpu --steps 1
(``--scaled-down`` uses the CPU-test-sized MedGemma shape; its numbers mean nothing.) It prints one markdown
table row per run and writes ``result.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fairmed_core.data import ensure_default_dataset  # noqa: E402
from fairmed_core.jobs.grpo_training import GRPOJobConfig, run_grpo_training  # noqa: E402
from fairmed_core.models.architectures import (  # noqa: E402
    medgemma_4b_config,
    scaled_down_medgemma_config,
    write_random_checkpoint,
)
from fairmed_core.models.loading import check_model_directory, estimate_parameter_count  # noqa: E402
from fairmed_core.runs.training_store import read_metrics  # noqa: E402
from fairmed_core.training.sft import tiny_corpus  # noqa: E402

HEADER = ("| model | parameters | method | LoRA rank | prompts x G | completion tokens | median s/step | "
          "peak GPU memory (GiB) | device |\n|---|---:|---|---:|---|---:|---:|---:|---|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--method", default="fairgrpo", help="grpo, fairgrpo, fairgrpo_nd, grpo_dro, grpo_resample")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="rollouts per prompt (G)")
    parser.add_argument("--completion-tokens", type=int, default=64, help="rollout length limit")
    parser.add_argument("--lora-rank", type=int, default=0, help="0: train every weight")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu with --scaled-down for a smoke test")
    parser.add_argument("--scaled-down", action="store_true", help="CPU-test-sized MedGemma shape (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run this on a GPU machine, or pass --scaled-down --device cpu for a smoke test",
              file=sys.stderr)
        return 2
    if args.device == "cpu" and torch.cuda.is_available():  # the job picks CUDA whenever it sees one
        print("--device cpu on a CUDA machine: restart with CUDA_VISIBLE_DEVICES= for a CPU run", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(1)  # a smoke test on a small machine: more threads only contend
    work = args.out or Path(tempfile.mkdtemp(prefix="gpu-fairgrpo-"))
    work.mkdir(parents=True, exist_ok=True)

    config = scaled_down_medgemma_config() if args.scaled_down else medgemma_4b_config()
    dtype = torch.float32 if args.scaled_down else torch.bfloat16
    started = time.perf_counter()
    model_dir = write_random_checkpoint(work / "model", config, tiny_corpus(), dtype=dtype,
                                        max_shard_size="2MB" if args.scaled_down else "2GB")
    written_s = time.perf_counter() - started
    manifest = ensure_default_dataset(work / "datasets")

    job = GRPOJobConfig(method=args.method, steps=args.steps, prompts_per_step=args.prompts,
                        num_generations=args.generations, max_completion_length=args.completion_tokens,
                        eval_every=args.steps, eval_limit=8, save_every=max(args.steps, 1) * 1000, test_split=None,
                        lora_rank=args.lora_rank, gradient_checkpointing=args.gradient_checkpointing)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run_dir = work / f"run-{args.method}-lora{args.lora_rank}"
    finished = run_grpo_training(model_dir, manifest, run_dir, job)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    step_times = [r["step_time"] for r in read_metrics(run_dir)
                  if r.get("kind") == "train" and isinstance(r.get("step_time"), (int, float))]
    # The first step pays for CUDA kernels' first launch and the allocator's growth: leave it out when there
    # are others.
    timed = step_times[1:] if len(step_times) > 1 else step_times
    parameters = estimate_parameter_count(check_model_directory(model_dir).weight_files)
    result = {
        "model": "MedGemma-4B architecture (random weights)" if not args.scaled_down else "scaled-down MedGemma",
        "parameters": parameters, "method": args.method, "lora_rank": args.lora_rank,
        "prompts": args.prompts, "generations": args.generations, "completion_tokens": args.completion_tokens,
        "gradient_checkpointing": args.gradient_checkpointing, "steps": finished.steps,
        "step_times_s": step_times, "median_step_s": statistics.median(timed) if timed else None,
        "peak_gpu_memory_gib": peak_gib, "checkpoint_written_s": round(written_s, 1),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    (work / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(HEADER)
    size = f"{parameters / 1e9:.2f}B" if parameters >= 1e8 else f"{parameters / 1e6:.1f}M"
    print(f"| {result['model']} | {size} | {args.method} | "
          f"{args.lora_rank or '-'} | {args.prompts} x {args.generations} | {args.completion_tokens} | "
          f"{result['median_step_s']:.2f} | "
          f"{'-' if peak_gib is None else f'{peak_gib:.1f}'} | {result['device']} |")
    print(f"result: {work / 'result.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
