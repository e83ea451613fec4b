"""Benchmark: counterfactual pairs per second on CPU, batched (8 images per UNet call) vs one image at a time.

A pair is one DDIM inversion of the factual image under its group plus one guided regeneration under the other
group (the guided pass evaluates the UNet on the conditional and the null class in one batch). Both ways edit
the same 8 test cases of the embedded benchmark (round-robin over the sources) with the shipped generator at its
default edit settings, in one process pinned to one thread; they alternate within each round (loop first in even
rounds, batched first in odd ones) and the median round is reported. Every round checks that the batched images
equal the loop's (largest grey-level difference; batching changes only floating-point summation order).

Speed does not depend on what the weights learned, only on the network and the step count, so with no shipped
generator the script times an untrained one of the same configuration and says so.

Run:  .venv/bin/python benchmarks/bench_counterfactual.py           (a few minutes on 2 cores)
      .venv/bin/python benchmarks/bench_counterfactual.py --quick   (smoke test; does not write the doc)
The results replace the "Counterfactual pairs" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before torch is imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._report import replace_section  # noqa: E402
from fairmed_core.counterfactual import load_generator  # noqa: E402
from fairmed_core.counterfactual.generator import CounterfactualGenerator, GeneratorInfo, build_unet  # noqa: E402
from fairmed_core.counterfactual.training import _scheduler_config  # noqa: E402
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.runs.workspace import SHIPPED_GENERATORS  # noqa: E402

HEADING = "## Counterfactual pairs"
SHIPPED = SHIPPED_GENERATORS / "synth-sex"


def _generator(dataset) -> tuple[CounterfactualGenerator, str]:
    if (SHIPPED / "generator_config.json").is_file():
        return load_generator(SHIPPED), f"the shipped generator `{SHIPPED.relative_to(ROOT)}`"
    from fairmed_core.counterfactual.config import CounterfactualGeneratorConfig

    config = CounterfactualGeneratorConfig(attribute="sex", classes=("F", "M"), sources=dataset.sources)
    info = GeneratorInfo(config, {"synth_cxr": "L", "synth_derm": "RGB", "synth_mammo": "L"},
                         {s: {"F": 1, "M": 1} for s in config.sources}, 0, 0.0)
    torch.manual_seed(0)
    return CounterfactualGenerator(info, build_unet(config), _scheduler_config()), \
        "an untrained generator of the default configuration (no shipped generator found)"


def _cases(dataset, generator, n: int):
    cases = dataset.cases[(dataset.cases["split"] == "test") & (dataset.cases["sex"] != "UNK")]
    rows = [r for depth in range(n) for s in generator.config.sources
            for r in cases[cases["dataset"] == s].iloc[depth:depth + 1].to_dict(orient="records")][:n]
    images = [dataset.load_image(r["case_id"]) for r in rows]
    factual = [r["sex"] for r in rows]
    target = ["M" if v == "F" else "F" for v in factual]
    return images, [r["dataset"] for r in rows], factual, target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 images, 1 round, 4 steps; no doc written")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp()) if args.quick else ROOT / "workspace"
    dataset = read_manifest(ensure_default_dataset(root / "datasets"))
    generator, which = _generator(dataset)
    n = 2 if args.quick else 8
    rounds = 1 if args.quick else args.rounds
    steps = 4 if args.quick else None
    images, sources, factual, target = _cases(dataset, generator, n)
    settings = {"steps": steps}

    def loop():
        return [generator.counterfactuals([i], [s], [f], [t], batch_size=1, **settings)[0]
                for i, s, f, t in zip(images, sources, factual, target)]

    def batched():
        return generator.counterfactuals(images, sources, factual, target, batch_size=n, **settings)

    def batched_nchw():
        # The same batched edit with the UNet in the default (NCHW) layout, i.e. before channels-last.
        generator.unet.to(memory_format=torch.contiguous_format)
        try:
            return batched()
        finally:
            generator.unet.to(memory_format=torch.channels_last)

    def single():
        return generator.counterfactuals(images[:1], sources[:1], factual[:1], target[:1], batch_size=1, **settings)

    single()  # warm-up: first calls allocate
    times = {"loop": [], "batched": [], "batched_nchw": [], "single": []}
    largest = 0
    load_before = os.getloadavg()[0]
    for round_index in range(rounds):
        order = [("loop", loop), ("batched", batched), ("batched_nchw", batched_nchw)]
        if round_index % 2:
            order.reverse()
        results = {}
        for name, run in order:
            began = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - began)
        began = time.perf_counter()
        single()
        times["single"].append(time.perf_counter() - began)
        for a, b in zip(results["loop"] + results["batched_nchw"], results["batched"] * 2):
            largest = max(largest, int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()))
    load_after = os.getloadavg()[0]
    median = {k: statistics.median(v) for k, v in times.items()}
    config = generator.config
    used_steps = steps or config.inversion_steps
    depth = max(1, min(used_steps, round((config.strength) * used_steps)))
    lines = [
        HEADING, "",
        f"Written by `benchmarks/bench_counterfactual.py` on {datetime.date.today():%Y-%m-%d} "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread). Generator: {which}: "
        f"UNet {sum(p.numel() for p in generator.unet.parameters()):,} parameters at {config.image_size}x"
        f"{config.image_size}; edit settings {used_steps} DDIM steps, strength {config.strength:g} ({depth} "
        f"inversion + {depth} guided regeneration steps per pair), guidance {config.guidance:g}.",
        "",
        f"Workload: {n} test cases of the embedded benchmark, round-robin over the sources, each edited to the other "
        f"sex; {rounds} rounds, the ways alternating (the order reverses every other round); medians. The UNet runs "
        "in channels-last memory layout except in the NCHW row.",
        "",
        "| Way | Seconds for the pairs | Pairs per second | Speed-up |",
        "|---|---|---|---|",
        f"| one image at a time (loop, {n} pairs) | {median['loop']:.2f} | {n / median['loop']:.2f} | 1.00 |",
        f"| batched ({n} images per UNet call) | {median['batched']:.2f} | {n / median['batched']:.2f} | "
        f"{median['loop'] / median['batched']:.2f} |",
        f"| batched, NCHW layout (before channels-last) | {median['batched_nchw']:.2f} | "
        f"{n / median['batched_nchw']:.2f} | {median['loop'] / median['batched_nchw']:.2f} |",
        f"| batch 1 (one pair alone) | {median['single']:.2f} | {1 / median['single']:.2f} | |",
        "",
        f"Target: a batch of 8 pairs in under 10 s on CPU: {'met' if median['batched'] < 10 else 'missed'} "
        f"({median['batched']:.2f} s). Largest grey-level difference between the batched images and the looped "
        "(and NCHW) ones: "
        f"{largest} (0 is identical; batching only changes the order of floating-point sums).",
        "",
        f"One-minute load average on the {os.cpu_count()} cores: {load_before:.2f} before, {load_after:.2f} after "
        "(the machine is shared with other work).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        replace_section(Path(args.out), HEADING, text, preamble="# Benchmarks\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
