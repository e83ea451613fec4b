"""The audit plan: round trips through JSON and TOML, content hash, lock and deviations, and bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from fairmed_core.errors import FairMedInputError
from fairmed_core.report.plan import (
    MetricMargin,
    check_plan_against_run,
    lock_plan,
    plan_deviations,
    plan_from_dict,
    plan_from_run,
    plan_hash,
    plan_to_dict,
    read_lock,
    read_plan,
    write_plan,
)
from fairmed_core.runs.workspace import ASSETS

GRPO_RUN = ASSETS / "models" / "tiny-fairmedgemma-grpo" / "evaluation"


@pytest.fixture
def plan():
    return plan_from_run(GRPO_RUN, prepared_by="Dr A. Reviewer")


def test_plan_from_run_takes_the_runs_attributes_and_default_margins(plan):
    assert plan.attributes == ("sex", "age_group", "skin_tone")
    assert plan.model_name == "tiny-fairmedgemma-grpo"
    recall = plan.margin("recall")
    assert (recall.ratio_low, recall.ratio_high, recall.max_difference) == (0.8, 1.25, 0.10)
    fdr = plan.margin("fdr")  # an error rate: difference margin only
    assert fdr.ratio_low is None and fdr.max_difference == 0.10
    assert "auroc" not in plan.metric_names  # the run has no score column


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_plan_round_trips_and_hashes_the_same_from_json_and_toml(plan, tmp_path, suffix):
    plan = replace(plan, intended_use='triage "urgent" cases\nfor review — ünïcode')
    path = write_plan(plan, tmp_path / f"plan{suffix}")
    again = read_plan(path)
    assert again == plan
    assert plan_hash(again) == plan_hash(plan)


def test_hash_changes_with_any_field(plan):
    assert plan_hash(plan) != plan_hash(replace(plan, min_group_size=31))
    assert len(plan_hash(plan)) == 64


def test_write_refuses_an_existing_file(plan, tmp_path):
    path = write_plan(plan, tmp_path / "plan.json")
    with pytest.raises(FairMedInputError, match="already exists"):
        write_plan(plan, path)


def test_lock_records_the_hash_once_and_edits_become_deviations(plan, tmp_path):
    path = write_plan(plan, tmp_path / "plan.json")
    lock = lock_plan(path, now=0)
    assert lock.plan_sha256 == plan_hash(plan) and lock.locked_utc == "1970-01-01T00:00:00Z"
    edited = replace(plan, min_group_size=50,
                     metrics=(*plan.metrics, MetricMargin(metric="fpr", max_difference=0.05)))
    write_plan(edited, path, overwrite=True)
    assert lock_plan(path).plan_sha256 == plan_hash(plan)  # the lock is never rewritten
    deviations = {d.field: (d.locked, d.current) for d in plan_deviations(read_lock(path).plan, read_plan(path))}
    assert deviations["min_group_size"] == (30, 50)
    assert deviations["metrics[fpr].max_difference"] == (None, 0.05)
    assert not any(key.startswith("metrics[recall]") for key in deviations)
    assert plan_deviations(plan, plan) == ()


def test_plan_naming_a_missing_attribute_or_metric_is_refused_with_where(plan, tmp_path):
    bad = plan_to_dict(plan)
    bad["subgroups"][1]["attribute"] = "race"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(FairMedInputError, match=r"plan.json.*subgroups\[1\].attribute.*'race'"):
        check_plan_against_run(read_plan(path), GRPO_RUN, plan_source=str(path))
    scored = replace(plan, metrics=(MetricMargin(metric="auroc"),))
    with pytest.raises(FairMedInputError, match=r"metrics\[0\].metric.*'auroc'"):
        check_plan_against_run(scored, GRPO_RUN)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["metrics"][0].update(metric="sensitivity"), r"metrics\[0\].metric: unknown metric"),
        (lambda d: d["metrics"][0].update(ratio_low=1.1), r"metrics\[0\]: the ratio band"),
        (lambda d: d["metrics"][0].update(ratio_high=None), "both ratio_low and ratio_high"),
        (lambda d: d["metrics"][0].update(max_difference=-0.1), r"max_difference: must be a positive"),
        (lambda d: d.update(min_group_size=True), "min_group_size: expected int"),
        (lambda d: d.update(correction="bonferroni"), "unknown correction"),
        (lambda d: d.pop("intended_use"), "intended_use: missing"),
        (lambda d: d.update(colour="red"), "colour: unknown plan field"),
        (lambda d: d["subgroups"].append({"attribute": "sex"}), "listed twice"),
    ],
)
def test_bad_plan_fields_are_named(plan, change, message):
    data = plan_to_dict(plan)
    change(data)
    with pytest.raises(FairMedInputError, match=message):
        plan_from_dict(data, source="plan.json")


def test_unreadable_plan_file_names_the_file(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text("model_name = [unclosed")
    with pytest.raises(FairMedInputError, match="plan.toml"):
        read_plan(path)


def test_plan_from_a_run_without_attribute_columns_is_refused(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(GRPO_RUN, run)
    info = json.loads((run / "run.json").read_text())
    info["attributes"] = []
    (run / "run.json").write_text(json.dumps(info))
    (run / "predictions.csv").write_text("case_id,source,y_true,y_pred\nc1,s,yes,no\n")
    with pytest.raises(FairMedInputError, match="no sensitive attribute"):
        plan_from_run(run)
    assert Path(run / "predictions.csv").exists()
