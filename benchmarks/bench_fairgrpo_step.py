"""Benchmark: FairGRPO's step time against plain GRPO, same configuration, one process.

Both train the shipped tiny FairMedGemma on the embedded benchmark's train split with identical settings
(prompts per step, G, completion length, seed); the two methods alternate over several rounds of a few steps
each (GRPO first in even rounds) so drift in the machine's load hits both alike. The time per step is TRL's own
``step_time`` log (generation, reward, advantages, loss, optimizer), the median over all steps of a method
after each round's first (warm-up) step. The ratio goes to the section "FairGRPO step time" of
docs/BENCHMARKS.md.

Run:  .venv/bin/python benchmarks/bench_fairgrpo_step.py                (about 5 minutes on one thread)
      .venv/bin/python benchmarks/bench_fairgrpo_step.py --quick        (seconds; does not write the doc)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402

from _report import replace_section  # noqa: E402
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.models.loading import load_model  # noqa: E402
from fairmed_core.runs.workspace import TINY_MODEL  # noqa: E402
from fairmed_core.training.fairgrpo_trainer import FairGRPOConfig, FairGRPOTrainer, grpo_dataset  # noqa: E402

SECTION = "## FairGRPO step time against GRPO"


class _StepTimes(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "step_time" in logs:
            self.times.append(float(logs["step_time"]))


def one_round(method: str, data, steps: int, out: Path) -> list[float]:
    loaded = load_model(TINY_MODEL, device="cpu")
    times = _StepTimes()
    config = FairGRPOConfig(output_dir=str(out / method), method=method, max_steps=steps,
                            per_device_train_batch_size=32, num_generations=4, max_completion_length=32,
                            learning_rate=2e-5, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                            bf16=False, use_cpu=True, disable_tqdm=True, label_values=["no", "yes"])
    trainer = FairGRPOTrainer(model=loaded.model, args=config, train_dataset=data,
                              processing_class=loaded.processor, callbacks=[times])
    trainer.train()
    return times.times[1:]  # the first step pays one-off costs (imports, allocator)


class _WeightingTimer:
    """Wraps the trainer's FairGRPO weighting call and sums its wall time: the only work FairGRPO adds to a
    GRPO step, measured directly (whole-step times are dominated by generation, whose length varies)."""

    def __init__(self) -> None:
        import fairmed_core.training.methods as methods_module  # the FairGRPO methods call it from there

        self.module, self.original = methods_module, methods_module.fairgrpo_advantages
        self.seconds: list[float] = []

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - began)

        methods_module.fairgrpo_advantages = timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds, steps = (2, 2) if args.quick else (args.rounds, args.steps)
    dataset = read_manifest(ensure_default_dataset(ROOT / "workspace" / "datasets"))
    data = grpo_dataset(dataset, "train", label_values=dataset.label_values)
    out = Path(tempfile.mkdtemp(prefix="bench-fairgrpo-"))
    load_before = os.getloadavg()[0]
    weighting = _WeightingTimer()
    times: dict[str, list[float]] = {"grpo": [], "fairgrpo": []}
    for index in range(rounds):
        order = ("grpo", "fairgrpo") if index % 2 == 0 else ("fairgrpo", "grpo")
        for method in order:
            measured = one_round(method, data, steps, out)
            times[method].extend(measured)
            print(f"round {index + 1} {method}: median {statistics.median(measured):.3f} s/step", flush=True)
    load_after = os.getloadavg()[0]
    grpo, fair = statistics.median(times["grpo"]), statistics.median(times["fairgrpo"])
    text = "\n".join([
        SECTION, "",
        f"Generated by `benchmarks/bench_fairgrpo_step.py` on {datetime.date.today().isoformat()}; torch "
        f"{torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, one CPU thread.", "",
        f"Workload: the shipped tiny FairMedGemma, 8 prompts x G=4 rollouts of up to 32 tokens per step, the same "
        f"seed and data for both methods; {rounds} alternating rounds of {steps} steps each (the first step of a "
        "round is left out). Time per step is TRL's `step_time` (generation, rewards, advantages, loss, update).",
        "", "| method | steps timed | median s/step |", "|---|---:|---:|",
        f"| GRPO | {len(times['grpo'])} | {grpo:.3f} |", f"| FairGRPO | {len(times['fairgrpo'])} | {fair:.3f} |", "",
        f"FairGRPO / GRPO = {fair / grpo:.3f} ({100 * (fair / grpo - 1):+.1f}%). "
        f"One-minute load average on the 2 cores: {load_before:.2f} before, {load_after:.2f} after.", "",
        f"The whole-step ratio cannot resolve a few percent: a step is mostly generation, whose length differs "
        f"between the two methods' rollouts, on a shared machine. The overhead itself, timed directly: the "
        f"FairGRPO weighting (`fairgrpo_advantages`, statistics update and clustering included) took a median "
        f"{1000 * statistics.median(weighting.seconds):.2f} ms per step over {len(weighting.seconds)} calls, "
        f"**{100 * statistics.median(weighting.seconds) / grpo:.2f}% of the median GRPO step** (target under "
        "5%; the paper reports under 0.1% at its scale).", ""])
    print(text)
    if not args.quick:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", SECTION, text, preamble="# Benchmarks\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
