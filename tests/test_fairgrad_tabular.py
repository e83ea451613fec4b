"""FairGrad on a user's own table: a CSV becomes an audited run of kind "fairgrad-tabular", from Python and from
``fairmed train fairgrad-tabular``; bad tables and bad choices are errors naming the file and column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fairmed_core.cli import main
from fairmed_core.errors import FairMedInputError
from fairmed_core.jobs.fairgrad_tabular import FairGradTabularConfig, run_fairgrad_tabular
from fairmed_core.runs.eval_store import list_evaluations
from fairmed_core.runs.fairgrad_report import compare_runs, training_history
from fairmed_core.runs.workspace import Workspace

torch.set_num_threads(1)

FAST = dict(epochs=8, warmup_epochs=2, batch_size=64, learning_rate=3e-2)


def clinic_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Synthetic admissions: the outcome depends on the labs and, deliberately, on race and sex beyond them."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice(["white", "black", "asian"], n, p=[0.5, 0.3, 0.2])
    age = rng.normal(60, 12, n).round()
    lactate = rng.gamma(2.0, 1.0, n).round(2)
    ward = rng.choice(["icu", "medical", "surgical"], n)
    logit = 0.05 * (age - 60) + 0.8 * (lactate - 2) + 1.2 * (race == "black") - 0.8 * (sex == "F") - 0.3
    died = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "died", "survived")
    frame = pd.DataFrame({"patient_id": [f"P{i:04d}" for i in range(n)], "age": age, "lactate": lactate,
                          "ward": ward, "sex": sex, "race": race, "outcome": died})
    frame.loc[rng.choice(n, 15, replace=False), "lactate"] = np.nan  # gaps the pipeline imputes
    return frame


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "clinic.csv"
    clinic_table().to_csv(path, index=False)
    return path


def _config(**changes) -> FairGradTabularConfig:
    values = dict(label="outcome", positive_label="died", attributes=("sex", "race"), categorical=("ward",),
                  drop=("patient_id",), objectives={"race": "equal_opportunity"}, **FAST)
    values.update(changes)
    return FairGradTabularConfig(**values)


@pytest.fixture(scope="module")
def workspace(table, tmp_path_factory):
    """A workspace with an ERM and a FairGrad run on the clinic table."""
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    for method in ("erm", "fairgrad"):
        run_fairgrad_tabular(table, ws.run_dir(f"tab-{method}"), _config(method=method), n_boot=50)
    return ws


def test_runs_are_listed_with_their_kind_and_a_per_group_audit(workspace, table):
    runs = {run.name: run for run in list_evaluations(workspace)}
    assert set(runs) == {"tab-erm", "tab-fairgrad"}
    for name, run in runs.items():
        info = run.record.to_json()
        assert info["kind"] == "fairgrad-tabular" and info["dataset"] == "clinic"
        assert info["label"] == "outcome" and info["label_positive_value"] == "died"
        assert info["n_train"] + info["n_test"] == 400 and info["n_cases"] == info["n_test"] == 80
        assert info["attributes"] == ["sex", "race"] and 0.5 < info["auroc"] <= 1.0
        assert any("lactate" in note for note in info["notes"])  # the imputed gaps are reported
        assert info["features"] == {"numeric": ["age", "lactate"], "categorical": ["ward"]}
        predictions = pd.read_csv(run.predictions_path, keep_default_na=False)
        assert list(predictions.columns) == ["case_id", "source", "split", "sex", "race", "y_true", "y_pred",
                                             "score", "model"]
        assert set(predictions["source"]) == {"clinic"} and set(predictions["y_true"]) == {"yes", "no"}
        # y_true is "yes" exactly where the file's outcome is "died" (case ids are file lines)
        raw = pd.read_csv(table)
        lines = predictions["case_id"].str.removeprefix("row").astype(int) - 2
        assert ((raw["outcome"].iloc[lines] == "died").to_numpy() == (predictions["y_true"] == "yes")).all()
        groups = pd.read_csv(run.path / "audit" / "groups.csv", keep_default_na=False)
        assert {"sex", "race"} <= set(groups["attribute"])
        assert {"F", "M", "white", "black", "asian"} <= set(groups["group"].astype(str))
    fairgrad = runs["tab-fairgrad"].record.training
    assert fairgrad["method"] == "fairgrad"
    assert fairgrad["objectives"] == {"sex": "equalized_odds", "race": "equal_opportunity"}


def test_the_comparison_handles_a_single_source_run(workspace):
    runs = list_evaluations(workspace)
    comparison = compare_runs(runs, ["sex", "race"])
    assert set(comparison["source"]) == {"clinic"} and set(comparison["method"]) == {"erm", "fairgrad"}
    assert len(comparison) == 4 and comparison["auroc"].between(0.5, 1).all()
    history = training_history(next(run for run in runs if run.name == "tab-fairgrad"))
    assert len(history) == FAST["epochs"] and set(history["source"]) == {"clinic"}
    assert {"fairness_sex", "fairness_race", "conflicting_pairs"} <= set(history.columns)


def test_the_same_seed_gives_the_same_split_and_scores(table, tmp_path):
    calls = []
    first = run_fairgrad_tabular(table, tmp_path / "a", _config(method="erm"), n_boot=20,
                                 progress=lambda done, total: calls.append((done, total)))
    epochs = FAST["epochs"]
    assert calls == [(done, epochs) for done in range(epochs + 1)]  # read and split, then every epoch
    second = run_fairgrad_tabular(table, tmp_path / "b", _config(method="erm"), n_boot=20)
    a, b = (pd.read_csv(run.predictions_path) for run in (first, second))
    assert a["case_id"].tolist() == b["case_id"].tolist()
    np.testing.assert_allclose(a["score"], b["score"])


def test_a_label_with_one_class_is_refused(tmp_path):
    path = tmp_path / "one.csv"
    clinic_table().assign(outcome="died").to_csv(path, index=False)
    with pytest.raises(FairMedInputError, match="one class") as caught:
        run_fairgrad_tabular(path, tmp_path / "run", _config(), n_boot=20)
    assert caught.value.column == "outcome" and "one.csv" in str(caught.value)
    assert not (tmp_path / "run" / "run.json").exists()


def test_an_undeclared_text_feature_is_refused_naming_it(table, tmp_path):
    with pytest.raises(FairMedInputError, match="text and its type is not declared") as caught:
        run_fairgrad_tabular(table, tmp_path / "run", _config(categorical=None), n_boot=20)
    assert caught.value.column == "ward"


def test_an_attribute_with_one_group_is_refused(tmp_path):
    path = tmp_path / "men.csv"
    clinic_table().assign(sex="M").to_csv(path, index=False)
    with pytest.raises(FairMedInputError, match="one group") as caught:
        run_fairgrad_tabular(path, tmp_path / "run", _config(), n_boot=20)
    assert caught.value.column == "sex"


def test_bad_settings_are_refused_before_reading():
    with pytest.raises(FairMedInputError, match="method must be one of"):
        _config(method="dro")
    with pytest.raises(FairMedInputError, match="unknown fairness objective"):
        _config(objectives={"race": "parity"})
    with pytest.raises(FairMedInputError, match="not among the attributes"):
        _config(objectives={"age": "equalized_odds"})
    with pytest.raises(FairMedInputError, match="at least one sensitive attribute"):
        _config(attributes=(), objectives={})


def test_the_cli_trains_and_stores_a_run(table, tmp_path, capsys):
    workspace = Workspace(tmp_path / "ws")
    out = workspace.run_dir("cli-penalty")
    assert main(["train", "fairgrad-tabular", "--table", str(table), "--label", "outcome", "--positive-label",
                 "died", "--attribute", "sex", "--attribute", "race", "--objective", "race=equal_opportunity",
                 "--categorical", "ward", "--drop", "patient_id", "--method", "penalty", "--out", str(out),
                 "--epochs", "4", "--warmup-epochs", "1", "--penalty-weight", "0.5", "--n-boot", "20"]) == 0
    assert "80 test rows" in capsys.readouterr().out
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "fairgrad-tabular" and info["training"]["penalty_weight"] == 0.5
    assert info["training"]["objectives"] == {"sex": "equalized_odds", "race": "equal_opportunity"}
    assert [run.name for run in list_evaluations(workspace)] == ["cli-penalty"]


def test_the_cli_names_a_missing_column(table, tmp_path, capsys):
    code = main(["train", "fairgrad-tabular", "--table", str(table), "--label", "outcome", "--positive-label",
                 "died", "--attribute", "ethnicity", "--categorical", "ward", "--drop", "patient_id",
                 "--method", "erm", "--out", str(tmp_path / "run"), "--epochs", "1", "--n-boot", "20"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ethnicity" in err and "clinic.csv" in err and "Traceback" not in err
    assert main(["train", "fairgrad-tabular", "--table", str(table), "--label", "outcome", "--attribute", "sex",
                 "--objective", "sex=fastest", "--method", "erm", "--out", str(tmp_path / "run2")]) == 2
    assert "fastest" in capsys.readouterr().err


def test_the_audit_page_audits_a_tabular_run_by_its_own_attributes(workspace, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO_ROOT

    monkeypatch.setenv("FAIRMED_WORKSPACE", str(workspace.root))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
    at.run()
    at.session_state["audit_preselect_run"] = "tab-fairgrad"
    at.switch_page("pages/fairness_audit.py").run()
    at.radio(key="audit_source_kind").set_value("A saved evaluation run").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # race is the table's own attribute, not one of the benchmark's: it must be offered, not dropped.
    options = [o for box in at.multiselect for o in box.options]
    assert "race" in options, options
