"""The FairGRPO paper's protocol (fairmed_core.fairness._paper_protocol) against the authors' evaluation.

The oracle below restates, step by step and in the same control flow, the authors' released evaluation:
repository DDVD233/mirl, file examples/reward_function/evaluation.py, commit
1021b77b4d95e89aa6667ab59f531dc0e150e054 (functions parse_conditions, extract_boxed_content,
compute_confusion_matrices, compute_class_metrics, compute_dataset_metrics, gender, age and
compute_metrics_by_data_source). Only the sentence-embedding "similarity" metric is left out (it needs a
downloaded model and enters none of the paper's fairness numbers). Its quirks are kept on purpose: demographics
are read from the "demo" text by substring, empty groups are skipped, a ZeroDivisionError (no group at all) is
swallowed, and a KeyError (an attribute with a single group) escapes.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from fairmed_core.fairness import audit
from fairmed_core.fairness._paper_protocol import conditions_of, paper_protocol

# ----------------------------------------------------------------------------------------------- the oracle

_METRIC_NAMES = ("precision", "recall", "sensitivity", "specificity", "f1", "accuracy", "tpr", "fpr", "fdr")


def _oracle_parse(text):
    text = text.replace("\\boxed{", "").replace("}", "")
    for sep in (", ", " and ", " & ", ",", "&"):
        if sep in text:
            return {part.strip() for part in text.split(sep)}
    return {text.strip()}


def _oracle_extract(text):
    found = re.search(r"\\boxed{([^}]*)}", text)
    if found:
        return found.group(1)
    found = re.search(r"\[(.*?)\]", text)
    if found:
        return found.group(1)
    return text


def _oracle_class_metrics(m):
    tp, fp, fn, tn = m["tp"], m["fp"], m["fn"], m["tn"]

    def div(a, b):
        return a / b if b else 0.0

    precision = div(tp, tp + fp)
    recall = div(tp, tp + fn)
    return {
        "precision": precision, "recall": recall, "sensitivity": recall, "specificity": div(tn, tn + fp),
        "f1": (2 * precision * recall / (precision + recall)) if (precision + recall) > 0 else 0.0,
        "accuracy": div(tp + tn, tp + tn + fp + fn), "tpr": recall, "fpr": div(fp, fp + tn),
        "fdr": div(fp, tp + fp),
    }


def _oracle_dataset_metrics(preds, gts):
    every = set()
    matrices = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "tn": 0, "count": 0})
    for gt in gts:
        every.update(_oracle_parse(gt))
    for pred in preds:
        answer = _oracle_extract(pred)
        if answer != "None":
            every.update(_oracle_parse(answer))
    for pred, gt in zip(preds, gts):
        answer = _oracle_extract(pred)
        predicted = set() if answer == "None" else _oracle_parse(answer)
        true = _oracle_parse(gt)
        for condition in every:
            in_gt, in_pred = condition in true, condition in predicted
            if in_gt:
                matrices[condition]["count"] += 1
            if in_gt and in_pred:
                matrices[condition]["tp"] += 1
            elif in_gt:
                matrices[condition]["fn"] += 1
            elif in_pred:
                matrices[condition]["fp"] += 1
            else:
                matrices[condition]["tn"] += 1
    totals = dict.fromkeys(_METRIC_NAMES, 0.0)
    active = 0
    for matrix in matrices.values():
        if matrix["count"] == 0:
            continue
        active += 1
        metrics = _oracle_class_metrics(matrix)
        for name in totals:
            totals[name] += metrics[name]
    if active > 0:
        for name in totals:
            totals[name] /= active
    return totals, active


def _oracle_attribute(groups, order, diff):
    """The shared body of the authors' gender() and age(): per group metrics, means, diffs and stdevs."""
    results, values = {}, defaultdict(list)
    for name in order:
        preds, gts = groups[name]
        if len(preds) == 0:
            continue
        metrics, _ = _oracle_dataset_metrics(preds, gts)
        for key, value in (("acc", metrics["accuracy"]), ("f1", metrics["f1"]), ("tpr", metrics["tpr"]),
                           ("fdr", metrics["fdr"]), ("fpr", metrics["fpr"])):
            results[f"{name}/{key}"] = value
            values[key].append(value)
    for key in ("acc", "f1", "tpr", "fpr", "fdr"):
        results[key] = sum(values[key]) / len(values[key])  # ZeroDivisionError without any group
    for key in ("acc", "f1", "tpr", "fdr", "fpr"):
        if len(values[key]) >= 2:
            results[f"{key}_diff"] = diff(values[key])
            results[f"{key}_std"] = statistics.stdev(values[key])
    return results


def _oracle_gender(preds, gts, demos):
    groups = {"male": ([], []), "female": ([], [])}
    for pred, gt, demo in zip(preds, gts, demos):
        if demo is not None and "female" in demo.lower():
            groups["female"][0].append(pred), groups["female"][1].append(gt)
        elif demo is not None and "male" in demo.lower():
            groups["male"][0].append(pred), groups["male"][1].append(gt)
    return _oracle_attribute(groups, ("male", "female"), lambda v: abs(v[0] - v[1]))


def _oracle_age(preds, gts, demos):
    groups = {g: ([], []) for g in ("a1", "a2", "a3", "a4")}
    for pred, gt, demo in zip(preds, gts, demos):
        if demo is not None and "age" in demo.lower():
            try:
                years = float(demo.split("age:")[1].strip().split()[0].replace(",", ""))
            except (IndexError, ValueError):
                continue
            key = "a1" if years <= 25 else "a2" if years <= 50 else "a3" if years <= 75 else "a4" if years > 75 else None
            if key is not None:
                groups[key][0].append(pred), groups[key][1].append(gt)
    return _oracle_attribute(groups, ("a1", "a2", "a3", "a4"), lambda v: max(v) - min(v))


def _oracle(preds, gts, sources, demos):
    """The authors' compute_metrics_by_data_source, keeping the keys the paper's table reads."""
    grouped = defaultdict(lambda: {"preds": [], "gts": [], "demos": []})
    for pred, gt, source, demo in zip(preds, gts, sources, demos):
        grouped[source]["preds"].append(pred), grouped[source]["gts"].append(gt), grouped[source]["demos"].append(demo)
    result = {}
    overall = defaultdict(list)
    for name, data in grouped.items():
        dataset_metrics, active = _oracle_dataset_metrics(data["preds"], data["gts"])
        result[f"{name}/f1"], result[f"{name}/accuracy"] = dataset_metrics["f1"], dataset_metrics["accuracy"]
        if active == 0:
            continue
        collected = defaultdict(list)
        try:
            sex = _oracle_gender(data["preds"], data["gts"], data["demos"])
            for key in ("acc_diff", "f1_diff", "tpr_diff", "fpr_diff", "fdr_diff", "acc_std", "f1_std",
                        "acc", "f1"):
                collected[key].append(sex[key])
            result.update({f"{name}/gender/{k}": v for k, v in sex.items()})
        except ZeroDivisionError:
            pass
        try:
            age = _oracle_age(data["preds"], data["gts"], data["demos"])
            for key in ("acc_diff", "f1_diff", "tpr_diff", "fpr_diff", "fdr_diff", "acc_std", "f1_std",
                        "acc", "f1"):
                collected[key].append(age[key])
            result.update({f"{name}/age/{k}": v for k, v in age.items()})
            for key, values in collected.items():
                mean = sum(values) / len(values)
                result[f"{name}/avg_{key}"] = mean
                overall[key].append(mean)
        except ZeroDivisionError:
            pass
    try:
        for key, values in overall.items():
            result[f"overall/{key}"] = sum(values) / len(values)
        result["overall/f1_es"] = result["overall/f1"] / (1 + result["overall/f1_std"])
        result["overall/acc_es"] = result["overall/acc"] / (1 + result["overall/acc_std"])
    except KeyError:
        pass
    return result


# ------------------------------------------------------------------------------------------ random tables


def _random_table(rng, *, kind):
    """Answers, demographics and sources of one random evaluation table, with the awkward cases the protocol
    must handle: empty and one-class groups, predicted-only answers, format failures, missing demographics."""
    n = int(rng.integers(4, 120))
    if kind == "binary":
        labels = ["no", "yes"]
    elif kind == "multiclass":
        labels = ["benign", "irregular", "nevus", "melanoma"][: int(rng.integers(3, 5))]
    else:  # multi-label answers, as the authors' chest X-ray data
        labels = ["effusion", "edema", "atelectasis, effusion", "edema and effusion", "normal"]
    prevalence = rng.dirichlet(np.ones(len(labels)) * rng.uniform(0.3, 3))
    truth = rng.choice(labels, size=n, p=prevalence)
    accuracy = rng.uniform(0.0, 1.0)
    extra = ["(format failure)", "None", "unheard-of finding"] if rng.random() < 0.6 else []
    wrong = rng.choice(labels + extra, size=n)
    predictions = np.where(rng.random(n) < accuracy, truth, wrong)
    n_sources = int(rng.integers(1, 4))
    sources = rng.choice([f"src{i}" for i in range(n_sources)], size=n)
    sex_choices = ["M", "F", "UNK"] if rng.random() < 0.85 else ["F", "UNK"]  # sometimes one sex only
    sex = rng.choice(sex_choices, size=n, p=rng.dirichlet(np.ones(len(sex_choices))))
    age_pool = [18, 25, 26, 40, 50, 51, 70, 75, 76, 90]
    if rng.random() < 0.15:
        age_pool = age_pool[: int(rng.integers(1, 4))]  # few age groups, sometimes one
    ages = rng.choice(age_pool, size=n).astype(float)
    ages[rng.random(n) < rng.uniform(0, 0.4)] = np.nan
    return truth, predictions, sources, sex, ages


def _demo_text(sex, age):
    parts = []
    if sex != "UNK":
        parts.append("sex: " + ("Male" if sex == "M" else "Female"))
    if not math.isnan(age):
        parts.append(f"age: {int(age)}")
    return ", ".join(parts)


def _age_group(age):
    if math.isnan(age):
        return "UNK"
    return "A1" if age <= 25 else "A2" if age <= 50 else "A3" if age <= 75 else "A4"


def _close(a, b):
    return (a is None and (b is None or math.isnan(b))) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_paper_protocol_equals_the_authors_evaluation_on_random_tables(kind):
    rng = np.random.default_rng({"binary": 1, "multiclass": 2, "multilabel": 3}[kind])
    compared = crashed = 0
    for _ in range(150):
        truth, predictions, sources, sex, ages = _random_table(rng, kind=kind)
        demos = [_demo_text(s, a) for s, a in zip(sex, ages)]
        ours = paper_protocol(
            truth, predictions, sources=sources,
            attributes={"sex": sex, "age_group": [_age_group(a) for a in ages]},
        )
        try:
            theirs = _oracle(list(predictions), list(truth), list(sources), demos)
        except KeyError:
            # The authors' code fails when an attribute has one group; ours names that attribute instead.
            crashed += 1
            assert any(len(a.groups) == 1 for a in ours.attributes)
            continue
        compared += 1
        for source in ours.sources:
            assert _close(theirs[f"{source.source}/f1"], source.overall_f1)
            assert _close(theirs[f"{source.source}/accuracy"], source.overall_accuracy)
            if source.in_aggregate:
                for key, attribute in (("acc", "accuracy"), ("f1", "f1"), ("f1_diff", "f1_gap"),
                                       ("acc_diff", "accuracy_gap"), ("tpr_diff", "tpr_gap"),
                                       ("fpr_diff", "fpr_gap"), ("fdr_diff", "fdr_gap"),
                                       ("acc_std", "sigma_accuracy"), ("f1_std", "sigma_f1")):
                    assert _close(theirs[f"{source.source}/avg_{key}"], getattr(source, attribute)), key
            else:
                assert f"{source.source}/avg_f1" not in theirs
        for group in ours.groups:
            name = {"M": "male", "F": "female"}.get(group.group, group.group.lower())
            section = "gender" if group.attribute == "sex" else "age"
            key = f"{group.source}/{section}/{name}"
            if f"{key}/f1" not in theirs:
                continue  # the authors keep an attribute's groups only when the attribute succeeded
            for theirs_key, ours_key in (("acc", "accuracy"), ("f1", "f1"), ("tpr", "recall"),
                                         ("fdr", "fdr"), ("fpr", "fpr")):
                assert _close(theirs[f"{key}/{theirs_key}"], getattr(group, ours_key)), (key, theirs_key)
        if ours.aggregate is None:
            assert "overall/f1" not in theirs
        else:
            assert _close(theirs["overall/f1"], ours.aggregate.f1)
            assert _close(theirs["overall/acc"], ours.aggregate.accuracy)
            assert _close(theirs["overall/f1_std"], ours.aggregate.sigma_f1)
            assert _close(theirs["overall/f1_es"], ours.aggregate.f1_es)
            assert _close(theirs["overall/acc_es"], ours.aggregate.accuracy_es)
            assert _close(100 * theirs["overall/fdr_diff"], ours.aggregate.predictive_parity)
            assert _close(100 * theirs["overall/tpr_diff"], ours.aggregate.equal_opportunity_difference)
            assert _close(theirs["overall/fpr_diff"], ours.aggregate.fpr_gap)
    assert compared >= 80 and crashed >= 5, (compared, crashed)  # both paths exercised


def test_yes_no_data_scores_both_answers_and_skips_predicted_only_conditions():
    # Group of 4: truth yes, yes, no, no; predicted yes, no, no, yes -> "yes": tp 1 fn 1 fp 1; "no": the same.
    truth = ["yes", "yes", "no", "no", "no"]
    predicted = ["yes", "no", "no", "yes", "(format failure)"]
    summary = paper_protocol(truth, predicted, attributes={"sex": ["M", "M", "M", "M", "F"]}, age_attribute=None)
    male = next(g for g in summary.groups if g.group == "M")
    assert male.n_conditions == 2 and male.precision == 0.5 and male.recall == 0.5 and male.fdr == 0.5
    female = next(g for g in summary.groups if g.group == "F")
    # One "no" case with a format failure: only "no" is in the ground truth; its recall 0, precision 0/0 -> 0.
    assert female.n_conditions == 1 and female.recall == 0.0 and female.precision == 0.0 and female.fdr == 0.0
    assert female.accuracy == 0.0  # one-vs-rest accuracy of "no" on one missed case
    assert summary.aggregate is None  # no age attribute: the authors' code builds no aggregate
    assert summary.attributes[0].predictive_parity == pytest.approx(50.0)


def test_conditions_are_split_as_the_authors_split_them():
    assert conditions_of("atelectasis, effusion") == {"atelectasis", "effusion"}
    assert conditions_of("edema and effusion") == {"edema", "effusion"}
    assert conditions_of("a & b") == {"a", "b"}
    assert conditions_of("\\boxed{yes}") == {"yes"}
    assert conditions_of(float("nan")) == frozenset()


def test_audit_attaches_the_paper_summary_and_keeps_fairmed_the_default():
    rng = np.random.default_rng(5)
    n = 400
    frame = pd.DataFrame({
        "y": rng.choice(["no", "yes"], size=n), "sex": rng.choice(["M", "F"], size=n),
        "age_group": rng.choice(["A1", "A2", "A3", "A4", "UNK"], size=n),
        "skin_tone": rng.choice(["light", "dark"], size=n), "source": rng.choice(["cxr", "derm"], size=n),
    })
    frame["y_hat"] = np.where(rng.random(n) < 0.7, frame["y"], np.where(frame["y"] == "yes", "no", "yes"))
    kwargs = dict(label_col="y", pred_col="y_hat", sensitive=["sex", "age_group", "skin_tone"],
                  source_col="source", n_boot=0)
    default = audit(frame, **kwargs)
    assert default.paper_summary is None and default.settings.protocol == "fairmed"
    assert "paper_protocol" not in default.to_json_dict()
    paper = audit(frame, protocol="fairgrpo_paper", **kwargs)
    assert paper.settings.protocol == "fairgrpo_paper"
    direct = paper_protocol(frame["y"], frame["y_hat"], sources=frame["source"],
                            attributes={a: frame[a] for a in ("sex", "age_group", "skin_tone")})
    assert paper.paper_summary.aggregate == direct.aggregate
    saved = paper.to_json_dict()["paper_protocol"]
    assert saved["aggregate"]["predictive_parity"] == pytest.approx(direct.aggregate.predictive_parity)
    # FairMed's own numbers are unchanged by the protocol choice.
    pd.testing.assert_frame_equal(default.summary_frame(), paper.summary_frame())
    # skin tone is reported but not aggregated, as in the paper
    skin = [a for a in paper.paper_summary.attributes if a.attribute == "skin_tone"]
    assert skin and not any(a.in_aggregate for a in skin)


def test_audit_rejects_an_unknown_protocol():
    from fairmed_core.errors import FairMedInputError

    frame = pd.DataFrame({"y": [0, 1, 1, 0], "y_hat": [0, 1, 0, 0], "sex": ["M", "F", "M", "F"]})
    with pytest.raises(FairMedInputError, match="protocol"):
        audit(frame, label_col="y", pred_col="y_hat", sensitive=["sex"], n_boot=0, protocol="paper")


def test_cli_audit_reports_the_paper_protocol_beside_fairmeds(tmp_path, capsys):
    from fairmed_core.cli import AUDIT_FORMAT_FAILURES, AUDIT_PROTOCOLS, main
    from fairmed_core.fairness import FORMAT_FAILURE_POLICIES, PROTOCOLS
    from fairmed_core.runs.workspace import REFERENCE_PREDICTIONS

    assert AUDIT_PROTOCOLS == PROTOCOLS and AUDIT_FORMAT_FAILURES == FORMAT_FAILURE_POLICIES
    out = tmp_path / "audit.json"
    args = ["audit", str(REFERENCE_PREDICTIONS), "--sensitive", "sex", "--sensitive", "age_group",
            "--label-col", "y_true", "--pred-col", "y_pred", "--source-col", "source", "--n-boot", "0"]
    assert main([*args, "--protocol", "fairgrpo_paper", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FairGRPO paper protocol" in printed
    payload = __import__("json").loads(out.read_text())
    frame = pd.read_csv(REFERENCE_PREDICTIONS, keep_default_na=False)
    direct = paper_protocol(frame["y_true"], frame["y_pred"], sources=frame["source"],
                            attributes={"sex": frame["sex"], "age_group": frame["age_group"]})
    assert payload["settings"]["protocol"] == "fairgrpo_paper"
    assert payload["paper_protocol"]["aggregate"]["predictive_parity"] == pytest.approx(
        direct.aggregate.predictive_parity)
    assert f"PP {direct.aggregate.predictive_parity:.2f}" in printed
    assert main([*args]) == 0 and "FairGRPO paper protocol" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--protocol", "paper"])
    assert exit_info.value.code == 2
