"""Benchmark: batched evaluation (``generate_answers`` with batch 16) vs answering one case at a time, on CPU.

Both answer the same test cases of the embedded benchmark (mixed sources, so prompts differ in length) with the
tiny FairMedGemma, greedy decoding, in one process pinned to one thread. The two ways alternate within each
round (loop first in even rounds, batched first in odd ones) so drift in the machine's load hits both alike;
each round is timed separately and the median is reported. Every round also checks that the batched answers
equal the loop's answers, token for token.

Run:  .venv/bin/python benchmarks/bench_inference.py            (about a minute on 2 cores)
      .venv/bin/python benchmarks/bench_inference.py --quick    (smoke test, seconds; does not write the doc)
      .venv/bin/python benchmarks/bench_inference.py --train-if-missing   (no shipped model: train a small one)
The results replace the "Inference" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

from _report import machine_description  # noqa: E402
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.models.generation import GenerationOptions, generate_answers  # noqa: E402
from fairmed_core.models.loading import load_model  # noqa: E402
from fairmed_core.runs.workspace import TINY_MODEL  # noqa: E402

SECTION = "## Inference: batched generation vs one case at a time"


@dataclass(frozen=True)
class RoundTiming:
    """One round: the same cases answered both ways."""

    loop_s: float
    batched_s: float
    loop_first: bool
    identical: bool

    @property
    def speedup(self) -> float:
        return self.loop_s / self.batched_s


def benchmark_cases(manifest: Path, n_cases: int):
    """The first ``n_cases`` test cases, an equal share from each source, interleaved."""
    dataset = read_manifest(manifest)
    test = dataset.cases[dataset.cases["split"] == "test"]
    per_source = -(-n_cases // test["dataset"].nunique())
    picked = test.groupby("dataset").head(per_source)
    picked = picked.assign(_rank=picked.groupby("dataset").cumcount()).sort_values(["_rank", "dataset"])
    picked = picked.head(n_cases)
    return list(picked["problem"]), [[dataset.load_image(case_id)] for case_id in picked["case_id"]]


def _train_small_model(manifest: Path, out: Path) -> Path:
    from fairmed_core.training.sft import SFTConfig, train_sft

    print(f"no model at {TINY_MODEL}: training a small one into {out} (about a minute)")
    train_sft(manifest, out, SFTConfig(epochs=2, max_cases=384, batch_size=16, learning_rate=3e-3))
    return out


def run_rounds(loaded, questions, images, *, batch_size: int, max_new_tokens: int, rounds: int):
    batched_options = GenerationOptions(batch_size=batch_size, max_new_tokens=max_new_tokens)
    single_options = GenerationOptions(batch_size=1, max_new_tokens=max_new_tokens)

    def loop():
        return [generate_answers(loaded, [q], [i], single_options)[0] for q, i in zip(questions, images)]

    def batched():
        return generate_answers(loaded, questions, images, batched_options)

    def timed(function):
        started = time.perf_counter()
        result = function()
        return time.perf_counter() - started, result

    generate_answers(loaded, questions[:2], images[:2], batched_options)  # warm-up: lazy init, allocator
    timings, new_tokens = [], []
    for index in range(rounds):
        loop_first = index % 2 == 0
        if loop_first:
            loop_s, looped = timed(loop)
            batched_s, together = timed(batched)
        else:
            batched_s, together = timed(batched)
            loop_s, looped = timed(loop)
        identical = [g.completion for g in together] == [g.completion for g in looped]
        timings.append(RoundTiming(loop_s, batched_s, loop_first, identical))
        new_tokens = [g.new_tokens for g in looped]
        print(f"round {index + 1}: loop {loop_s:.2f} s ({len(questions) / loop_s:.1f} cases/s), batched "
              f"{batched_s:.2f} s ({len(questions) / batched_s:.1f} cases/s), {loop_s / batched_s:.2f}x, "
              f"identical answers: {identical}")
    return timings, new_tokens


def padding_tokens(loaded, questions, images, batch_size: int) -> tuple[int, int]:
    """Pad tokens the batched run adds (prompts sorted by length, as ``generate_answers`` batches them) and
    its prompt tokens in all."""
    from fairmed_core.models.prompting import prompt_texts

    texts = prompt_texts(loaded.processor, questions, [len(group) for group in images])
    lengths = sorted(len(loaded.processor.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
    batches = [lengths[start:start + batch_size] for start in range(0, len(lengths), batch_size)]
    return sum(max(b) * len(b) - sum(b) for b in batches), sum(lengths)


def markdown(timings: list[RoundTiming], new_tokens: list[int], *, n_cases: int, batch_size: int,
             max_new_tokens: int, model_name: str, parameter_count: int, load: tuple[float, float],
             padding: tuple[int, int]) -> str:
    loop_rate = statistics.median(n_cases / t.loop_s for t in timings)
    batched_rate = statistics.median(n_cases / t.batched_s for t in timings)
    speedup = statistics.median(t.speedup for t in timings)
    identical = all(t.identical for t in timings)
    lines = [
        SECTION,
        "",
        f"Generated by `benchmarks/bench_inference.py` on {datetime.date.today().isoformat()}. "
        f"Machine: {machine_description()}.",
        f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}.",
        "",
        f"Workload: {n_cases} test cases of the embedded benchmark (an equal share of each source, so prompts "
        f"differ in length), answered by `{model_name}` ({parameter_count / 1e6:.2f}M parameters, fp32, CPU) "
        f"with greedy decoding, at most {max_new_tokens} new tokens (mean {statistics.mean(new_tokens):.1f} "
        f"per answer). Batched: one `generate_answers(..., GenerationOptions(batch_size={batch_size}))` call "
        f"(prompts sorted by length, left-padded). Loop: `generate_answers` called once per case. Same process, "
        f"same loaded model; the two alternate within each round. Sorting by length left {padding[0]} pad "
        f"tokens in {padding[1]} prompt text tokens (image tokens excluded) in the batched run: each source asks "
        f"its own question, so most batches hold prompts of one length. Equality under heavy left padding is "
        f"checked separately by `tests/test_generation.py`.",
        "",
        "| round | order | loop (s) | loop cases/s | batched (s) | batched cases/s | speed-up | same answers |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for index, t in enumerate(timings, start=1):
        lines.append(
            f"| {index} | {'loop first' if t.loop_first else 'batched first'} | {t.loop_s:.2f} | "
            f"{n_cases / t.loop_s:.1f} | {t.batched_s:.2f} | {n_cases / t.batched_s:.1f} | {t.speedup:.2f}x | "
            f"{'yes' if t.identical else 'NO'} |")
    lines += [
        "",
        f"Median over {len(timings)} rounds: loop {loop_rate:.1f} cases/s, batched {batched_rate:.1f} cases/s, "
        f"speed-up {speedup:.2f}x at batch {batch_size} (target: at least 4x).",
        (f"The batched answers equal the one-at-a-time answers in every round ({n_cases} of {n_cases} "
         f"completions identical, token for token)." if identical else
         "The batched answers DIFFER from the one-at-a-time answers in at least one round (see the table)."),
        f"One-minute load average on the {os.cpu_count()} cores: {load[0]:.2f} before, {load[1]:.2f} after the "
        f"run (other work shares the machine); rounds vary with it, which is why the two ways alternate and the "
        f"median is reported.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's section, leaving other sections of the file alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + section.rstrip("\n").splitlines() + ([""] if end < len(lines) else []) + lines[end:]
    else:
        lines = lines + [""] + section.rstrip("\n").splitlines()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TINY_MODEL, help="model folder (default: the shipped one)")
    parser.add_argument("--train-if-missing", action="store_true",
                        help="train a small tiny model with train_sft when --model does not exist")
    parser.add_argument("--cases", type=int, default=96, help="test cases to answer")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="12 cases, one round, no doc update")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.rounds = 12, 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fairmed-bench-") as scratch:
        manifest = ensure_default_dataset(Path(scratch) / "datasets")
        model_dir = args.model
        if not (model_dir / "config.json").is_file():
            if not args.train_if_missing:
                print(f"no model at {model_dir}; pass --train-if-missing to train a small one", file=sys.stderr)
                return 2
            model_dir = _train_small_model(manifest, Path(scratch) / "tiny-model")
        loaded = load_model(model_dir, device="cpu")
        questions, images = benchmark_cases(manifest, args.cases)
        load_before = os.getloadavg()[0]
        timings, new_tokens = run_rounds(loaded, questions, images, batch_size=args.batch_size,
                                         max_new_tokens=args.max_new_tokens, rounds=args.rounds)
        model_name = model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir.name
        section = markdown(timings, new_tokens, n_cases=len(questions), batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens, model_name=str(model_name),
                           parameter_count=loaded.parameter_count, load=(load_before, os.getloadavg()[0]),
                           padding=padding_tokens(loaded, questions, images, args.batch_size))
    print(section)
    if not args.quick:
        write_section(args.doc, section)
        print(f"wrote {args.doc}")
    return 0 if all(t.identical for t in timings) else 1


if __name__ == "__main__":
    raise SystemExit(main())
