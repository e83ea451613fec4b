"""The tabular reader: types, missing-value handling, every bad input named by file and column, the encoding
pipeline feeding FairGrad and fairlearn, and (with the optional survset package) the SUPPORT2 sepsis cohort."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fairmed_core.errors import FairMedInputError
from fairmed_core.training.tabular import (
    MAX_ATTRIBUTE_GROUPS,
    MISSING_CATEGORY,
    TabularData,
    read_tabular,
    tabular_pipeline,
)

torch.set_num_threads(1)

CSV = """patient,age,lactate,ward,race,sex,died
p1,71,2.1,ICU,white,F,1
p2,54,,ward A,black,M,0
p3,63,4.0,,white,M,1
p4,80,1.2,ICU,,F,0
p5,45,0.9,ward A,asian,F,0
p6,67,3.3,ICU,black,M,1
"""


def _write(tmp_path: Path, text: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _read(path, **overrides) -> TabularData:
    arguments = {"label": "died", "attributes": ["race", "sex"], "categorical": ["ward"], "drop": ["patient"]}
    arguments.update(overrides)
    return read_tabular(path, **arguments)


# -- reading and types ----------------------------------------------------------------------------------------


def test_reads_types_label_and_attributes(tmp_path):
    path = _write(tmp_path, CSV)
    data = _read(path)
    assert data.feature_names == ("age", "lactate", "ward")
    assert data.numeric == ("age", "lactate") and data.categorical == ("ward",)
    assert data.X["age"].dtype == np.float64 and data.X["lactate"].dtype == np.float64
    assert data.y.tolist() == [1, 0, 1, 0, 0, 1] and data.y.dtype == np.int64
    assert data.positive_label == 1 and data.label == "died" and data.source == str(path)
    assert list(data.sensitive.columns) == ["race", "sex"] == list(data.attributes)
    assert data.sensitive["sex"].tolist() == ["F", "M", "M", "F", "F", "M"]
    assert data.n_rows == 6 and data.positive_rate == pytest.approx(0.5)
    # attributes and dropped columns are not features
    assert not {"race", "sex", "patient", "died"} & set(data.X.columns)
    with pytest.raises(FrozenInstanceError):
        data.label = "other"


def test_missing_values_are_handled_and_noted(tmp_path):
    data = _read(_write(tmp_path, CSV))
    # numeric: NaN kept for the pipeline to impute from the training rows
    assert math.isnan(data.X.loc[1, "lactate"])
    # categorical: its own category
    assert data.X.loc[2, "ward"] == MISSING_CATEGORY
    # attribute: the UNK group
    assert data.sensitive.loc[3, "race"] == "UNK"
    notes = " | ".join(data.notes)
    assert "'lactate': 1 missing" in notes and "median" in notes
    assert "'ward': 1 missing" in notes and "'missing'" in notes
    assert "'race': 1 missing values grouped as 'UNK'" in notes
    assert "fewer than" in notes  # the groups here are all tiny: said so


def test_strict_refuses_missing_attribute(tmp_path):
    path = _write(tmp_path, CSV)
    with pytest.raises(FairMedInputError) as caught:
        _read(path, strict=True)
    assert caught.value.column == "race" and caught.value.row == 5  # line 5 of the file (header is line 1)
    assert str(path) in str(caught.value)


def test_text_label_needs_positive_label_and_binarises(tmp_path):
    text = "x,grp,outcome\n1,a,dead\n2,b,alive\n3,a,alive\n4,b,dead\n"
    path = _write(tmp_path, text)
    with pytest.raises(FairMedInputError, match="positive outcome") as caught:
        read_tabular(path, label="outcome", attributes=["grp"])
    assert caught.value.column == "outcome"
    data = read_tabular(path, label="outcome", positive_label="dead", attributes=["grp"])
    assert data.y.tolist() == [1, 0, 0, 1] and data.positive_label == "dead"
    # a string positive label for a numeric column, and one-vs-rest for a multi-class label (with a note)
    frame = pd.DataFrame({"x": [1.0, 2, 3, 4], "grp": ["a", "b", "a", "b"], "stage": [1, 2, 3, 2]})
    data = read_tabular(frame, label="stage", positive_label="2", attributes=["grp"])
    assert data.y.tolist() == [0, 1, 0, 1]
    assert any("binarised" in note for note in data.notes)
    with pytest.raises(FairMedInputError, match="does not occur") as caught:
        read_tabular(frame, label="stage", positive_label=7, attributes=["grp"])
    assert caught.value.column == "stage"


def test_boolean_label_and_category_dtype_and_bool_feature():
    frame = pd.DataFrame({
        "flag": [True, False, True, False],
        "stage": pd.Categorical(["I", "II", "I", None]),
        "grp": ["a", "a", "b", "b"],
        "label": [True, False, False, True],
    })
    data = read_tabular(frame, label="label", attributes=["grp"])
    assert data.positive_label is True and data.y.tolist() == [1, 0, 0, 1]
    assert data.numeric == ("flag",) and data.categorical == ("stage",)
    assert data.X["flag"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert data.X["stage"].tolist() == ["I", "II", "I", MISSING_CATEGORY]
    assert data.source == "<DataFrame>"


def test_attribute_can_also_be_a_feature_and_attribute_bins():
    frame = pd.DataFrame({"age": [20.0, 49.9, 50, 64, 70, 88], "y": [0, 1, 0, 1, 0, 1]})
    data = read_tabular(frame, label="y", attributes=["age"], numeric=["age"],
                        attribute_bins={"age": [-math.inf, 50, 65, math.inf]})
    assert data.sensitive["age"].tolist() == ["<50", "<50", "50-65", "50-65", ">=65", ">=65"]
    assert data.feature_names == ("age",) and data.X["age"].tolist() == frame["age"].tolist()
    with pytest.raises(FairMedInputError, match="outside the bins") as caught:
        read_tabular(frame, label="y", attributes=["age"], numeric=["age"], attribute_bins={"age": [30, 65, 100]})
    assert caught.value.column == "age" and caught.value.row == 0


def test_numeric_attribute_codes_become_group_names():
    frame = pd.DataFrame({"x": [1.0, 2, 3, 4], "site": [1.0, 2.0, np.nan, 1.0], "y": [0, 1, 1, 0]})
    data = read_tabular(frame, label="y", attributes=["site"])
    assert data.sensitive["site"].tolist() == ["1", "2", "UNK", "1"]


def test_attribute_codes_keep_their_spelling_in_files(tmp_path):
    path = _write(tmp_path, "x,site,y\n1,01,0\n2,02,1\n3,01,1\n4,02,0\n")
    data = read_tabular(path, label="y", attributes=["site"])
    assert sorted(set(data.sensitive["site"])) == ["01", "02"]


def test_tsv_and_parquet(tmp_path):
    tsv = _write(tmp_path, CSV.replace(",", "\t"), "table.tsv")
    assert _read(tsv).n_rows == 6
    frame = pd.read_csv(_write(tmp_path, CSV))
    parquet = tmp_path / "table.parquet"
    frame.to_parquet(parquet)
    assert _read(parquet).feature_names == ("age", "lactate", "ward")


# -- bad input: every message names the file and the column ---------------------------------------------------


BAD_INPUTS = {
    "undeclared text feature": ("x,ward,grp,y\n1,ICU,a,0\n2,ward,b,1\n", {}, "ward", "not declared"),
    "number column with a stray word": (
        "x,lab,grp,y\n1,2.0,a,0\n2,n/a?,b,1\n", {}, "lab", "1 of 2 values are not numbers"),
    "declared numeric with a word": (
        "x,lab,grp,y\n1,2.0,a,0\n2,high,b,1\n", {"numeric": ["lab"]}, "lab", "not a number"),
    "infinite value": ("x,grp,y\n1,a,0\ninf,b,1\n", {}, "x", "infinite"),
    "empty feature": ("x,blank,grp,y\n1,,a,0\n2,,b,1\n", {}, "blank", "no values"),
    "label with one class": ("x,grp,y\n1,a,1\n2,b,1\n", {}, "y", "one class"),
    "label missing": ("x,grp,y\n1,a,1\n2,b,\n3,a,0\n", {}, "y", "label is missing"),
    "attribute with one group": ("x,grp,y\n1,a,0\n2,a,1\n", {}, "grp", "one group"),
    "attribute column absent": ("x,group,y\n1,a,0\n2,b,1\n", {}, "grp", "does not have"),
    "label column absent": ("x,grp,outcome\n1,a,0\n2,b,1\n", {}, "y", "does not have"),
    "label also an attribute": ("x,grp,y\n1,a,0\n2,b,1\n", {"attributes": ["grp", "y"]}, "y", "also named"),
    "declared both ways": ("x,grp,y\n1,a,0\n2,b,1\n", {"numeric": ["x"], "categorical": ["x"]}, "x", "both"),
    "dropped and used": ("x,grp,y\n1,a,0\n2,b,1\n", {"drop": ["x"], "numeric": ["x"]}, "x", "drop"),
    "no features left": ("x,grp,y\n1,a,0\n2,b,1\n", {"drop": ["x"]}, None, "no feature columns"),
    "duplicate columns": (None, {}, "x", "duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_and_column(tmp_path, case):
    text, overrides, column, message = BAD_INPUTS[case]
    arguments = {"label": "y", "attributes": ["grp"], **overrides}
    if text is None:
        source = pd.DataFrame([[1, 2, "a", 0], [3, 4, "b", 1]], columns=["x", "x", "grp", "y"])
        expected_source = "<DataFrame>"
    else:
        source = _write(tmp_path, text)
        expected_source = str(source)
    with pytest.raises(FairMedInputError, match=message) as caught:
        read_tabular(source, **arguments)
    error = caught.value
    assert error.source == expected_source and expected_source in str(error)
    assert error.column == column
    if column is not None:
        assert repr(column) in str(error)


def test_too_many_groups_in_an_attribute(tmp_path):
    n = MAX_ATTRIBUTE_GROUPS + 5
    rows = "\n".join(f"{i},{i},{i % 2}" for i in range(n))
    path = _write(tmp_path, "x,patient_id,y\n" + rows + "\n")
    with pytest.raises(FairMedInputError, match=f"{n} groups, more than the {MAX_ATTRIBUTE_GROUPS}") as caught:
        read_tabular(path, label="y", attributes=["patient_id"])
    assert caught.value.column == "patient_id" and str(path) in str(caught.value)
    assert "attribute_bins" in str(caught.value)


def test_bad_rows_are_file_lines(tmp_path):
    path = _write(tmp_path, "x,lab,grp,y\n1,2.0,a,0\n2,3.0,b,1\n3,oops,a,1\n")
    with pytest.raises(FairMedInputError) as caught:
        read_tabular(path, label="y", attributes=["grp"], numeric=["lab"])
    assert caught.value.row == 4 and "'oops'" in str(caught.value)


def test_file_problems(tmp_path):
    with pytest.raises(FairMedInputError, match="not found"):
        _read(tmp_path / "absent.csv")
    big = _write(tmp_path, CSV, "big.csv")
    with pytest.raises(FairMedInputError, match="limit"):
        _read(big, max_bytes=10)
    with pytest.raises(FairMedInputError, match="no rows"):
        _read(_write(tmp_path, "patient,age,lactate,ward,race,sex,died\n", "header_only.csv"))
    with pytest.raises(FairMedInputError, match="at least one sensitive attribute"):
        _read(_write(tmp_path, CSV), attributes=[])
    with pytest.raises(FairMedInputError, match="path or a pandas DataFrame"):
        read_tabular([1, 2, 3], label="y", attributes=["g"])


# -- the encoding pipeline --------------------------------------------------------------------------------------


def test_pipeline_imputes_scales_and_encodes(tmp_path):
    data = _read(_write(tmp_path, CSV))
    encoder = tabular_pipeline(data)
    Z = encoder.fit_transform(data.X)
    names = list(encoder.get_feature_names_out())
    # age, lactate, lactate's missing indicator, then ward's three categories (ICU, missing, ward A)
    assert Z.shape == (6, 6) and Z.dtype == np.float64 and np.isfinite(Z).all()
    assert any("missingindicator_lactate" in name for name in names)
    assert [name for name in names if name.startswith("categorical__")] == [
        "categorical__ward_ICU", "categorical__ward_missing", "categorical__ward_ward A"]
    # the imputed lactate is the median of the observed values (standardised around the column mean)
    lactate = data.X["lactate"].fillna(data.X["lactate"].median())
    assert Z[:, 1] == pytest.approx((lactate - lactate.mean()) / lactate.std(ddof=0))
    # unseen categories encode as zeros instead of failing
    unseen = data.X.iloc[:1].copy()
    unseen["ward"] = "new ward"
    assert encoder.transform(unseen)[0, 3:].tolist() == [0.0, 0.0, 0.0]


def _synthetic_clinic(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], size=n, p=[0.6, 0.4])
    severity = rng.normal(size=n) + 0.5 * (group == "b")
    lab = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    ward = rng.choice(["ICU", "ward"], size=n)
    logit = 1.5 * severity + 0.5 * np.nan_to_num(lab) + 0.7 * (ward == "ICU") + 0.8 * (group == "b")
    died = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"severity": severity, "lab": lab, "ward": ward, "group": group, "died": died})


def test_pipeline_feeds_fairgrad_and_fairlearn():
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    from fairmed_core.training.fairgrad import FairGradClassifier

    data = read_tabular(_synthetic_clinic(), label="died", attributes=["group"], categorical=["ward"])
    Z = tabular_pipeline(data).fit_transform(data.X)
    model = FairGradClassifier(epochs=15, objectives={"group": "equalized_odds"}, random_state=0)
    model.fit(Z, data.y, sensitive_features=data.sensitive)
    assert model.sensitive_groups_ == (("a", "b"),)
    assert roc_auc_score(data.y, model.predict_proba(Z)[:, 1]) > 0.7

    # a full sklearn pipeline under a fairlearn mitigator, taking the DataFrame directly
    pipeline = make_pipeline(tabular_pipeline(data), LogisticRegression(max_iter=500))
    mitigator = ThresholdOptimizer(estimator=pipeline, constraints="equalized_odds", predict_method="predict_proba")
    mitigator.fit(data.X, data.y, sensitive_features=data.sensitive["group"])
    predictions = mitigator.predict(data.X, sensitive_features=data.sensitive["group"], random_state=0)
    assert set(np.unique(predictions)) <= {0, 1}

    # the raw X with its NaNs is refused by the estimator with the column named, not fitted on
    with pytest.raises(FairMedInputError, match="NaN") as caught:
        FairGradClassifier(epochs=1).fit(data.X[list(data.numeric)], data.y, sensitive_features=data.sensitive)
    assert caught.value.column == "lab"


# -- SUPPORT2 sepsis (optional survset extra) -----------------------------------------------------------------


def test_support2_sepsis_cohort():
    pytest.importorskip("SurvSet", reason="the optional survset extra (requirements-extras.txt) is not installed")
    from fairmed_core.training.tabular import SUPPORT2_SEPSIS_CATEGORICAL, SUPPORT2_SEPSIS_NUMERIC, support2_sepsis

    data = support2_sepsis()
    assert data.n_rows == 3515  # the "ARF/MOSF w/Sepsis" disease group
    assert data.label == "death_180d" and data.positive_label == 1
    assert 0.40 < data.positive_rate < 0.50  # 44.6%
    assert data.attributes == ("race", "sex", "age_group")
    assert set(data.sensitive["race"]) == {"white", "black", "other"}
    assert set(data.sensitive["sex"]) == {"female", "male"}
    assert set(data.sensitive["age_group"]) == {"<50", "50-65", "65-75", ">=75"}
    assert data.sensitive["race"].value_counts().to_dict() == {"white": 2736, "black": 568, "other": 211}
    assert data.numeric == SUPPORT2_SEPSIS_NUMERIC and data.categorical == SUPPORT2_SEPSIS_CATEGORICAL
    assert not {"surv2m", "surv6m", "sfdm2", "dnr", "race", "sex"} & set(data.feature_names)
    assert any("'urine'" in note for note in data.notes)  # missing labs are listed
    Z = tabular_pipeline(data).fit_transform(data.X)
    assert Z.shape[0] == 3515 and np.isfinite(Z).all()


def test_support2_sepsis_longer_horizon_drops_censored():
    pytest.importorskip("SurvSet", reason="the optional survset extra (requirements-extras.txt) is not installed")
    from fairmed_core.training.tabular import support2_sepsis

    data = support2_sepsis(horizon_days=365)
    assert data.n_rows < 3515 and any("censored" in note for note in data.notes)
    with pytest.raises(FairMedInputError, match="horizon_days"):
        support2_sepsis(horizon_days=0)


def test_support2_sepsis_without_survset_says_how_to_install(monkeypatch):
    import builtins

    from fairmed_core.training.tabular import support2_sepsis

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "SurvSet" or name.startswith("SurvSet."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ImportError, match="requirements-extras.txt"):
        support2_sepsis()


def test_core_does_not_import_streamlit_or_survset():
    import subprocess
    import sys

    code = ("import sys; import fairmed_core.training.tabular; "
            "print(sorted(m for m in ('streamlit', 'SurvSet', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
