"""Format failures: scored by an explicit, recorded choice, counted per group, and never a crash."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import FORMAT_FAILURE, audit
from tests.conftest import link_case_images

FAIL = FORMAT_FAILURE


def _metric(result, metric, *, attribute="overall", group="ALL", source="ALL"):
    frame = result.groups_frame()
    row = frame[(frame["source"] == source) & (frame["attribute"] == attribute) & (frame["group"] == group)
                & (frame["metric"] == metric)]
    assert len(row) == 1
    return float(row["estimate"].iloc[0])


def _binary_table(seed=0, n=300):
    rng = np.random.default_rng(seed)
    truth = rng.choice(["no", "yes"], size=n, p=[0.6, 0.4])
    predicted = np.where(rng.random(n) < 0.8, truth, np.where(truth == "yes", "no", "yes")).astype(object)
    predicted[rng.random(n) < 0.15] = FAIL
    return pd.DataFrame({"y": truth, "y_hat": predicted, "sex": rng.choice(["M", "F"], size=n)})


def _multiclass_table(seed=0, n=400):
    rng = np.random.default_rng(seed)
    classes = np.array(["benign", "irregular", "nevus"])
    truth = rng.choice(classes, size=n)
    predicted = np.where(rng.random(n) < 0.7, truth, rng.choice(classes, size=n)).astype(object)
    predicted[rng.random(n) < 0.1] = FAIL
    return pd.DataFrame({"y": truth, "y_hat": predicted, "sex": rng.choice(["M", "F", None], size=n)})


KW = dict(label_col="y", pred_col="y_hat", sensitive=["sex"], n_boot=0)


def test_multiclass_failures_count_against_the_true_class_and_are_no_class_of_their_own():
    frame = _multiclass_table()
    result = audit(frame, **KW)  # used to raise "prediction '(format failure)' never appears among the labels"
    real = ["benign", "irregular", "nevus"]
    y, y_hat = frame["y"].tolist(), frame["y_hat"].tolist()
    # scikit-learn with the real classes as labels= scores a failure as a miss of its true class only.
    assert _metric(result, "recall") == pytest.approx(recall_score(y, y_hat, labels=real, average="macro"))
    assert _metric(result, "precision") == pytest.approx(precision_score(y, y_hat, labels=real, average="macro"))
    assert _metric(result, "f1") == pytest.approx(f1_score(y, y_hat, labels=real, average="macro"))
    assert result.settings.format_failures == "wrong"
    assert FAIL not in result.settings.classes
    # "other_label" has no meaning with three labels: it scores as "wrong".
    other = audit(frame, format_failures="other_label", **KW)
    assert _metric(other, "f1") == pytest.approx(_metric(result, "f1"))


def test_binary_wrong_is_a_missed_positive_and_never_a_false_alarm():
    frame = _binary_table()
    failed = frame["y_hat"] == FAIL
    as_no = audit(frame.assign(y_hat=frame["y_hat"].where(~failed, "no")), **KW)
    wrong = audit(frame, **KW)
    for metric in ("recall", "fpr", "fdr", "precision", "selection_rate"):
        assert _metric(wrong, metric) == pytest.approx(_metric(as_no, metric)), metric
    assert wrong.settings.positive_label == "yes" and wrong.settings.task == "binary"


def test_binary_other_label_is_the_old_scoring_and_abstain_leaves_failures_out():
    frame = _binary_table(seed=1)
    failed = frame["y_hat"] == FAIL
    flipped = frame.assign(y_hat=np.where(failed, np.where(frame["y"] == "yes", "no", "yes"), frame["y_hat"]))
    other = audit(frame, format_failures="other_label", **KW)
    old = audit(flipped, **KW)
    dropped = audit(frame[~failed], **KW)
    abstain = audit(frame, format_failures="abstain", **KW)
    for metric in ("accuracy", "recall", "fpr", "fdr", "f1"):
        assert _metric(other, metric) == pytest.approx(_metric(old, metric)), metric
        assert _metric(abstain, metric) == pytest.approx(_metric(dropped, metric)), metric
    # the old scoring turns failures on negative cases into false alarms
    assert _metric(other, "fpr") > _metric(audit(frame, **KW), "fpr")
    # abstention leaves the failures out of n but counts them
    rates = abstain.format_failures_frame()
    overall = rates[(rates["source"] == "ALL") & (rates["attribute"] == "overall")].iloc[0]
    assert overall["failures"] == int(failed.sum()) and overall["n"] == len(frame)


def test_failure_rates_are_reported_per_group_in_frames_and_json():
    frame = _multiclass_table(seed=3)
    result = audit(frame.assign(site=np.where(np.arange(len(frame)) % 2, "a", "b")), source_col="site", **KW)
    rates = result.format_failures_frame()
    sex = frame["sex"].fillna("UNK")
    for group in ("M", "F", "UNK"):
        row = rates[(rates["source"] == "ALL") & (rates["attribute"] == "sex") & (rates["group"] == group)].iloc[0]
        in_group = sex == group
        assert row["n"] == int(in_group.sum())
        assert row["failures"] == int((frame["y_hat"][in_group] == FAIL).sum())
        assert row["rate"] == pytest.approx(row["failures"] / row["n"])
    assert set(rates["source"]) == {"a", "b", "ALL"}
    saved = json.loads(json.dumps(result.to_json_dict()))
    assert saved["settings"]["format_failures"] == "wrong"
    entry = next(g for g in saved["groups"] if g["source"] == "ALL" and g["attribute"] == "sex" and g["group"] == "F")
    assert entry["n_format_failures"] == int((frame["y_hat"][sex == "F"] == FAIL).sum())
    clean = audit(frame.assign(y_hat=frame["y"]), **KW)
    assert clean.format_failure_rates == () and "format_failure_rate" not in clean.to_json_dict()["groups"][0]


def test_bad_choices_and_all_failures_are_clear_errors():
    frame = _binary_table()
    with pytest.raises(FairMedInputError, match="format_failures"):
        audit(frame, format_failures="skip", **KW)
    with pytest.raises(FairMedInputError, match="every prediction is a format failure"):
        audit(frame.assign(y_hat=FAIL), format_failures="abstain", **KW)
    # scored as wrong, a table of failures is a valid (bad) result, not an error
    everything_failed = audit(frame.assign(y_hat=FAIL), **KW)
    assert _metric(everything_failed, "recall") == 0.0


# ---------------------------------------------------------------------- end to end on multi-class data


@pytest.fixture()
def multiclass_manifest(default_manifest, tmp_path):
    """The benchmark's val and test cases with a third answer ("unsure") for every fifth case: three labels."""
    lines = default_manifest.read_text().splitlines()
    out = []
    for index, line in enumerate(lines):
        case = json.loads(line)
        if case.get("split") not in ("val", "test"):
            continue
        link_case_images(case, default_manifest.parent, tmp_path)
        if index % 5 == 0:
            case["answer"] = "unsure"
        out.append(json.dumps(case))
    path = tmp_path / "multiclass.jsonl"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.fixture()
def failing_generation(monkeypatch):
    """Real generation, with every third answer turned into a format failure; returns the answers given, so a
    test counts the failures (the briefly trained model fails some answers of its own on some sources)."""
    from fairmed_core.models import evaluation
    from fairmed_core.models.generation import Generation

    real = evaluation.generate_answers
    given: list = []

    def flaky(loaded, questions, images, options=None, *, choices=None, progress=None):
        answers = real(loaded, questions, images, options, choices=choices, progress=progress)
        given.extend(Generation(g.completion, None, g.reasoning, False, "no \\boxed{} answer", g.new_tokens,
                                g.generation_time_s) if i % 3 == 0 else g for i, g in enumerate(answers))
        return given[-len(answers):]

    monkeypatch.setattr(evaluation, "generate_answers", flaky)
    return given


def test_fairmed_evaluate_on_multiclass_data_with_failures_writes_an_audit(
    multiclass_manifest, tiny_model_dir, tmp_path, failing_generation
):
    from fairmed_core.cli import main

    out = tmp_path / "run"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(multiclass_manifest), "--limit", "48",
                 "--n-boot", "20", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    failed = sum(not g.format_ok for g in failing_generation)
    assert len(failing_generation) == 48 and failed >= 16  # every third, and any of the model's own
    assert run["format_failures"] == "wrong" and run["format_failure_rate"] == pytest.approx(failed / 48)
    saved = json.loads((out / "audit" / "audit.json").read_text())
    assert saved["settings"]["task"] == "multiclass"
    overall = next(g for g in saved["groups"] if g["source"] == "ALL" and g["attribute"] == "overall")
    assert overall["n_format_failures"] == failed
    assert (out / "audit" / "format_failures.csv").is_file()
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert (predictions["y_pred"] == FAIL).sum() == failed


def test_held_out_evaluation_during_training_on_multiclass_data_with_failures(
    multiclass_manifest, tiny_model_dir, failing_generation
):
    from fairmed_core.data import read_manifest
    from fairmed_core.models.loading import load_model
    from fairmed_core.jobs.grpo_training import held_out_record

    dataset = read_manifest(multiclass_manifest)
    assert dataset.positive_label is None and len(dataset.label_values) == 3
    from fairmed_core.data.sampling import stratified_sample

    case_ids, _ = stratified_sample(dataset.cases, 30, split="val", attributes=dataset.attributes)
    record = held_out_record(load_model(tiny_model_dir), dataset, split="val", case_ids=case_ids, step=0,
                             max_new_tokens=40)
    failed = sum(not g.format_ok for g in failing_generation)
    assert len(failing_generation) == 30 and failed >= 10
    assert record["format_failure_rate"] == pytest.approx(failed / 30)
    failure_rows = [r for r in record["groups"] if r["metric"] == "format_failure"]
    assert failure_rows and any(r["attribute"] == "sex" for r in failure_rows)
    assert any(r["metric"] == "f1" for r in record["groups"])
