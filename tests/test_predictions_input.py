"""Bad predictions tables give a FairMedInputError naming the file, the column and the row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import audit, load_predictions, validate_predictions

COLUMNS = dict(label_col="label", pred_col="pred", sensitive=["sex", "age_group"])


def _good_frame(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "label": rng.integers(0, 2, n),
            "pred": rng.integers(0, 2, n),
            "score": rng.random(n).round(3),
            "sex": rng.choice(["F", "M"], n),
            "age_group": rng.choice(["01", "02"], n),
            "site": rng.choice(["a", "b"], n),
        }
    )


def _write_csv(tmp_path, frame: pd.DataFrame, name: str = "preds.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _error(path, **kwargs) -> FairMedInputError:
    with pytest.raises(FairMedInputError) as info:
        load_predictions(path, **{**COLUMNS, **kwargs})
    return info.value


def test_a_good_csv_loads_with_normalised_columns(tmp_path):
    frame = _good_frame()
    frame.loc[3, "sex"] = None
    path = _write_csv(tmp_path, frame)
    loaded = load_predictions(path, score_col="score", source_col="site", id_col="case_id", **COLUMNS)
    assert len(loaded) == len(frame)
    assert loaded.loc[3, "sex"] == "UNK"  # a missing attribute is a group, not an error
    assert set(loaded["age_group"]) == {"01", "02"}  # codes keep their spelling
    assert loaded["score"].dtype == float


def test_missing_column_lists_the_columns_that_exist(tmp_path):
    path = _write_csv(tmp_path, _good_frame())
    error = _error(path, score_col="probability")
    assert error.column == "probability" and error.source == str(path)
    text = str(error)
    assert "probability" in text and str(path) in text
    for present in ("label", "pred", "score", "sex", "age_group"):
        assert present in text


def test_non_numeric_score_names_the_row(tmp_path):
    frame = _good_frame().astype({"score": object})
    frame.loc[4, "score"] = "high"
    error = _error(_write_csv(tmp_path, frame), score_col="score")
    assert (error.column, error.row) == ("score", 6)  # data row 5 (0-based 4) is file line 6
    assert "'high' is not a number" in str(error) and "header line as row 1" in str(error)


def test_score_outside_unit_interval_names_the_row(tmp_path):
    frame = _good_frame()
    frame.loc[7, "score"] = 1.7
    error = _error(_write_csv(tmp_path, frame), score_col="score")
    assert (error.column, error.row) == ("score", 9)
    assert "outside [0, 1]" in str(error)


def test_missing_score_names_the_row(tmp_path):
    frame = _good_frame()
    frame.loc[2, "score"] = np.nan
    error = _error(_write_csv(tmp_path, frame), score_col="score")
    assert (error.column, error.row) == ("score", 4)


@pytest.mark.parametrize("column", ["label", "pred"])
def test_missing_label_or_prediction_names_the_row(tmp_path, column):
    frame = _good_frame().astype({column: object})
    frame.loc[1, column] = None
    error = _error(_write_csv(tmp_path, frame))
    assert (error.column, error.row) == (column, 3)
    assert "missing" in str(error)


def test_values_outside_the_declared_label_set(tmp_path):
    frame = _good_frame()
    frame.loc[5, "label"] = 2
    error = _error(_write_csv(tmp_path, frame), label_values=[0, 1])
    assert (error.column, error.row) == ("label", 7)
    assert "not in the label set {0, 1}" in str(error)
    frame = _good_frame()
    frame.loc[6, "pred"] = 3
    error = _error(_write_csv(tmp_path, frame), label_values=[0, 1])
    assert (error.column, error.row) == ("pred", 8)


def test_prediction_never_seen_among_labels(tmp_path):
    frame = pd.DataFrame(
        {"label": ["flu", "cold", "flu", "cold"], "pred": ["flu", "covid", "flu", "cold"], "sex": "F",
         "age_group": "A"}
    )  # fmt: skip
    error = _error(_write_csv(tmp_path, frame))
    assert (error.column, error.row) == ("pred", 3)
    assert "'covid' never appears among the true labels" in str(error)
    loaded = load_predictions(_write_csv(tmp_path, frame), label_values=["flu", "cold", "covid"], **COLUMNS)
    assert len(loaded) == 4


def test_binary_tables_may_predict_a_class_no_label_has():
    frame = pd.DataFrame({"label": [0, 0, 0], "pred": [0, 1, 0], "sex": "F", "age_group": "A"})
    validate_predictions(frame, source_name="t", **COLUMNS)


def test_numeric_labels_and_text_predictions_are_aligned():
    frame = pd.DataFrame({"label": [0, 1, 1.0], "pred": ["0", "1", " 1 "], "sex": "F", "age_group": "A"})
    out = validate_predictions(frame, source_name="t", **COLUMNS)
    assert list(out["pred"]) == [0, 1, 1] and list(out["label"]) == [0, 1, 1]


def test_zero_rows(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("label,pred,sex,age_group\n")
    error = _error(path)
    assert "no data rows" in str(error) and error.source == str(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert "empty" in str(_error(path))


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = _write_csv(tmp_path, _good_frame(2000))

    def must_not_read(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(pd, "read_csv", must_not_read)
    error = _error(path, max_bytes=1000)
    assert "over the" in str(error) and "limit" in str(error) and str(path) in str(error)


def test_random_binary_junk(tmp_path):
    path = tmp_path / "junk.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    error = _error(path)
    assert error.source == str(path)
    assert "binary" in str(error) or "not text" in str(error)


def test_png_renamed_to_csv(tmp_path):
    path = tmp_path / "scan.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    error = _error(path)
    assert "PNG image" in str(error) and str(path) in str(error)


def test_ragged_csv_is_a_clean_error(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text('label,pred,sex,age_group\n1,1,F,A\n0,0,M,A,extra,"unterminated\n')
    error = _error(path)
    assert error.row == 3 and "the row has 6 fields, the header 4" in str(error)


def test_parquet_by_suffix_and_by_magic_bytes(tmp_path):
    frame = _good_frame()
    by_suffix = tmp_path / "preds.parquet"
    frame.to_parquet(by_suffix)
    mislabelled = tmp_path / "preds_really_parquet.csv"
    frame.to_parquet(mislabelled)
    for path in (by_suffix, mislabelled):
        loaded = load_predictions(path, score_col="score", **COLUMNS)
        assert len(loaded) == len(frame)


def test_damaged_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 100)
    error = _error(path)
    assert "Parquet" in str(error) and error.source == str(path)
    fake = tmp_path / "text.parquet"
    fake.write_text("label,pred\n1,1\n")
    assert "no Parquet header" in str(_error(fake))


def test_missing_file(tmp_path):
    error = _error(tmp_path / "nope.csv")
    assert "not found" in str(error)


def test_duplicate_case_ids_name_the_row(tmp_path):
    frame = _good_frame()
    frame.loc[9, "case_id"] = "c2"
    error = _error(_write_csv(tmp_path, frame), id_col="case_id")
    assert (error.column, error.row) == ("case_id", 11)


def test_reserved_source_name(tmp_path):
    frame = _good_frame()
    frame.loc[0, "site"] = "ALL"
    error = _error(_write_csv(tmp_path, frame), source_col="site")
    assert (error.column, error.row) == ("site", 2)


def test_audit_validates_its_arguments():
    frame = _good_frame(60)
    with pytest.raises(FairMedInputError, match="columns present") as info:
        audit(frame, label_col="label", pred_col="pred", sensitive=["ethnicity"])
    assert info.value.column == "ethnicity"
    with pytest.raises(FairMedInputError, match="unknown metric"):
        audit(frame, metrics=["auc"], **COLUMNS)
    with pytest.raises(FairMedInputError, match="confidence"):
        audit(frame, confidence=95, **COLUMNS)
    with pytest.raises(FairMedInputError, match="correction"):
        audit(frame, correction="bonferroni", **COLUMNS)
    with pytest.raises(FairMedInputError, match="n_boot"):
        audit(frame, n_boot=-1, **COLUMNS)
    with pytest.raises(FairMedInputError, match="positive_label"):
        audit(frame, positive_label="sick", **COLUMNS)
    with pytest.raises(FairMedInputError, match="no data rows"):
        audit(frame.iloc[:0], **COLUMNS)
    with pytest.raises(FairMedInputError, match="two roles"):
        audit(frame, label_col="label", pred_col="label", sensitive=["sex"])


# --- binary or multi-class: an explicit decision, never a silent one -------------------------------------------


def _binary_csv(tmp_path, stray_label: str, *, n: int = 60, name: str = "stray.csv"):
    rows = [f"{i % 2},{(i // 2) % 2},{'FM'[i % 3 % 2]},{'01' if i % 4 else '02'}" for i in range(n)]
    rows.insert(n // 2, f"{stray_label},1,F,01")
    path = tmp_path / name
    path.write_text("label,pred,sex,age_group\n" + "\n".join(rows) + "\n")
    return path, n // 2 + 2  # the stray row's file row number


@pytest.mark.parametrize("stray", ["0.5", "2", "maybe", "2024-01-01", "1e30", str(2**63), "-1"])
def test_a_stray_label_in_a_binary_table_is_refused_naming_row_column_and_value(tmp_path, stray):
    path, row = _binary_csv(tmp_path, stray)
    error = _error(path)
    assert (error.column, error.row) == ("label", row)
    assert "breaks the binary pattern {0, 1}" in str(error) and "label_values" in str(error)
    shown = str(error).split("label ", 1)[1]
    assert stray.strip("-").split("e")[0].rstrip(".0") in shown  # the value as written, e.g. 0.5, 1e+30


@pytest.mark.parametrize("stray", ["inf", "-inf"])
def test_an_infinite_label_is_refused_not_an_overflow(tmp_path, stray):
    path, row = _binary_csv(tmp_path, stray)
    error = _error(path)
    assert (error.column, error.row) == ("label", row) and "not a finite number" in str(error)


def test_a_stray_yes_no_label_and_a_stray_prediction_are_refused(tmp_path):
    frame = pd.DataFrame({"label": ["yes", "no"] * 30, "pred": ["no", "yes", "yes"] * 20, "sex": "F",
                          "age_group": "A"})
    frame.loc[17, "label"] = "unsure"
    error = _error(_write_csv(tmp_path, frame))
    assert (error.column, error.row) == ("label", 19) and "'unsure'" in str(error) and "{no, yes}" in str(error)
    frame.loc[17, "label"] = "yes"
    frame.loc[40, "pred"] = "Ja"
    error = _error(_write_csv(tmp_path, frame))
    assert (error.column, error.row) == ("pred", 42) and "{no, yes}" in str(error)


def test_a_declared_label_set_keeps_a_rare_third_class_and_the_audit_honours_it(tmp_path):
    path, _ = _binary_csv(tmp_path, "2")
    frame = load_predictions(path, label_values=[0, 1, 2], **COLUMNS)
    assert sorted(set(frame["label"])) == [0, 1, 2]
    result = audit(frame, n_boot=0, **COLUMNS)  # validates the frame again, without label_values
    assert result.groups_frame()["n"].max() == len(frame)


def test_a_real_multiclass_table_stays_multiclass():
    frame = pd.DataFrame({"label": [0, 1, 2] * 20, "pred": [0, 1, 2, 2, 1, 0] * 10, "sex": "F", "age_group": "A"})
    out = validate_predictions(frame, source_name="t", **COLUMNS)
    assert sorted(set(out["label"])) == [0, 1, 2]


def test_format_failures_are_not_stray_values():
    frame = pd.DataFrame({"label": [0, 1] * 30, "pred": [0, 1] * 30, "sex": "F", "age_group": "A"})
    frame["pred"] = frame["pred"].astype(object)
    frame.loc[3, "pred"] = "(format failure)"
    validate_predictions(frame, source_name="t", **COLUMNS)


# --- malformed tables ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "says"), [("1,0,F", "a field is missing"), ("1,0,F,01,x", "an extra field")])
def test_a_row_with_a_missing_or_extra_field_is_refused_not_shifted(tmp_path, line, says):
    path = tmp_path / "ragged.csv"
    path.write_text("label,pred,sex,age_group\n0,0,M,01\n1,1,F,02\n" + line + "\n0,1,M,01\n")
    error = _error(path)
    assert error.row == 4 and says in str(error)


def test_an_extra_field_on_the_first_row_is_not_taken_for_an_index(tmp_path):
    path = tmp_path / "shifted.csv"
    path.write_text("label,pred,sex,age_group\n7,0,1,F,01\n1,1,F,02\n")
    error = _error(path)
    assert error.row == 2 and "extra field" in str(error)


def test_a_duplicate_header_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("label,pred,sex,age_group,label\n0,0,M,01,1\n1,1,F,02,0\n")
    error = _error(path)
    assert error.row == 1 and "'label' twice" in str(error)


def test_blank_lines_are_skipped_and_do_not_shift_row_numbers(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("label,pred,sex,age_group\n0,0,M,01\n\n1,1,F,02\n1,,F,02\n")
    error = _error(path)
    assert (error.column, error.row) == ("pred", 4)  # pandas' numbering: the blank line is not a row


def test_list_and_struct_parquet_columns_are_refused(tmp_path):
    frame = pd.DataFrame({"label": [0, 1, 0], "pred": [0, 1, 1], "sex": [["F"], ["M"], ["F"]],
                          "age_group": [{"a": 1}, {"a": 2}, {"a": 1}]})
    path = tmp_path / "nested.parquet"
    frame.to_parquet(path)
    error = _error(path)
    assert (error.column, error.row) == ("sex", 2) and "not a single value" in str(error)


def test_two_columns_with_a_roles_name_are_refused():
    frame = pd.DataFrame([[0, 1, 0, "F", "A"]], columns=["label", "pred", "label", "sex", "age_group"])
    with pytest.raises(FairMedInputError, match="two columns with this name"):
        validate_predictions(frame, source_name="t", **COLUMNS)


# --- bounded cost ----------------------------------------------------------------------------------------------


def test_an_attribute_with_too_many_groups_is_refused_before_any_pairwise_table():
    from fairmed_core.fairness._predictions import MAX_GROUPS_PER_ATTRIBUTE

    groups = MAX_GROUPS_PER_ATTRIBUTE + 1
    frame = pd.DataFrame({"label": [0, 1] * groups * 2, "pred": [1, 0] * groups * 2,
                          "sex": [f"g{i % groups}" for i in range(groups * 4)], "age_group": "A"})
    with pytest.raises(FairMedInputError) as caught:
        validate_predictions(frame, source_name="t", **COLUMNS)
    assert caught.value.column == "sex" and f"{groups:,} groups" in str(caught.value)
    assert f"at most {MAX_GROUPS_PER_ATTRIBUTE:,}" in str(caught.value)
    frame["sex"] = [f"g{i % MAX_GROUPS_PER_ATTRIBUTE}" for i in range(groups * 4)]
    validate_predictions(frame, source_name="t", **COLUMNS)  # exactly at the limit: accepted


def test_an_intersection_with_too_many_groups_is_refused_naming_its_attributes(tmp_path, capsys):
    """Each attribute is under the cap, their intersection is not (15 x 14 = 210 groups); 200 is accepted."""
    from fairmed_core.cli import main
    from fairmed_core.fairness._predictions import MAX_GROUPS_PER_ATTRIBUTE

    rows = 15 * 14 * 2
    frame = pd.DataFrame({"label": [0, 1] * (rows // 2), "pred": [1, 1] * (rows // 2),
                          "sex": [f"s{i % 15}" for i in range(rows)], "age_group": [f"a{i % 14}" for i in range(rows)],
                          "site": [f"x{i % 3}" for i in range(rows)]})
    with pytest.raises(FairMedInputError) as caught:
        audit(frame, **COLUMNS, intersect=True, n_boot=0)
    message = str(caught.value)
    assert "crossing sex x age_group makes 210 groups (15 x 14)" in message
    assert f"at most {MAX_GROUPS_PER_ATTRIBUTE:,}" in message and caught.value.column == "sex, age_group"
    all_three = r"crossing sex x age_group x site makes 630 groups \(15 x 14 x 3\)"
    with pytest.raises(FairMedInputError, match=all_three):
        audit(frame, label_col="label", pred_col="pred", sensitive=["sex", "age_group", "site"],
              intersect=True, n_boot=0)  # all three: 630 groups
    # The command line: one line and exit code 2.
    path = tmp_path / "predictions.csv"
    frame.to_csv(path, index=False)
    assert main(["audit", str(path), "--label-col", "label", "--pred-col", "pred", "--sensitive", "sex",
                 "--sensitive", "age_group", "--intersect", "--n-boot", "0"]) == 2
    assert "makes 210 groups" in capsys.readouterr().err
    frame["age_group"] = [f"a{i % 13}" for i in range(rows)]  # 15 x 13 = 195: under the cap
    audit(frame, **COLUMNS, intersect=True, n_boot=0)


def test_too_many_sources_are_refused():
    from fairmed_core.fairness._predictions import MAX_SOURCES

    frame = pd.DataFrame({"label": [0, 1] * (MAX_SOURCES + 1), "pred": [0, 1] * (MAX_SOURCES + 1), "sex": "F",
                          "age_group": "A", "site": [f"s{i // 2}" for i in range(2 * (MAX_SOURCES + 1))]})
    with pytest.raises(FairMedInputError, match=f"{MAX_SOURCES + 1:,} sources"):
        validate_predictions(frame, source_name="t", source_col="site", **COLUMNS)
