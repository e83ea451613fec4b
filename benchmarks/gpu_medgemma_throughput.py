"""Generation throughput of a MedGemma-4B-sized model (random weights) in bf16 on a GPU: new tokens per second.

The model is ``Gemma3ForConditionalGeneration`` built from MedGemma-4B's published config
(``fairmed_core.models.architectures.medgemma_4b_config``: 4.30B parameters, the full 262k vocabulary, 896-pixel
SigLIP images, 256 image tokens per image), with random weights: throughput depends on the shapes, not on the
values. Each prompt is one image and a question of FairGRPO's length; every sequence is forced to exactly
``--new-tokens`` tokens (``min_new_tokens``) so batches are comparable. Batch sizes run in one process, each
timed ``--rounds`` times after a warm-up; the median is reported.

Run on a GPU machine:   python benchmarks/gpu_medgemma_throughput.py --batch-sizes 1 8 32
Smoke test on a CPU:    python benchmarks/gpu_medgemma_throughput.py --scaled-down --device cpu --new-tokens 4
(``--scaled-down`` uses the CPU-test-sized MedGemma shape; its numbers mean nothing.) Paste the printed table
into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fairmed_core.models.architectures import medgemma_4b_config, scaled_down_medgemma_config  # noqa: E402

QUESTION_TOKENS = 48  # FairGRPO's instruction plus a short clinical question, in Gemma 3 tokens


@dataclass(frozen=True)
class Throughput:
    """One batch size: median seconds per generate call and new tokens per second."""

    batch_size: int
    seconds: float
    new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size * self.new_tokens / self.seconds


def build_model(config, device: torch.device, dtype: torch.dtype):
    """Random-init model built directly on ``device`` (no 8 GB CPU copy first)."""
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma3ForConditionalGeneration(config).to(dtype)
    return model.eval()


def prompt_batch(config, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
    """``input_ids`` laid out as the Gemma 3 processor lays out one image and a question, and pixel values."""
    text = config.text_config
    bos, boi, eoi, image = 2, config.boi_token_index, config.eoi_token_index, config.image_token_index
    generator = torch.Generator().manual_seed(0)
    question = torch.randint(1_000, min(text.vocab_size, 200_000), (batch_size, QUESTION_TOKENS), generator=generator)
    image_tokens = torch.full((batch_size, config.mm_tokens_per_image), image)
    ids = torch.cat([torch.full((batch_size, 1), bos), torch.full((batch_size, 1), boi), image_tokens,
                     torch.full((batch_size, 1), eoi), question], dim=1)
    side = config.vision_config.image_size
    pixels = torch.randn(batch_size, 3, side, side, generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": pixels.to(device=device, dtype=dtype)}


def measure(model, config, batch_size: int, *, new_tokens: int, rounds: int, device: torch.device,
            dtype: torch.dtype) -> Throughput:
    batch = prompt_batch(config, batch_size, device, dtype)
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
               "pad_token_id": 0, "eos_token_id": None}

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**batch, **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert output.shape[1] == batch["input_ids"].shape[1] + new_tokens
        return time.perf_counter() - started

    once()  # warm-up: kernels, caches
    return Throughput(batch_size, statistics.median(once() for _ in range(rounds)), new_tokens)


def markdown(results: list[Throughput], *, device: str, dtype: torch.dtype, parameters: int) -> str:
    lines = [f"Device: {device}; {parameters / 1e9:.2f}B parameters in {str(dtype).replace('torch.', '')}; "
             f"torch {torch.__version__}.", "",
             "| batch | s per generate | new tokens per s | per sequence |", "|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.batch_size} | {r.seconds:.2f} | {r.tokens_per_s:.1f} | "
                     f"{r.tokens_per_s / r.batch_size:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scaled-down", action="store_true", help="CPU-test-sized MedGemma shape (smoke test)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or --scaled-down --device cpu for a smoke test",
              file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = scaled_down_medgemma_config() if args.scaled_down else medgemma_4b_config()
    model = build_model(config, device, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    results = []
    for batch_size in args.batch_sizes:
        result = measure(model, config, batch_size, new_tokens=args.new_tokens, rounds=args.rounds,
                         device=device, dtype=dtype)
        print(f"batch {batch_size}: {result.seconds:.2f} s, {result.tokens_per_s:.1f} new tokens/s", flush=True)
        results.append(result)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(markdown(results, device=name, dtype=dtype, parameters=parameters))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
