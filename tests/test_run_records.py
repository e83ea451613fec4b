"""Run records cross boundaries as typed values that keep reading the files already written: the shipped models'
``run.json`` files load as :class:`EvaluationRecord` without losing a key, a record survives its JSON form, and a
broken or incomplete ``run.json`` is an error naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from fairmed_core.errors import FairMedInputError
from fairmed_core.runs.eval_store import EvaluationRecord, list_evaluations, read_evaluation
from fairmed_core.runs.workspace import Workspace, shipped_model_dirs


def _shipped_runs():
    return [model / "evaluation" for model in shipped_model_dirs() if (model / "evaluation" / "run.json").is_file()]


def test_the_shipped_evaluations_load_as_typed_records_without_losing_a_key():
    shipped = _shipped_runs()
    assert len(shipped) >= 3  # the tiny model and its GRPO- and FairGRPO-trained versions
    for folder in shipped:
        written = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        record = read_evaluation(folder).record
        assert isinstance(record, EvaluationRecord) and record.kind == "evaluation"
        assert isinstance(record.attributes, tuple) and record.attributes == tuple(written["attributes"])
        assert 0.0 <= record.accuracy <= 1.0 and record.n_cases == written["n_cases"] > 0
        again = record.to_json()
        assert {k: again[k] for k in written} == written, folder  # every key the file holds, read back as written
        assert EvaluationRecord.from_json(again) == record


def test_the_run_pickers_list_the_shipped_runs_with_their_typed_record(tmp_path):
    runs = list_evaluations(Workspace(tmp_path), shipped=True)
    names = {run.name for run in runs}
    assert {"shipped/tiny-fairmedgemma", "shipped/tiny-fairmedgemma-fairgrpo"} <= names
    run = next(r for r in runs if r.name == "shipped/tiny-fairmedgemma")
    assert run.label().startswith("shipped/tiny-fairmedgemma: tiny-fairmedgemma on synth-default [test], 2400 cases")


def test_a_record_written_by_a_newer_fairmed_loads_and_an_incomplete_one_is_refused(tmp_path):
    folder = tmp_path / "runs" / "broken"
    shutil.copytree(_shipped_runs()[0], folder)
    data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    (folder / "run.json").write_text(json.dumps({**data, "written_by_a_later_version": 1}), encoding="utf-8")
    assert read_evaluation(folder).record.model == data["model"]  # a key this FairMed does not know is ignored
    del data["n_cases"]
    (folder / "run.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(FairMedInputError, match="n_cases") as error:
        read_evaluation(folder)
    assert error.value.source == str(folder / "run.json")
    (folder / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FairMedInputError, match="not a readable JSON object"):
        read_evaluation(folder)
    assert list_evaluations(Workspace(tmp_path)) == []  # an unreadable run is skipped by the pickers
