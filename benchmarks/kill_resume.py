"""Measurement: FairGRPO runs killed with SIGKILL at random moments, some during checkpoint saves, then resumed.

Each run is the real command line, ``fairmed train fairgrpo`` on the shipped tiny FairMedGemma and the embedded
benchmark, short (8 steps, 2 prompts x 2 rollouts, a checkpoint every 2 steps). A run is killed ``--kills-per-run``
times and resumed with ``--resume`` after each kill (a run killed before its first checkpoint cannot resume: it
is started again in an empty folder, as a user would), then resumed to the end. Half the kills wait for a
checkpoint save to begin (the staging folder ``checkpoints/.saving`` appears; polled every millisecond) and
strike at once; the others strike after a random delay in the reference run's wall time. After every kill and
at the end every ``checkpoint-N`` folder is checked complete: ``trainer_state.json`` for step N, the FairGRPO
statistics, a whole safetensors file, intact optimizer/scheduler/RNG archives (zip checks, nothing unpickled).
Each finished run must report the configured step count; its final weights are compared with an uninterrupted
run's. Results go to the section "Killed training runs resume" of docs/RESULTS.md with ``--write``.

Run:  nice -n 10 .venv/bin/python benchmarks/kill_resume.py --write       (20 kills, about 20 minutes on 2 busy cores)
      nice -n 10 .venv/bin/python benchmarks/kill_resume.py --kills 2     (a quick look; does not write the doc)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import machine_description, replace_section  # noqa: E402
from fairmed_core.files import TINY_MODEL  # noqa: E402
from fairmed_core.training.checkpoints import STAGING_DIR, interrupted_saves  # noqa: E402

SECTION = "## Killed training runs resume"
STEPS, SAVE_EVERY = 8, 2
TRAIN_FLAGS = ["--steps", str(STEPS), "--prompts", "2", "--generations", "2", "--save-every", str(SAVE_EVERY),
               "--eval-every", "1000", "--eval-limit", "8", "--max-completion-length", "16", "--test-split", "none"]
CLI = "import sys; from fairmed_core.cli import main; sys.exit(main())"


def command(manifest: Path, out: Path, *, resume: bool) -> list[str]:
    return [sys.executable, "-c", CLI, "train", "fairgrpo", "--model", str(TINY_MODEL), "--data", str(manifest),
            "--out", str(out), *TRAIN_FLAGS, *(["--resume"] if resume else [])]


def start(argv: list[str]) -> subprocess.Popen:
    """The command, its messages to a file beside its run folder (a pipe nobody reads would fill and stall it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Path(argv[argv.index("--out") + 1]).with_suffix(".log").open("w") as log:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)


def messages(argv: list[str]) -> str:
    return Path(argv[argv.index("--out") + 1]).with_suffix(".log").read_text()[-800:]


def _safetensors_whole(path: Path) -> bool:
    with path.open("rb") as stream:
        head = stream.read(8)
        if len(head) != 8:
            return False
        size = struct.unpack("<Q", head)[0]
        try:
            header = json.loads(stream.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return path.stat().st_size == 8 + size + end


def torn_reason(folder: Path) -> str | None:
    """Why the checkpoint folder is not complete, None when it is."""
    step = int(folder.name.split("-")[1])
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        if state.get("global_step") != step:
            return f"trainer_state.json is for step {state.get('global_step')}"
        if not isinstance(json.loads((folder / "fairgrpo_statistics.json").read_text()), dict):
            return "fairgrpo_statistics.json is not an object"
        if not _safetensors_whole(folder / "model.safetensors"):
            return "model.safetensors is cut short"
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            with zipfile.ZipFile(folder / name) as archive:
                if archive.testzip() is not None:
                    return f"{name} fails its CRC check"
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        return f"{type(error).__name__}: {error}"
    return None


def torn_checkpoints(out: Path) -> list[str]:
    folders = sorted((out / "checkpoints").glob("checkpoint-*"))
    return [f"{p.name}: {reason}" for p in folders if (reason := torn_reason(p)) is not None]


def kill_once(process: subprocess.Popen, argv: list[str], out: Path, *, save: int | None, delay: float
              ) -> float | None:
    """SIGKILL ``process``: with ``save``, ``delay`` seconds after its save of ``checkpoint-<save>`` begins (the
    staging folder appears); else ``delay`` seconds after its first step ended (its progress bar appears). The
    seconds it had run when killed; None when it ended first."""
    began, armed = time.monotonic(), None
    log = Path(argv[argv.index("--out") + 1]).with_suffix(".log")
    while process.poll() is None:
        if armed is None:
            if save is not None:
                started = (out / "checkpoints" / STAGING_DIR / f"checkpoint-{save}").exists()
            else:
                started = "fairgrpo training" in log.read_text(errors="replace")
            armed = time.monotonic() if started else None
        if armed is not None and time.monotonic() - armed >= delay:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return time.monotonic() - began
        time.sleep(0.001 if save is not None else 0.01)
    return None


def newest_checkpoint(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")]
    return max(steps, default=0)


def finish(argv: list[str]) -> tuple[int, str]:
    process = start(argv)
    process.wait()
    return process.returncode, messages(argv)


def weights_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((left[k].float() - right[k].float()).abs().max()) for k in left)


def measure(kills: int, kills_per_run: int, seed: int, work: Path) -> dict:
    from fairmed_core.data import ensure_default_dataset

    manifest = ensure_default_dataset(work / "datasets")
    rng = random.Random(seed)
    reference = work / "reference"
    argv = command(manifest, reference, resume=False)
    began, training_s = time.monotonic(), None
    process = start(argv)
    while process.poll() is None:  # when training begins (the trainer makes its checkpoint folder)
        if training_s is None and (reference / "checkpoints").exists():
            training_s = time.monotonic() - began
        time.sleep(0.005)
    reference_s = time.monotonic() - began
    if process.returncode != 0 or training_s is None:
        raise SystemExit(f"the uninterrupted run failed ({process.returncode}): {messages(argv)}")
    seconds_per_step = json.loads((reference / "training.json").read_text())["seconds_per_step"]
    runs, done = [], 0
    while done < kills:
        out = work / f"run-{len(runs)}"
        record = {"kills": [], "fresh_restarts": 0, "failures": []}
        resume = False
        for _ in range(min(kills_per_run, kills - done)):
            reached = newest_checkpoint(out)
            saves_ahead = list(range(reached + SAVE_EVERY, STEPS + 1, SAVE_EVERY))
            if done % 2 == 0 and saves_ahead:
                # Aimed at a save still ahead, at a random moment in its first 50 ms (the tiny model's save
                # takes tens of milliseconds).
                save, delay = rng.choice(saves_ahead), rng.uniform(0.0, 0.05)
            else:
                # At a random moment of the training still ahead (after the first step of this process).
                save, delay = None, rng.uniform(0.0, max(0.0, STEPS - reached - 1) * seconds_per_step)
            argv = command(manifest, out, resume=resume)
            process = start(argv)
            at = kill_once(process, argv, out, save=save, delay=delay)
            done += 1
            interrupted = bool(interrupted_saves(out / "checkpoints"))
            record["kills"].append({"aimed_at_save": save, "resumed_from_step": reached,
                                    "killed_at_s": None if at is None else round(at, 2),
                                    "interrupted_save_on_disk": interrupted, "torn": torn_checkpoints(out)})
            if at is None and process.returncode != 0:
                record["failures"].append(f"ended {process.returncode} before the kill: {messages(argv)}")
            resume = any((out / "checkpoints").glob("checkpoint-*")) or (out / "training.json").is_file()
            if not resume and out.exists():
                shutil.rmtree(out)  # killed before its first checkpoint: nothing to resume, start again
                record["fresh_restarts"] += 1
        code, err = finish(command(manifest, out, resume=resume))
        if code != 0:
            record["failures"].append(f"final resume exited {code}: {err[-800:]}")
        finished = json.loads((out / "training.json").read_text()) if (out / "training.json").is_file() else {}
        record["final_steps"] = finished.get("steps")
        record["resumed_from"] = finished.get("resumed_from")
        record["torn_at_end"] = torn_checkpoints(out)
        record["staging_left"] = (out / "checkpoints" / STAGING_DIR).exists()
        if (out / "model").is_dir():
            record["max_weight_difference"] = weights_difference(out / "model", reference / "model")
        runs.append(record)
        print(json.dumps(record), flush=True)
    return {"reference_s": round(reference_s, 1), "training_from_s": round(training_s, 1),
            "seconds_per_step": seconds_per_step, "runs": runs, "seed": seed, "kills": kills}


def summary(result: dict) -> dict:
    kills = [k for run in result["runs"] for k in run["kills"]]
    return {
        "runs": len(result["runs"]), "kills": len(kills),
        "aimed_at_saves": sum(k["aimed_at_save"] is not None for k in kills),
        "resumes_from_a_checkpoint": sum(k["resumed_from_step"] > 0 for k in kills)
        + sum(run["resumed_from"] is not None for run in result["runs"]),
        "interrupted_saves": sum(k["interrupted_save_on_disk"] for k in kills),
        "ended_before_kill": sum(k["killed_at_s"] is None for k in kills),
        "fresh_restarts": sum(run["fresh_restarts"] for run in result["runs"]),
        "torn_after_kill": sum(bool(k["torn"]) for k in kills),
        "torn_at_end": sum(bool(run["torn_at_end"]) for run in result["runs"]),
        "reached_final_step": sum(run["final_steps"] == STEPS for run in result["runs"]),
        "failures": sum(len(run["failures"]) for run in result["runs"]),
        "identical_weights": sum(run.get("max_weight_difference") == 0.0 for run in result["runs"]),
        "max_weight_difference": max((run.get("max_weight_difference", float("nan")) for run in result["runs"]),
                                     default=float("nan")),
    }


def weights_sentence(numbers: dict) -> str:
    if numbers["identical_weights"] == numbers["runs"]:
        return "Every resumed run ended with the uninterrupted run's weights, bit for bit."
    return (f"Final weights equal the uninterrupted run's in {numbers['identical_weights']} of {numbers['runs']} "
            f"runs; the largest absolute difference is {numbers['max_weight_difference']:.2g} (the learning rate is "
            f"2e-5): a resumed run continues from its checkpoint but does not replay an uninterrupted run bit for "
            f"bit (why the steps after a resume differ was not traced here).")


def _wrapped(text: str) -> str:
    """Paragraphs filled to the documents' width; headings and tables as they are."""
    parts = [part if part.startswith(("#", "|")) else textwrap.fill(" ".join(part.split()), width=114,
                                                                     break_on_hyphens=False)
             for part in text.strip().split("\n\n")]
    return "\n\n".join(parts) + "\n"


def section(result: dict, numbers: dict) -> str:
    return _wrapped(f"""{SECTION}

Issue 13 found 9 of 19 FairGRPO resumes after `kill -9` failing for good on a checkpoint torn by the kill.
Checkpoints are now written into `checkpoints/.saving/checkpoint-N`, flushed to disk and renamed into place
(`fairmed_core/training/checkpoints.py`). `benchmarks/kill_resume.py` (seed {result['seed']}) ran
`fairmed train fairgrpo` on the shipped tiny model ({STEPS} steps, 2 prompts x 2 rollouts, a checkpoint every
{SAVE_EVERY} steps; {result['seconds_per_step']} s per step uninterrupted) {numbers['runs']} times, killed each run
with SIGKILL {numbers['kills'] // max(1, numbers['runs'])} times, resumed it with `--resume` after each kill and
once more to the end. Every other kill was aimed at a save still ahead of the process (within 50 ms of its staging
folder appearing), the others at a random moment of the training still ahead.

| kills | aimed at a save | cut a save short | ended before the kill | resumes from a checkpoint | started again (no checkpoint yet) | torn checkpoints after a kill | runs reaching step {STEPS} | torn at the end | failed resumes |
|---|---|---|---|---|---|---|---|---|---|
| {numbers['kills']} | {numbers['aimed_at_saves']} | {numbers['interrupted_saves']} | {numbers['ended_before_kill']} | {numbers['resumes_from_a_checkpoint']} | {numbers['fresh_restarts']} | {numbers['torn_after_kill']} | {numbers['reached_final_step']} of {numbers['runs']} | {numbers['torn_at_end']} | {numbers['failures']} |

"Cut a save short" counts kills after which the staging folder held a half-written checkpoint: the resume named
it and went back to the previous complete checkpoint. A torn checkpoint is a `checkpoint-N` folder whose
trainer state is not for step N, or whose statistics, safetensors weights or optimizer, scheduler and RNG archives
are incomplete (checked without unpickling). {weights_sentence(numbers)}
Machine: {machine_description('nice -n 10, one thread per run, beside other work')}; {datetime.date.today()}.
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--kills-per-run", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--write", action="store_true", help="write the section of docs/RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write every run's record here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fairmed-kill-") as work:
        result = measure(args.kills, args.kills_per_run, args.seed, Path(work))
    numbers = summary(result)
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**result, "summary": numbers}, indent=2))
    if args.write:
        replace_section(ROOT / "docs" / "RESULTS.md", SECTION, section(result, numbers))


if __name__ == "__main__":
    main()
