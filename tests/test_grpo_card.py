"""The card of a shipped GRPO- or FairGRPO-trained tiny FairMedGemma (fairmed_core.models.grpo_card): its numbers
are the stored run's, recomputed here independently from the shipped predictions and training record, and every
shipped card is the one the code writes today."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import f1_score

from fairmed_core.files import ASSETS, LEARNABLE_START
from fairmed_core.models.grpo_card import grpo_model_card_markdown

SHIPPED = sorted(folder for folder in (ASSETS / "models").iterdir() if (folder / "training" / "config.json").is_file())


def _source_mean_f1(predictions: pd.DataFrame) -> float:
    """F1 of "yes" per source, then the mean over sources (FairMed's convention on yes/no data)."""
    return sum(f1_score(block["y_true"] == "yes", block["y_pred"] == "yes")
               for _, block in predictions.groupby("source")) / predictions["source"].nunique()


def _card_arguments(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    command = re.search(r"## Training\n`([^`]*)`", text).group(1)
    return dict(method=command.split()[2], command=command,
                start=ASSETS / "models" / re.search(r"The shipped tiny FairMedGemma \(`([^`]*)`", text).group(1),
                results_section=re.search(r'docs/RESULTS.md \("([^"]*)"\)', text).group(1))


def test_the_learnable_start_ships_its_grpo_and_fairgrpo_descendants():
    assert {f"{LEARNABLE_START.name}-grpo", f"{LEARNABLE_START.name}-fairgrpo"} <= {f.name for f in SHIPPED}


@pytest.mark.parametrize("folder", SHIPPED, ids=[f.name for f in SHIPPED])
def test_a_shipped_card_is_what_the_code_writes_from_the_stored_run(folder):
    assert (folder / "README.md").read_text(encoding="utf-8") == grpo_model_card_markdown(folder,
                                                                                        **_card_arguments(folder))


@pytest.mark.parametrize("method", ["grpo", "fairgrpo"])
def test_the_card_states_test_and_held_out_f1_as_the_data_give_them(method):
    folder = ASSETS / "models" / f"{LEARNABLE_START.name}-{method}"
    text = grpo_model_card_markdown(folder, **_card_arguments(folder))
    mine = pd.read_csv(folder / "evaluation" / "predictions.csv", keep_default_na=False)
    start = pd.read_csv(LEARNABLE_START / "evaluation" / "predictions.csv", keep_default_na=False)
    row = next(line for line in text.splitlines() if line.startswith(f"| this model ({method}) |"))
    assert row.split(" | ")[1:3] == [f"{(mine['y_true'] == mine['y_pred']).mean():.3f}", f"{_source_mean_f1(mine):.3f}"]
    start_row = next(line for line in text.splitlines() if line.startswith("| SFT start ("))
    assert start_row.split(" | ")[2] == f"{_source_mean_f1(start):.3f}"
    # the held-out table's first row: step 0, the start's val F1 on the run's fixed sample (mean over sources)
    first = next(json.loads(line) for line in (folder / "training" / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line).get("kind") == "eval")
    per_source = [s["f1"] for s in first["summary"] if s["attribute"] == "mean over attributes"
                  and s["source"].startswith("synth_")]
    assert len(per_source) == 3
    assert f"| 0 | {first['accuracy']:.3f} | {sum(per_source) / 3:.3f} | 0.0% |" in text
