"""Readers and the case schema: the JSONL contract, user-named CSV manifests, group keys, and clear input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairmed_core.data import (
    UNKNOWN,
    SynthConfig,
    age_group,
    case_from_record,
    generate,
    parse_demo,
    read_csv_manifest,
    read_manifest,
    render,
    write_dataset,
)
from fairmed_core.data.schema import canonical_label
from fairmed_core.errors import FairMedInputError

CONFIG = SynthConfig(n=60, missing_demographics_fraction=0.2)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cases = generate(CONFIG)
    manifest = write_dataset(cases, tmp_path_factory.mktemp("synth") / "bench", config=CONFIG)
    return cases, manifest


# ------------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("age", "group"),
    [(0, "A1"), (25, "A1"), (25.5, "A2"), (26, "A2"), (50, "A2"), (51, "A3"), (75, "A3"), (76, "A4"), (101, "A4"),
     ("68", "A3"), ("068Y", "A3"), ("006M", "A1"), ("A4", "A4"), ("60-70", "A3"), ("40-60", UNKNOWN),
     (None, UNKNOWN), (float("nan"), UNKNOWN), ("", UNKNOWN), ("old", UNKNOWN), (-3, UNKNOWN), (True, UNKNOWN)],
)
def test_age_group_boundaries_and_spellings(age, group):
    assert age_group(age) == group


def test_parse_demo_reads_generic_key_value_pairs():
    assert parse_demo("sex: Female, age: 68") == {"sex": "F", "age_group": "A3"}
    assert parse_demo("Gender: male, Age: 30, Skin Tone: dark, race: Black, African American") == {
        "sex": "M", "age_group": "A2", "skin_tone": "dark", "race": "Black, African American"}
    assert parse_demo("sex: other, age: unknown, site: ") == {"sex": UNKNOWN, "age_group": UNKNOWN, "site": UNKNOWN}


@pytest.mark.parametrize("demo", [None, "", "   ", float("nan")])
def test_missing_demo_puts_every_attribute_in_the_unknown_group(demo):
    assert parse_demo(demo) == {"sex": UNKNOWN, "age_group": UNKNOWN}


def test_binary_answers_are_normalised_to_yes_no():
    assert [canonical_label(v) for v in ("Yes", " no ", True, 0, "1.0", "positive")] == [
        "yes", "no", "yes", "no", "yes", "yes"]
    assert canonical_label("B") == "B" and canonical_label("") is None


# ----------------------------------------------------------------------------------------- JSONL manifest


def test_written_benchmark_reads_back_with_identical_images_and_attributes(written):
    cases, manifest = written
    dataset = read_manifest(manifest)
    assert dataset.name == "bench"
    assert dataset.attributes == ("sex", "age_group", "skin_tone")
    assert dataset.label_values == ("no", "yes") and dataset.positive_label == "yes"
    assert list(dataset.cases.columns[:10]) == [
        "case_id", "problem", "image_path", "answer", "demo", "dataset", "split", "sex", "age_group", "skin_tone"]
    rows = dataset.cases.set_index("case_id")
    for case in cases:
        row = rows.loc[case.case_id]
        assert np.array_equal(np.asarray(dataset.load_image(case.case_id)), render(case))
        assert Path(row["image_path"]).is_absolute()
        assert (row["answer"], row["dataset"], row["split"]) == (case.answer, case.source, case.split)
        expected = (UNKNOWN, UNKNOWN, UNKNOWN) if case.demo_missing else (
            case.sex, case.age_group, case.skin_tone or UNKNOWN)
        assert (row["sex"], row["age_group"], row["skin_tone"]) == expected
    assert (dataset.cases["sex"] == UNKNOWN).any()  # the missing-demographics knob reaches the reader


def test_loaded_rows_rebuild_the_synthetic_cases(written):
    cases, manifest = written
    dataset = read_manifest(manifest)
    rebuilt = [case_from_record(row) for row in dataset.cases.to_dict(orient="records")]
    assert rebuilt == cases


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _image(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(path)
    return path.name


def _case(image: str = "img/a.png", **fields) -> str:
    record = {"problem": "<image> Is there a finding? Answer yes or no.", "images": [image], "answer": "yes",
              "demo": "sex: Female, age: 68", "dataset": "site_a"}
    record.update(fields)
    return json.dumps({k: v for k, v in record.items() if v is not None})


def test_contract_defaults_for_ids_splits_sources_and_extra_fields(tmp_path):
    _image(tmp_path / "img" / "a.png")
    manifest = _write_lines(tmp_path / "train.jsonl", [
        _case(), "", _case(dataset=None, demo=None, answer="No", site="north"),
    ])
    dataset = read_manifest(manifest)
    cases = dataset.cases
    assert list(cases["case_id"]) == ["line1", "line3"]  # blank lines are skipped, ids are line numbers
    assert list(cases["split"]) == ["train", "train"]  # split from the file's name
    assert list(cases["dataset"]) == ["site_a", "train"]
    assert list(cases["answer"]) == ["yes", "no"]
    assert list(cases["sex"]) == ["F", UNKNOWN]
    assert cases["site"].isna().tolist() == [True, False] and cases["site"].iat[1] == "north"


def test_non_binary_answers_have_no_positive_label(tmp_path):
    _image(tmp_path / "img" / "a.png")
    dataset = read_manifest(_write_lines(tmp_path / "m.jsonl", [_case(answer="A"), _case(answer="B")]))
    assert dataset.label_values == ("A", "B") and dataset.positive_label is None


def test_malformed_json_line_names_its_line_number(tmp_path):
    _image(tmp_path / "img" / "a.png")
    manifest = _write_lines(tmp_path / "m.jsonl", [_case(), '{"problem": "x", "images": [', _case()])
    with pytest.raises(FairMedInputError) as error:
        read_manifest(manifest)
    assert error.value.row == 2 and error.value.source == str(manifest)
    assert "row 2" in str(error.value)


def test_missing_image_file_names_line_and_field(tmp_path):
    _image(tmp_path / "img" / "a.png")
    manifest = _write_lines(tmp_path / "m.jsonl", [_case(), _case(image="img/missing.png")])
    with pytest.raises(FairMedInputError) as error:
        read_manifest(manifest)
    assert (error.value.row, error.value.column) == (2, "images")
    assert "missing.png" in str(error.value)


@pytest.mark.parametrize("field", ["problem", "images", "answer"])
def test_missing_required_field_names_it(tmp_path, field):
    _image(tmp_path / "img" / "a.png")
    manifest = _write_lines(tmp_path / "m.jsonl", [_case(**{field: None})])
    with pytest.raises(FairMedInputError) as error:
        read_manifest(manifest)
    assert (error.value.row, error.value.column) == (1, field)


def test_duplicate_ids_and_unknown_splits_are_refused(tmp_path):
    _image(tmp_path / "img" / "a.png")
    with pytest.raises(FairMedInputError, match="duplicate"):
        read_manifest(_write_lines(tmp_path / "d.jsonl", [_case(id="x"), _case(id="x")]))
    with pytest.raises(FairMedInputError, match="split") as error:
        read_manifest(_write_lines(tmp_path / "s.jsonl", [_case(split="holdout")]))
    assert error.value.row == 1
    with pytest.raises(FairMedInputError, match="not found"):
        read_manifest(tmp_path / "absent.jsonl")


def test_load_image_of_unknown_case_is_an_input_error(written):
    with pytest.raises(FairMedInputError):
        read_manifest(written[1]).load_image("no-such-case")


# ------------------------------------------------------------------------------------------- CSV manifest


def _csv_fixture(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    for name in ("p1.png", "p2.png", "p3.png"):
        _image(images / name)
    table = pd.DataFrame({
        "Image Index": ["p1.png", "p2.png", "p3.png"],
        "Finding Label": ["1", "0", "1.0"],
        "Patient Gender": ["F", "M", ""],
        "Patient Age": ["68", "23", "80"],
        "Skin Tone": ["dark", "", "light"],
        "Hospital": ["north", "south", "north"],
        "Fold": ["train", "validation", "test"],
        "Accession": ["a1", "a2", "a3"],
        "Notes": ["x", "y", "z"],
    })
    csv = tmp_path / "labels.csv"
    table.to_csv(csv, index=False)
    return csv, images


def test_csv_manifest_with_user_named_columns(tmp_path):
    csv, images = _csv_fixture(tmp_path)
    dataset = read_csv_manifest(
        csv, image_root=images, image_col="Image Index", label_col="Finding Label",
        attribute_cols=["Patient Gender", "Skin Tone"], age_col="Patient Age", source_col="Hospital",
        id_col="Accession", split_col="Fold", question="Is there a nodule?",
    )
    cases = dataset.cases
    assert dataset.attributes == ("sex", "age_group", "skin_tone")
    assert dataset.positive_label == "yes"
    assert list(cases["case_id"]) == ["a1", "a2", "a3"]
    assert list(cases["answer"]) == ["yes", "no", "yes"]
    assert list(cases["sex"]) == ["F", "M", UNKNOWN]
    assert list(cases["age_group"]) == ["A3", "A1", "A4"]
    assert list(cases["skin_tone"]) == ["dark", UNKNOWN, "light"]
    assert list(cases["dataset"]) == ["north", "south", "north"]
    assert list(cases["split"]) == ["train", "val", "test"]
    assert cases["problem"].iat[0] == "<image> Is there a nodule?"
    assert cases["demo"].iat[0] == "sex: Female, age: 68, skin tone: dark"
    assert parse_demo(cases["demo"].iat[0]) == {"sex": "F", "age_group": "A3", "skin_tone": "dark"}
    assert list(cases["Notes"]) == ["x", "y", "z"]  # other columns are kept
    assert dataset.load_image("a2").size == (8, 8)


def test_csv_defaults_without_optional_columns(tmp_path):
    csv, images = _csv_fixture(tmp_path)
    dataset = read_csv_manifest(csv, image_root=images, image_col="Image Index", label_col="Finding Label",
                                attribute_cols=["Skin Tone"])
    assert dataset.attributes == ("skin_tone",)
    assert list(dataset.cases["sex"]) == [UNKNOWN] * 3  # the columns exist, filled with UNK
    assert list(dataset.cases["case_id"]) == ["row2", "row3", "row4"]
    assert set(dataset.cases["split"]) == {"test"} and set(dataset.cases["dataset"]) == {"labels"}


def test_csv_missing_column_is_named(tmp_path):
    csv, images = _csv_fixture(tmp_path)
    with pytest.raises(FairMedInputError) as error:
        read_csv_manifest(csv, image_root=images, image_col="Image Index", label_col="Diagnosis",
                          attribute_cols=["Patient Gender"])
    assert error.value.column == "Diagnosis" and "Image Index" in str(error.value)


def test_csv_missing_image_names_its_line(tmp_path):
    csv, images = _csv_fixture(tmp_path)
    (images / "p2.png").unlink()
    with pytest.raises(FairMedInputError) as error:
        read_csv_manifest(csv, image_root=images, image_col="Image Index", label_col="Finding Label",
                          attribute_cols=[])
    assert (error.value.row, error.value.column) == (3, "Image Index")  # header is line 1


def test_csv_empty_label_names_its_line(tmp_path):
    csv, images = _csv_fixture(tmp_path)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.loc[2, "Finding Label"] = ""
    table.to_csv(csv, index=False)
    with pytest.raises(FairMedInputError) as error:
        read_csv_manifest(csv, image_root=images, image_col="Image Index", label_col="Finding Label",
                          attribute_cols=[])
    assert (error.value.row, error.value.column) == (4, "Finding Label")


@pytest.mark.parametrize(("row", "says"), [("p2.png,0,M", "a field is missing"), ("p2.png,0,M,23,x", "extra field")])
def test_csv_manifest_rows_with_a_missing_or_extra_field_name_their_row(tmp_path, row, says):
    images = tmp_path / "images"
    for name in ("p1.png", "p2.png"):
        _image(images / name)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,sex,age\np1.png,1,F,68\n" + row + "\n")
    with pytest.raises(FairMedInputError) as caught:
        read_csv_manifest(csv, image_root=images, image_col="path", label_col="label", attribute_cols=["sex"],
                          age_col="age")
    assert caught.value.row == 3 and says in str(caught.value)
