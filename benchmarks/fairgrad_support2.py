"""FairGrad against ERM, a fixed-weight penalty and fairlearn on SUPPORT2 sepsis mortality; and FairGrad's speed.

    .venv/bin/pip install -r requirements-extras.txt     # survset (GPL-3.0), which carries SUPPORT2
    .venv/bin/python benchmarks/fairgrad_support2.py     # ~7 minutes on one CPU thread

Accuracy and fairness (section "FairGrad on SUPPORT2 sepsis mortality" of docs/RESULTS.md, plus a Pareto plot in
docs/fairgrad_support2_pareto.html): the cohort of :func:`fairmed_core.training.tabular.support2_sepsis` (3,515
patients, death within 180 days, 44.6% positive). For each seed a split 60/20/20 into train/validation/test,
stratified on label x race x sex, and the ``tabular_pipeline`` encoding fitted on the training rows. Every method
trains on the training rows only, except ThresholdOptimizer, whose thresholds are fitted on the validation rows
(on top of the logistic regression fitted on the training rows: thresholds chosen on the rows the scorer was fitted
on would be chosen on optimistic scores). All report on the test rows: AUROC, accuracy, equalized odds difference
(max of the TPR and FPR gaps across groups, fairlearn's definition) and equal opportunity difference (TPR gap) for
race, sex and age group; mean and standard deviation over the seeds.

Model: logistic regression everywhere (``FairGradClassifier(model="logistic")`` for ERM, penalty and FairGrad;
scikit-learn's ``LogisticRegression`` under the fairlearn mitigators), so the comparison is between training
procedures and not model capacity. The torch models train with Adam (lr 1e-2, weight decay 1e-4, batch 256) for
100 epochs, where ERM's test AUROC matches scikit-learn's converged logistic regression.

Speed (section "FairGrad: time per epoch vs ERM" of docs/BENCHMARKS.md): FairGrad with k = 1, 2, 3 attributes
against ERM on the same training rows and model, in alternating rounds within one process, median over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from fairlearn.metrics import equal_opportunity_difference, equalized_odds_difference  # noqa: E402
from fairlearn.postprocessing import ThresholdOptimizer  # noqa: E402
from fairlearn.reductions import EqualizedOdds, ExponentiatedGradient  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fairmed_core.report.sections import replace_section  # noqa: E402
from fairmed_core.training.fairgrad import FairGradClassifier  # noqa: E402
from fairmed_core.training.tabular import support2_sepsis, tabular_pipeline  # noqa: E402

torch.set_num_threads(1)

RESULTS_SECTION = "FairGrad on SUPPORT2 sepsis mortality"
SPEED_SECTION = "FairGrad: time per epoch vs ERM"
ATTRIBUTES = ("race", "sex", "age_group")
MITIGATED = ("race", "sex")  # the headline objectives; "+ age" rows add age_group
TRAIN_SETTINGS = {"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 256}


# --------------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------------


def _torch_method(method: str, attributes: tuple[str, ...], epochs: int, penalty_weight: float = 1.0):
    def fit_predict(seed, X_train, y_train, s_train, X_val, y_val, s_val, X_test, s_test):
        model = FairGradClassifier(
            model="logistic", method=method, epochs=epochs, penalty_weight=penalty_weight, random_state=seed,
            objectives={attribute: "equalized_odds" for attribute in attributes}, **TRAIN_SETTINGS)
        model.fit(X_train, y_train, sensitive_features=s_train[list(attributes)] if attributes else None)
        score = model.predict_proba(X_test)[:, 1]
        return score, (score > 0.5).astype(int)
    return fit_predict


def _sklearn_lr():
    return LogisticRegression(max_iter=2000)


def _plain_lr(seed, X_train, y_train, s_train, X_val, y_val, s_val, X_test, s_test):
    model = _sklearn_lr().fit(X_train, y_train)
    score = model.predict_proba(X_test)[:, 1]
    return score, (score > 0.5).astype(int)


def _exponentiated_gradient(seed, X_train, y_train, s_train, X_val, y_val, s_val, X_test, s_test):
    mitigator = ExponentiatedGradient(_sklearn_lr(), EqualizedOdds())
    mitigator.fit(X_train, y_train, sensitive_features=s_train[list(MITIGATED)])
    # The mitigated model is a random mixture of classifiers: P(predict 1) ranks the rows for AUROC, and its
    # predictions are drawn with the seed.
    score = mitigator._pmf_predict(X_test)[:, 1]
    return score, mitigator.predict(X_test, random_state=seed)


def _threshold_optimizer(seed, X_train, y_train, s_train, X_val, y_val, s_val, X_test, s_test):
    scorer = _sklearn_lr().fit(X_train, y_train)
    mitigator = ThresholdOptimizer(estimator=scorer, constraints="equalized_odds", prefit=True,
                                   predict_method="predict_proba")
    mitigator.fit(X_val, y_val, sensitive_features=s_val[list(MITIGATED)])
    groups = s_test[list(MITIGATED)]
    score = mitigator._pmf_predict(X_test, sensitive_features=groups)[:, 1]
    return score, mitigator.predict(X_test, sensitive_features=groups, random_state=seed)


def methods(epochs: int) -> list[tuple[str, object]]:
    both = MITIGATED
    three = (*MITIGATED, "age_group")
    return [
        ("ERM (torch logistic)", _torch_method("erm", (), epochs)),
        ("Penalty λ=0.1 (race, sex)", _torch_method("penalty", both, epochs, 0.1)),
        ("Penalty λ=0.3 (race, sex)", _torch_method("penalty", both, epochs, 0.3)),
        ("Penalty λ=1 (race, sex)", _torch_method("penalty", both, epochs, 1.0)),
        ("FairGrad (race, sex)", _torch_method("fairgrad", both, epochs)),
        ("Penalty λ=1 (race, sex, age)", _torch_method("penalty", three, epochs, 1.0)),
        ("FairGrad (race, sex, age)", _torch_method("fairgrad", three, epochs)),
        ("LogisticRegression (sklearn)", _plain_lr),
        ("ExponentiatedGradient EO (race×sex)", _exponentiated_gradient),
        ("ThresholdOptimizer EO (race×sex)", _threshold_optimizer),
    ]


# --------------------------------------------------------------------------------------------------------------
# Accuracy and fairness over seeds
# --------------------------------------------------------------------------------------------------------------


def _split(data, seed: int):
    strata = (pd.Series(data.y).astype(str) + "|" + data.sensitive["race"] + "|" + data.sensitive["sex"]).to_numpy()
    rows = np.arange(data.n_rows)
    train, rest = train_test_split(rows, test_size=0.4, stratify=strata, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=strata[rest], random_state=seed)
    return train, val, test


def _metrics(y, score, pred, groups: pd.DataFrame) -> dict[str, float]:
    pred = np.asarray(pred).astype(int)
    row = {"auroc": roc_auc_score(y, score), "accuracy": accuracy_score(y, pred)}
    for attribute in ATTRIBUTES:
        row[f"eod_{attribute}"] = equalized_odds_difference(y, pred, sensitive_features=groups[attribute])
        row[f"eopp_{attribute}"] = equal_opportunity_difference(y, pred, sensitive_features=groups[attribute])
    return row


def run_accuracy(data, seeds, epochs: int) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        train, val, test = _split(data, seed)
        encoder = tabular_pipeline(data).fit(data.X.iloc[train])
        X_train, X_val, X_test = (encoder.transform(data.X.iloc[part]) for part in (train, val, test))
        s_train, s_val, s_test = (data.sensitive.iloc[part].reset_index(drop=True) for part in (train, val, test))
        for name, fit_predict in methods(epochs):
            started = time.perf_counter()
            score, pred = fit_predict(seed, X_train, data.y[train], s_train, X_val, data.y[val], s_val, X_test,
                                      s_test)
            seconds = time.perf_counter() - started
            rows.append({"seed": seed, "method": name, "seconds": seconds,
                         **_metrics(data.y[test], score, pred, s_test)})
            print(f"seed {seed} {name:<38} {seconds:6.1f}s  acc {rows[-1]['accuracy']:.3f}  "
                  f"auroc {rows[-1]['auroc']:.3f}  eod race {rows[-1]['eod_race']:.3f} sex {rows[-1]['eod_sex']:.3f}",
                  flush=True)
        sizes = {a: s_test[a].value_counts().to_dict() for a in ATTRIBUTES}
        print(f"seed {seed}: test rows {len(test)}, groups {sizes}", flush=True)
    return pd.DataFrame(rows)


METRIC_COLUMNS = ["auroc", "accuracy", *(f"eod_{a}" for a in ATTRIBUTES), *(f"eopp_{a}" for a in ATTRIBUTES)]
HEADERS = ["AUROC", "Accuracy", *(f"EOD {a}" for a in ATTRIBUTES), *(f"EOpp {a}" for a in ATTRIBUTES)]


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    order = list(dict.fromkeys(results["method"]))
    grouped = results.groupby("method", sort=False)[[*METRIC_COLUMNS, "seconds"]]
    return grouped.mean().loc[order], grouped.std(ddof=1).loc[order]


def _paired(results: pd.DataFrame, method: str, reference: str, column: str) -> tuple[float, float, int, int]:
    """Mean and std over seeds of (method - reference), and in how many seeds method is lower."""
    a = results[results["method"] == method].set_index("seed")[column]
    b = results[results["method"] == reference].set_index("seed")[column]
    difference = (a - b).dropna()
    return float(difference.mean()), float(difference.std(ddof=1)), int((difference < 0).sum()), len(difference)


def pareto_figure(results: pd.DataFrame):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mean, std = _summary(results)
    figure = make_subplots(rows=1, cols=len(ATTRIBUTES), shared_yaxes=True,
                           subplot_titles=[f"{a} (test)" for a in ATTRIBUTES])
    palette = ["#4c4c4c", "#9ecae1", "#6baed6", "#2171b5", "#d62728", "#08306b", "#ff7f0e", "#7f7f7f", "#2ca02c",
               "#9467bd"]
    for index, method in enumerate(mean.index):
        for col, attribute in enumerate(ATTRIBUTES, start=1):
            figure.add_trace(go.Scatter(
                x=[mean.loc[method, f"eod_{attribute}"]], y=[mean.loc[method, "accuracy"]],
                error_x={"type": "data", "array": [std.loc[method, f"eod_{attribute}"]], "thickness": 1},
                error_y={"type": "data", "array": [std.loc[method, "accuracy"]], "thickness": 1},
                mode="markers", marker={"size": 11, "color": palette[index % len(palette)],
                                        "symbol": "star" if method.startswith("FairGrad") else "circle"},
                name=method, legendgroup=method, showlegend=col == 1,
                hovertemplate=f"{method}<br>EOD {attribute} %{{x:.3f}}<br>accuracy %{{y:.3f}}<extra></extra>",
            ), row=1, col=col)
        figure.update_xaxes(title_text="equalized odds difference (lower is fairer)")
    figure.update_yaxes(title_text="accuracy", row=1, col=1)
    figure.update_layout(
        title=f"SUPPORT2 sepsis, death within 180 days: accuracy vs equalized odds difference "
              f"(mean ± std over {results['seed'].nunique()} seeds)",
        template="plotly_white", width=1400, height=560, legend={"orientation": "h", "y": -0.25})
    return figure


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _counts(series: pd.Series) -> str:
    counts = series.value_counts()
    return " / ".join(f"{group} {n:,}" for group, n in counts.sort_index().items())


def results_markdown(data, results: pd.DataFrame, *, epochs: int, minutes: float, figure_note: str) -> str:
    mean, std = _summary(results)
    train, _, test = _split(data, 0)
    encoded_width = tabular_pipeline(data).fit(data.X.iloc[train]).transform(data.X.iloc[:1]).shape[1]
    smallest = min(int(data.sensitive[a].iloc[test].value_counts().min()) for a in ATTRIBUTES)
    seeds = sorted(results["seed"].unique())
    lines = [
        f"## {RESULTS_SECTION}",
        "",
        f"Written by `benchmarks/fairgrad_support2.py` ({minutes:.1f} min on one CPU thread). Cohort: "
        f"`support2_sepsis()`, {data.n_rows:,} SUPPORT2 patients in the \"ARF/MOSF w/Sepsis\" group (data from the "
        f"optional `survset` package), label death within 180 days of study entry ({data.positive_rate:.1%} "
        "positive; SurvSet's copy of SUPPORT2 has no in-hospital death column). Attributes (patients per group): "
        + "; ".join(f"{a} {_counts(data.sensitive[a])}" for a in ATTRIBUTES)
        + f". Features: {len(data.numeric)} numeric physiology, lab and history columns and "
        f"{', '.join(data.categorical)} (cancer status), median-imputed with missing indicators, standardised and "
        f"one-hot encoded ({encoded_width} columns).",
        "",
        f"Seeds {', '.join(map(str, seeds))}: per seed a 60/20/20 train/validation/test split stratified on label x "
        f"race x sex (test: {len(test)} patients; per group {'; '.join(f'{a} {_counts(data.sensitive[a].iloc[test])}' for a in ATTRIBUTES)}). All models are logistic "
        f"regressions. ERM, penalty and FairGrad: `FairGradClassifier(model=\"logistic\")`, Adam, lr 1e-2, "
        f"weight decay 1e-4, batch 256, {epochs} epochs, equalized-odds objectives for the attributes in brackets "
        "(the penalty adds λ times the sum of the surrogates; FairGrad reconciles the task gradient with one "
        "gradient per attribute, no weight). fairlearn: `ExponentiatedGradient(LogisticRegression, "
        "EqualizedOdds())` on the training rows, and `ThresholdOptimizer(equalized_odds)` on a "
        "`LogisticRegression` fitted on the training rows with thresholds fitted on the validation rows; both "
        "constrain the race x sex intersection (6 groups), fairlearn's way of handling several attributes, and "
        "their randomised predictions are drawn with the seed (AUROC uses their probability of predicting 1). "
        "Fit seconds are wall-clock times on a shared machine and only indicative (the speed comparison is in "
        "docs/BENCHMARKS.md).",
        "",
        "Test-set metrics, mean ± std over seeds. Accuracy and the fairness gaps use the 0.5 threshold. EOD: "
        "equalized odds difference (max of the TPR gap and the FPR gap across the attribute's groups). EOpp: "
        "equal opportunity difference (TPR gap). Lower gaps are fairer. Age group is never mitigated except in "
        "the \"(race, sex, age)\" rows.",
        "",
        "| Method | " + " | ".join(HEADERS) + " | Fit s |",
        "|---|" + "---|" * (len(HEADERS) + 1),
    ]
    for method in mean.index:
        cells = [_fmt(mean.loc[method, column], std.loc[method, column]) for column in METRIC_COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean.loc[method, 'seconds']:.1f} |")
    lines += ["", "### Against ERM, seed by seed", "",
              "Paired differences to ERM (torch logistic) on the same split, mean ± std over seeds, and the number "
              "of seeds in which the method's gap is lower than ERM's. The FairGrad paper reports 32-57% lower "
              "equal opportunity difference than ERM on its sepsis task.", "",
              "| Method | Δ accuracy | Δ EOD race | Δ EOD sex | Δ EOpp race | Δ EOpp sex | EOpp race vs ERM | "
              "EOpp sex vs ERM |",
              "|---|---|---|---|---|---|---|---|"]
    reference = "ERM (torch logistic)"
    for method in mean.index:
        if method == reference:
            continue
        cells = []
        for column in ("accuracy", "eod_race", "eod_sex", "eopp_race", "eopp_sex"):
            d_mean, d_std, lower, n = _paired(results, method, reference, column)
            suffix = "" if column == "accuracy" else f" ({lower}/{n} lower)"
            cells.append(f"{d_mean:+.3f} ± {d_std:.3f}{suffix}")
        for attribute in ("race", "sex"):
            base = mean.loc[reference, f"eopp_{attribute}"]
            change = (mean.loc[method, f"eopp_{attribute}"] - base) / base if base > 0 else float("nan")
            cells.append(f"{change:+.0%}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "### What comes out", "", *_findings(results, mean, std, smallest), "", figure_note, ""]
    return "\n".join(lines)


def _findings(results: pd.DataFrame, mean: pd.DataFrame, std: pd.DataFrame, smallest: int) -> list[str]:
    """Plain statements computed from the numbers, so that a rerun cannot leave stale prose behind."""
    reference = "ERM (torch logistic)"
    out = []
    for method in ("FairGrad (race, sex)", "FairGrad (race, sex, age)", "Penalty λ=1 (race, sex)",
                   "ExponentiatedGradient EO (race×sex)", "ThresholdOptimizer EO (race×sex)"):
        if method not in mean.index:
            continue
        accuracy = _paired(results, method, reference, "accuracy")
        parts = [f"accuracy {mean.loc[method, 'accuracy']:.3f} vs ERM's {mean.loc[reference, 'accuracy']:.3f} "
                 f"({accuracy[0] * 100:+.1f} points)"]
        for attribute in ("race", "sex", "age_group"):
            eod = _paired(results, method, reference, f"eod_{attribute}")
            eopp = _paired(results, method, reference, f"eopp_{attribute}")
            clear = abs(eod[0]) > 2 * (eod[1] / np.sqrt(eod[3])) if eod[3] > 1 and eod[1] > 0 else False
            parts.append(
                f"EOD {attribute} {mean.loc[method, f'eod_{attribute}']:.3f} vs {mean.loc[reference, f'eod_{attribute}']:.3f}"
                f" ({eod[2]}/{eod[3]} seeds lower{'' if clear else ', within seed noise'}), "
                f"EOpp {attribute} {mean.loc[method, f'eopp_{attribute}']:.3f} vs "
                f"{mean.loc[reference, f'eopp_{attribute}']:.3f} ({eopp[2]}/{eopp[3]} lower)")
        out.append(f"- **{method}**: " + "; ".join(parts) + ".")
    majority = 1 - float(results.attrs.get("positive_rate", np.nan))
    out.append(f"- For scale: predicting \"survives\" for everyone scores accuracy {majority:.3f} with every gap 0; "
               "a method close to that accuracy has bought its small gaps by predicting almost nobody dies.")
    axes = ["accuracy", "eod_race", "eod_sex"]
    frontier = []
    for method in mean.index:
        dominated = any(
            other != method
            and mean.loc[other, "accuracy"] >= mean.loc[method, "accuracy"]
            and all(mean.loc[other, axis] <= mean.loc[method, axis] for axis in axes[1:])
            and any((mean.loc[other, axis] > mean.loc[method, axis]) if axis == "accuracy"
                    else (mean.loc[other, axis] < mean.loc[method, axis]) for axis in axes)
            for other in mean.index)
        if not dominated:
            frontier.append(method)
    out.append("- Not dominated on mean (accuracy, EOD race, EOD sex), i.e. no other row is at least as good on all "
               "three and better on one: " + ", ".join(frontier) + ".")
    out.append("- \"Within seed noise\": the mean paired difference to ERM is less than two standard errors "
               f"(std over seeds / sqrt(seeds)). With {results['seed'].nunique()} seeds and test groups as small as "
               f"{smallest} patients (seed 0), only large changes in a gap stand out from split-to-split variation.")
    return out


# --------------------------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------------------------


def run_speed(data, *, epochs: int, rounds: int, models=("logistic", "mlp")) -> tuple[pd.DataFrame, tuple]:
    train, _, _ = _split(data, 0)
    encoder = tabular_pipeline(data).fit(data.X.iloc[train])
    X = encoder.transform(data.X.iloc[train])
    y = data.y[train]
    groups = data.sensitive.iloc[train].reset_index(drop=True)
    configs = [(model, "erm", 0) for model in models]
    configs += [(model, method, k) for model in models for k in (1, 2, 3) for method in ("erm", "penalty", "fairgrad")]
    timings: dict[tuple, list[float]] = {config: [] for config in configs}
    for _ in range(2):  # warm-up: first calls pay for allocator and autograd set-up
        FairGradClassifier(model="logistic", method="fairgrad", epochs=2, **TRAIN_SETTINGS).fit(
            X, y, sensitive_features=groups)
    for round_index in range(rounds):
        order = configs[round_index % len(configs):] + configs[:round_index % len(configs)]  # rotate the order
        for model, method, k in order:
            attributes = list(ATTRIBUTES[:k])
            estimator = FairGradClassifier(model=model, method=method, epochs=epochs, random_state=round_index,
                                           **TRAIN_SETTINGS)
            started = time.perf_counter()
            estimator.fit(X, y, sensitive_features=groups[attributes] if attributes else None)
            timings[(model, method, k)].append((time.perf_counter() - started) / epochs)
    rows = []
    for (model, method, k), values in timings.items():
        rows.append({"model": model, "method": method, "k": k, "ms_per_epoch": 1000 * statistics.median(values),
                     "ms_min": 1000 * min(values), "ms_max": 1000 * max(values)})
    return pd.DataFrame(rows), X.shape


def speed_markdown(speed: pd.DataFrame, shape, *, epochs: int, rounds: int, load=None) -> str:
    lines = [
        f"## {SPEED_SECTION}",
        "",
        f"Written by `benchmarks/fairgrad_support2.py`. Data: one SUPPORT2 sepsis training split ({shape[0]:,} rows, "
        f"{shape[1]} encoded features), batch 256 ({int(np.ceil(shape[0] / 256))} steps per epoch), float64, one CPU "
        f"thread. Each configuration is a full `fit` of {epochs} epochs, timed in {rounds} alternating rounds in one "
        "process (the order rotates each round); time per epoch is the fit time over the epochs (it includes the "
        "one-off standardisation, well under a millisecond), median over rounds (min-max in brackets). \"ERM\" is "
        "fitted without attributes (task loss only); \"ERM + k surrogates logged\" is `method=\"erm\"` given the "
        "same k attributes, for which the estimator still evaluates the fairness surrogates every step to log them "
        "in `history_` (no gradient). k attributes: race; race + sex; race + sex + age group, each with an "
        "equalized-odds objective. FairGrad does k + 1 backward passes per step and reconciles the gradients; "
        "the target is at most (k + 1) x ERM's time per epoch.",
        "",
        "| Model | k | ERM ms/epoch | ERM + k surrogates logged | Penalty ms/epoch | FairGrad ms/epoch | "
        "FairGrad / ERM | Target (k+1) | Met | FairGrad / (ERM + logged surrogates) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in speed["model"].unique():
        part = speed[speed["model"] == model].set_index(["method", "k"])
        erm = part.loc[("erm", 0)]
        for k in (1, 2, 3):
            fair, penalty, logged = part.loc[("fairgrad", k)], part.loc[("penalty", k)], part.loc[("erm", k)]
            ratio = fair["ms_per_epoch"] / erm["ms_per_epoch"]
            lines.append(
                f"| {model} | {k} | {erm['ms_per_epoch']:.1f} ({erm['ms_min']:.1f}-{erm['ms_max']:.1f}) | "
                f"{logged['ms_per_epoch']:.1f} | {penalty['ms_per_epoch']:.1f} | "
                f"{fair['ms_per_epoch']:.1f} ({fair['ms_min']:.1f}-{fair['ms_max']:.1f}) | "
                f"{ratio:.2f} | {k + 1} | {'yes' if ratio <= k + 1 else 'no'} | "
                f"{fair['ms_per_epoch'] / logged['ms_per_epoch']:.2f} |")
    met = sum(
        speed.set_index(["model", "method", "k"]).loc[(model, "fairgrad", k), "ms_per_epoch"]
        <= (k + 1) * speed.set_index(["model", "method", "k"]).loc[(model, "erm", 0), "ms_per_epoch"]
        for model in speed["model"].unique() for k in (1, 2, 3))
    lines += ["", f"Target met in {met} of {3 * speed['model'].nunique()} configurations."]
    if load is not None:
        lines += ["", f"One-minute load average: {load[0]:.2f} before, {load[1]:.2f} after the timing (the machine "
                      f"is shared with other work, {os.cpu_count()} cores); rounds vary with it, hence the "
                      "alternation and the medians."]
    lines += ["", "At this size each step is a few small matrix products, so the times are mostly per-operation "
              "overhead (a few microseconds for each torch call and its autograd record), not arithmetic. "
              "FairGrad pays for three things ERM does not: the k fairness surrogates' forward pass (one "
              "`bincount` and one `index_add` over (label, group) cells per attribute, about a dozen small "
              "operations), k more `autograd.grad` calls, and the projection (a (k+1) x (k+1) Gram matrix and a "
              "few Python-level dot products). The last column divides by ERM given the same attributes, which "
              "evaluates the surrogates to log them: it isolates the extra backward passes and the projection, "
              "the cost the target is about; the penalty method computes the same surrogates with a single "
              "backward pass.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Markdown sections
# --------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--speed-epochs", type=int, default=20)
    parser.add_argument("--speed-rounds", type=int, default=9)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)

    data = support2_sepsis()
    print(f"{data.source}: {data.n_rows} rows, {data.positive_rate:.1%} positive", flush=True)
    if not args.skip_accuracy:
        started = time.perf_counter()
        results = run_accuracy(data, range(args.seeds), args.epochs)
        results.attrs["positive_rate"] = data.positive_rate
        minutes = (time.perf_counter() - started) / 60
        figure = pareto_figure(results)
        figure_note = "Figure: no Pareto plot written (--no-write)."
        if not args.no_write:
            args.docs.mkdir(parents=True, exist_ok=True)
            html = args.docs / "fairgrad_support2_pareto.html"
            figure.write_html(html, include_plotlyjs="cdn", full_html=True)
            figure_note = (f"Pareto plot (accuracy against equalized odds difference, one panel per attribute, "
                           f"error bars one std over seeds): [`{html.name}`]({html.name}), a standalone HTML page "
                           "(it loads plotly.js from the plotly CDN when opened).")
            try:
                svg = figure.to_image(format="svg")
            except Exception as exc:  # noqa: BLE001 - kaleido/chromium absent: the table carries the numbers
                print(f"no static image ({type(exc).__name__}); the table holds the numbers", flush=True)
            else:
                (args.docs / "fairgrad_support2_pareto.svg").write_bytes(svg)
                figure_note += "\n\n![Pareto plot](fairgrad_support2_pareto.svg)"
        markdown = results_markdown(data, results, epochs=args.epochs, minutes=minutes, figure_note=figure_note)
        print(markdown)
        if not args.no_write:
            replace_section(args.docs / "RESULTS.md", f"## {RESULTS_SECTION}", markdown, preamble="# Results\n")
            results.to_csv(args.docs / "fairgrad_support2_seeds.csv", index=False, float_format="%.5f")
    if not args.skip_speed:
        load_before = os.getloadavg()[0]
        speed, shape = run_speed(data, epochs=args.speed_epochs, rounds=args.speed_rounds)
        load = (load_before, os.getloadavg()[0])
        markdown = speed_markdown(speed, shape, epochs=args.speed_epochs, rounds=args.speed_rounds, load=load)
        print(markdown)
        if not args.no_write:
            replace_section(args.docs / "BENCHMARKS.md", f"## {SPEED_SECTION}", markdown, preamble="# Benchmarks\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
