"""Train the FairGrad runs shipped with FairMed (``assets/fairgrad/``), so the FairGrad page opens on a comparison
instead of an empty panel: ERM, the fixed-weight penalty and FairGrad, with the repository's own jobs
(``fairmed_core.jobs.fairgrad_images`` and ``fairmed_core.jobs.fairgrad_tabular``, what ``fairmed train fairgrad``
and ``fairmed train fairgrad-tabular`` run), on

* the embedded benchmark's images (one small CNN per source, fairness objective on sex, the job's default
  settings except a penalty weight of 0.3: at 1.0 the penalty collapsed every source to answering no, as the page
  warns, and 0.3 is the page's own advice), predicting the ``val`` split (600 cases: the test split's 2,400 would
  make each run's predictions 240 KB). FairGrad at its defaults answers no to every dermoscopy case (warm-up 12
  of 15 epochs did not change that): shipped as it is, the page's collapse warning names it; and
* a SUPPORT2-like sepsis table (2,000 patients, 400 held out; with 1,000 the 200 test rows held about 16 patients
  of "other" race, and the race gaps swung by 0.2 between methods: noise) (``assets/fairgrad/support2_like_sepsis.csv``, written here: synthetic patients
  with SUPPORT2's column names and ranges; the real SUPPORT2 ships in the optional GPL ``survset`` package, which
  FairMed cannot redistribute), where 180-day death depends on physiology and, deliberately, on race and sex
  beyond it, so that there is a disparity to mitigate.

Each run keeps ``run.json``, ``predictions.csv`` and ``training_history.csv``; its ``audit/`` folder (hundreds of
KB, recomputed from the predictions in a second when the audit page opens the run) is left out, and the paths in
``run.json`` are made relative to the repository so they do not name this machine. Run from the repository root
(about 5 minutes on one CPU thread):

    .venv/bin/python benchmarks/shipped_fairgrad_runs.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fairmed_core.data import ensure_default_dataset  # noqa: E402
from fairmed_core.files import SHIPPED_FAIRGRAD  # noqa: E402
from fairmed_core.jobs import fairgrad_images, fairgrad_tabular  # noqa: E402
from fairmed_core.jobs.configs import FairGradImagesJobConfig, FairGradTabularJobConfig  # noqa: E402
from fairmed_core.training.fairgrad_config import METHODS, FairGradImageConfig, FairGradTabularConfig  # noqa: E402

TABLE = SHIPPED_FAIRGRAD / "support2_like_sepsis.csv"
KEEP = ("run.json", "predictions.csv", "training_history.csv")


def support2_like_sepsis(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Synthetic sepsis admissions with SUPPORT2's column names and plausible ranges; ``death_180d`` (1: died
    within 180 days) from a logistic model of age, blood pressure, heart and breathing rate, creatinine, sodium,
    white cells and cancer, plus a race and a sex effect that the physiology does not explain."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n, p=[0.45, 0.55])
    race = rng.choice(["white", "black", "other"], n, p=[0.75, 0.17, 0.08])
    age = np.clip(rng.normal(62, 15, n), 18, 100).round(1)
    meanbp = np.clip(rng.normal(70, 20, n), 20, 180).round()
    hrt = np.clip(rng.normal(110, 25, n), 30, 200).round()
    resp = np.clip(rng.normal(26, 9, n), 6, 60).round()
    temp = np.clip(rng.normal(37.8, 1.2, n), 33, 41.5).round(1)
    wblc = np.clip(rng.lognormal(2.5, 0.5, n), 0.5, 80).round(1)
    crea = np.clip(rng.lognormal(0.4, 0.55, n), 0.3, 12).round(2)
    sod = np.clip(rng.normal(138, 6, n), 115, 165).round()
    ca = rng.choice(["no", "yes", "metastatic"], n, p=[0.8, 0.13, 0.07])
    logit = (0.035 * (age - 62) - 0.025 * (meanbp - 70) + 0.012 * (hrt - 110) + 0.03 * (resp - 26)
             + 0.45 * np.log(crea / 1.5) + 0.04 * np.abs(sod - 138) + 0.02 * (wblc - 12)
             + 0.6 * (ca == "yes") + 1.6 * (ca == "metastatic") + 0.7 * (race == "black") - 0.5 * (sex == "female")
             - 0.25)
    died = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"patient_id": [f"S{i:04d}" for i in range(n)], "age": age, "sex": sex, "race": race,
                          "meanbp": meanbp, "hrt": hrt, "resp": resp, "temp": temp, "wblc": wblc, "crea": crea,
                          "sod": sod, "ca": ca, "death_180d": died})
    frame.loc[rng.choice(n, n // 12, replace=False), "crea"] = np.nan  # labs are often missing in SUPPORT2
    return frame


def _ship(run_dir: Path, target: Path, relative: dict[str, str]) -> None:
    """Copy the run's records (not its audit) into ``target``, with the paths ``relative`` names rewritten."""
    target.mkdir(parents=True)
    for name in KEEP:
        shutil.copy2(run_dir / name, target / name)
    info = json.loads((target / "run.json").read_text(encoding="utf-8"))
    info.update(relative)
    info["shipped"] = True
    (target / "run.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    if SHIPPED_FAIRGRAD.exists():
        shutil.rmtree(SHIPPED_FAIRGRAD)
    SHIPPED_FAIRGRAD.mkdir(parents=True)
    support2_like_sepsis().to_csv(TABLE, index=False)
    with tempfile.TemporaryDirectory() as scratch:
        manifest = ensure_default_dataset(Path(scratch) / "datasets")
        for method in METHODS:
            began = time.perf_counter()
            config = FairGradTabularJobConfig(table=str(TABLE), n_boot=200, fairgrad=FairGradTabularConfig(
                label="death_180d", positive_label="1", attributes=("race", "sex"), method=method,
                objectives={"race": "equal_opportunity"}, drop=("patient_id",), categorical=("ca",),
                epochs=150, seed=0))
            out = Path(scratch) / f"table-{method}"
            run = fairgrad_tabular.run(config, out)
            _ship(out, SHIPPED_FAIRGRAD / f"fairgrad-support2-like-{method}-s0",
                  {"table": str(TABLE.relative_to(ROOT))})
            print(f"table {method}: accuracy {run.record.accuracy:.3f}, AUROC {run.record.auroc:.3f}, "
                  f"{time.perf_counter() - began:.0f} s")
        for method in METHODS:
            began = time.perf_counter()
            config = FairGradImagesJobConfig(data=str(manifest), n_boot=200, fairgrad=FairGradImageConfig(
                method=method, attributes=("sex",), penalty_weight=0.3, split="val"))
            out = Path(scratch) / f"images-{method}"
            run = fairgrad_images.run(config, out)
            _ship(out, SHIPPED_FAIRGRAD / f"fairgrad-images-{method}-s0",
                  {"manifest_root": "embedded benchmark (fairmed_core.data.ensure_default_dataset)"})
            print(f"images {method}: accuracy {run.record.accuracy:.3f}, {time.perf_counter() - began:.0f} s")
    total = sum(path.stat().st_size for path in SHIPPED_FAIRGRAD.rglob("*") if path.is_file())
    print(f"{SHIPPED_FAIRGRAD.relative_to(ROOT)}: {total / 1024:.0f} KB")


if __name__ == "__main__":
    main()
