"""A predictions table's columns cross the layers as one PredictionColumns value: it audits exactly what the
keywords audit, an audit hands it back to audit again, and naming the columns twice is an error, not a guess."""

from __future__ import annotations

import pandas as pd
import pytest

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import PredictionColumns, audit, load_predictions


def _table() -> pd.DataFrame:
    return pd.DataFrame({"truth": [0, 1, 1, 0, 1, 0, 0, 1] * 5, "answer": [0, 1, 0, 0, 1, 1, 0, 1] * 5,
                         "p": [0.2, 0.9, 0.4, 0.1, 0.8, 0.6, 0.3, 0.7] * 5, "site": ["a", "b"] * 20,
                         "sex": ["F", "F", "M", "M"] * 10})


def test_the_columns_value_audits_what_the_keywords_audit_and_comes_back_from_the_audit():
    columns = PredictionColumns("truth", "answer", ("sex",), score="p", source="site")
    by_value = audit(_table(), columns=columns, n_boot=50)
    by_keywords = audit(_table(), label_col="truth", pred_col="answer", sensitive=["sex"], score_col="p",
                        source_col="site", n_boot=50)
    pd.testing.assert_frame_equal(by_value.groups_frame(), by_keywords.groups_frame())
    assert by_value.settings.columns == columns
    assert set(by_value.groups_frame().metric) >= {"auroc", "ece"}  # the score column was passed on


def test_a_model_runs_columns_and_a_sensitive_attribute_given_as_text():
    columns = PredictionColumns.model_run(["sex"], score=True)
    assert (columns.label, columns.prediction, columns.source, columns.score) == ("y_true", "y_pred", "source",
                                                                                  "score")
    assert PredictionColumns("y", "p", "sex").sensitive == ("sex",)
    assert PredictionColumns("y", "p", ("sex",)).with_sensitive(["age"]).sensitive == ("age",)


def test_columns_named_twice_or_not_at_all_are_refused(tmp_path):
    columns = PredictionColumns("truth", "answer", ("sex",))
    with pytest.raises(FairMedInputError, match="would name them again"):
        audit(_table(), columns=columns, label_col="truth")
    with pytest.raises(FairMedInputError, match="name the label, prediction and sensitive columns"):
        audit(_table(), sensitive=["sex"])
    with pytest.raises(FairMedInputError, match="label column must be named"):
        PredictionColumns("", "answer")
    path = tmp_path / "predictions.csv"
    _table().to_csv(path, index=False)
    frame = load_predictions(path, columns=columns)
    assert list(frame["sex"].cat.categories) == ["F", "M"]
