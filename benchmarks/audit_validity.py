"""Do the audit's intervals hold their coverage and its gap tests their type-I error? A simulation with known truth.

Every simulated predictions table has the same true rates in every group (prevalence, TPR, FPR), so every
metric's true value is known and every gap is truly 0. Tables mimic an audit of a real model: two sources of
different size, one to three sensitive attributes with skewed group sizes (sex F 60% / M 40%; age A1 8%, A2 27%,
A3 45%, A4 20%; skin tone light 70%, medium 20%, dark 10%), 250 or 600 rows, and two rate settings: moderate
(prevalence 0.3, TPR 0.70, FPR 0.15) and extreme (prevalence 0.3, TPR 0.93, FPR 0.04; rates near 0 and 1, where
the percentile bootstrap is known to fail).

Two methods on the same tables:

* old: the audit before this change, rebuilt here from the same building blocks: percentile bootstrap
  stratified by source x every sensitive attribute, pairwise Wald tests on the bootstrap SE.
Every table also has a score column (Beta-distributed given the label, the same in every group; true AUROC
and 10-bin ECE by numerical integration), so AUROC and ECE intervals and tests are checked too.

* new: ``fairmed_core.fairness.audit`` as it is (Wilson for proportions and for F1 through the Jaccard index,
  Newcombe/MOVER for differences, permutation tests within source).

Reported: coverage of every 95% group interval by metric and denominator band (10-29, 30-99, 100+; the
denominator is the number of cases the metric is a share of), share of zero-width intervals for a rate strictly
between 0 and 1; type-I error of each gap test (raw, per test) and of a Holm-corrected family (any rejection);
power of the pairwise recall test against a true sex gap (TPR 0.75 vs 0.55). Results replace the section
"Audit intervals and gap tests: validity by simulation" of docs/RESULTS.md (or ``--results``).

Run:  .venv/bin/python benchmarks/audit_validity.py            (about 15 minutes on one thread)
      .venv/bin/python benchmarks/audit_validity.py --quick    (smoke run; writes only where --results says)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _report import replace_section  # noqa: E402
from fairmed_core.fairness import SPEC_BY_NAME, audit, holm  # noqa: E402
from fairmed_core.fairness._bootstrap import (  # noqa: E402
    bootstrap_standard_error,
    multinomial_rows,
    percentile_interval,
)
from fairmed_core.fairness._calibration import (  # noqa: E402
    N_FINE_BINS,
    bootstrap_partition,
    calibration_cells,
    exact_auroc_by_group,
    exact_ece,
)
from fairmed_core.fairness._counts import (  # noqa: E402
    OVERALL_ATTRIBUTE,
    build_layout,
    stratum_confusion_counts,
    unit_counts,
)
from fairmed_core.fairness._encode import encode_table  # noqa: E402
from fairmed_core.fairness._gaps import wald_p_value  # noqa: E402
from fairmed_core.fairness._metrics import CONFUSION_METRICS, confusion_metrics  # noqa: E402

SECTION = "## Audit intervals and gap tests: validity by simulation"
ATTRIBUTES = {
    "sex": (("F", "M"), (0.6, 0.4)),
    "age_group": (("A1", "A2", "A3", "A4"), (0.08, 0.27, 0.45, 0.20)),
    "skin_tone": (("light", "medium", "dark"), (0.7, 0.2, 0.1)),
}
SOURCES = (("source_a", 0.6), ("source_b", 0.4))
METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "fpr", "fdr", "selection_rate", "auroc", "ece")
CONFUSION = METRICS[:8]
SCORE_BETA = {1: (4.0, 2.0), 0: (2.0, 3.5)}
"""Score | label ~ Beta(a, b), the same in every group: true AUROC and ECE follow by numerical integration."""
BANDS = ((10, 29, "10-29"), (30, 99, "30-99"), (100, 10**9, "100+"))


@dataclasses.dataclass(frozen=True)
class Truth:
    """Rates shared by every group: the null hypothesis of every gap test holds."""

    name: str
    prevalence: float
    tpr: float
    fpr: float

    def metric(self, name: str) -> float:
        if name in ("auroc", "ece"):
            return _score_truth(self.prevalence)[name]
        pi, tpr, fpr = self.prevalence, self.tpr, self.fpr
        tp, fn, fp, tn = pi * tpr, pi * (1 - tpr), (1 - pi) * fpr, (1 - pi) * (1 - fpr)
        return {
            "accuracy": tp + tn,
            "precision": tp / (tp + fp),
            "recall": tpr,
            "specificity": 1 - fpr,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "fpr": fpr,
            "fdr": fp / (tp + fp),
            "npv": tn / (tn + fn),
            "selection_rate": tp + fp,
        }[name]


@functools.lru_cache(maxsize=None)
def _score_truth(prevalence: float) -> dict[str, float]:
    """Population AUROC = P(S+ > S-) and 10-bin ECE of the score model ``SCORE_BETA``."""
    from scipy import integrate, stats

    positive, negative = stats.beta(*SCORE_BETA[1]), stats.beta(*SCORE_BETA[0])
    auroc = integrate.quad(lambda t: negative.cdf(t) * positive.pdf(t), 0.0, 1.0)[0]
    ece = 0.0
    for k in range(10):
        low, high = k / 10, (k + 1) / 10
        mass_pos = prevalence * (positive.cdf(high) - positive.cdf(low))
        mass_neg = (1 - prevalence) * (negative.cdf(high) - negative.cdf(low))
        mean_score = (
            prevalence * integrate.quad(lambda t: t * positive.pdf(t), low, high)[0]
            + (1 - prevalence) * integrate.quad(lambda t: t * negative.pdf(t), low, high)[0]
        )
        ece += abs(mass_pos - mean_score)  # P(bin) * |P(y=1 | bin) - E[score | bin]|
    return {"auroc": auroc, "ece": ece}


TRUTHS = (Truth("moderate", 0.3, 0.70, 0.15), Truth("extreme", 0.3, 0.93, 0.04))


def simulate(n_rows: int, n_attributes: int, truth: Truth, rng, *, tpr_by_sex=None) -> pd.DataFrame:
    """One predictions table; ``tpr_by_sex`` ({"F": .., "M": ..}) plants a true recall gap for the power study."""
    frame = {"source": rng.choice([s for s, _ in SOURCES], n_rows, p=[p for _, p in SOURCES])}
    for name in list(ATTRIBUTES)[:n_attributes]:
        levels, shares = ATTRIBUTES[name]
        frame[name] = rng.choice(levels, n_rows, p=shares)
    y = (rng.random(n_rows) < truth.prevalence).astype(int)
    tpr = np.full(n_rows, truth.tpr)
    if tpr_by_sex is not None:
        tpr = np.where(frame["sex"] == "F", tpr_by_sex["F"], tpr_by_sex["M"])
    pred = np.where(y == 1, rng.random(n_rows) < tpr, rng.random(n_rows) < truth.fpr).astype(int)
    a = np.where(y == 1, SCORE_BETA[1][0], SCORE_BETA[0][0])
    b = np.where(y == 1, SCORE_BETA[1][1], SCORE_BETA[0][1])
    return pd.DataFrame({"y": y, "pred": pred, "score": rng.beta(a, b), **frame})


def _denominators(counts: np.ndarray) -> np.ndarray:
    """Per unit and confusion metric, the number of cases the metric is a share of (group size for F1)."""
    flat = counts.reshape(counts.shape[0], -1)
    out = np.repeat(flat.sum(axis=1)[:, None], len(CONFUSION_METRICS), axis=1)
    for column, name in enumerate(CONFUSION_METRICS):
        spec = SPEC_BY_NAME[name]
        if spec.proportion:
            out[:, column] = flat[:, list(spec.denominator_cells)].sum(axis=1)
    return out


def _old_score_rows(table, block, n_boot: int, rng, group_rows: list, pair_rows: list):
    """AUROC/ECE rows of the old audit for one block: per-partition binned bootstrap, Wald tests."""
    in_scope = np.ones(table.n_rows, dtype=bool) if block.scope_index is None else table.source_codes == block.scope_index
    group = table.attributes[block.attribute_index].codes[in_scope]
    n_groups = len(block.groups)
    score, target = table.score[in_scope], table.calibration_target[in_scope]
    counts, sums = calibration_cells(score, target, group, n_groups, n_fine=N_FINE_BINS)
    auroc = exact_auroc_by_group(score, target, group, n_groups)
    ece = exact_ece(counts, sums)
    draws = bootstrap_partition(counts, sums, auroc, float("nan"), n_boot=n_boot, rng=rng).groups
    low, high = percentile_interval(draws.reshape(n_boot, -1), confidence=0.95)
    low, high = low.reshape(n_groups, 2), high.reshape(n_groups, 2)
    sizes = counts.sum(axis=1)
    estimates = np.stack([auroc, ece], axis=1)
    for column, metric in enumerate(("auroc", "ece")):
        for g, name in enumerate(block.groups):
            group_rows.append((block.scope, block.attribute, name, metric, estimates[g, column], low[g, column],
                               high[g, column], int(sizes[g])))  # fmt: skip
        present = [g for g in range(n_groups) if sizes[g] > 0]
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                difference = estimates[a, column] - estimates[b, column]
                se, _ = bootstrap_standard_error((draws[:, a, column] - draws[:, b, column])[:, None])
                pair_rows.append((block.scope, block.attribute, metric, float(wald_p_value(difference, se[0]))))
    return group_rows, pair_rows


def old_method(frame: pd.DataFrame, sensitive: list[str], *, n_boot: int, seed: int):
    """The audit before this change: strata = source x every attribute, percentile bootstrap, Wald tests.

    AUROC/ECE were already resampled per reported partition (``bootstrap_partition``) and are reproduced with
    that function; their pairwise tests were Wald tests on the bootstrap SE, as for every metric.
    Returns (group rows, pairwise rows) as DataFrames shaped like the new audit's frames.
    """
    table = encode_table(
        frame, label_col="y", pred_col="pred", sensitive=sensitive, score_col="score", source_col="source",
        positive_label=None, intersect=False, source_name="<simulation>",
    )  # fmt: skip
    layout = build_layout(table)
    strata = stratum_confusion_counts(table, layout)
    counts = unit_counts(layout, strata).reshape(layout.n_units, 2, 2)
    estimates = confusion_metrics(counts, binary=True)
    rng = np.random.default_rng(seed)
    draws = confusion_metrics(
        unit_counts(layout, multinomial_rows(strata, n_boot=n_boot, rng=rng)).reshape(n_boot, layout.n_units, 2, 2),
        binary=True,
    )
    low, high = percentile_interval(draws.reshape(n_boot, -1), confidence=0.95)
    low, high = low.reshape(estimates.shape), high.reshape(estimates.shape)
    denominators = _denominators(counts)
    group_rows, pair_rows = [], []
    for block in layout.blocks:
        if block.attribute == OVERALL_ATTRIBUTE:
            continue
        units = np.arange(block.units.start, block.units.stop)
        group_rows, pair_rows = _old_score_rows(table, block, n_boot, rng, group_rows, pair_rows)
        for column, metric in enumerate(CONFUSION_METRICS):
            for offset, group in enumerate(block.groups):
                unit = units[offset]
                group_rows.append((block.scope, block.attribute, group, metric, estimates[unit, column],
                                   low[unit, column], high[unit, column], denominators[unit, column]))  # fmt: skip
            present = [u for u in units if counts[u].sum() > 0]
            for i, a in enumerate(present):
                for b in present[i + 1 :]:
                    difference = estimates[a, column] - estimates[b, column]
                    se, _ = bootstrap_standard_error((draws[:, a, column] - draws[:, b, column])[:, None])
                    pair_rows.append((block.scope, block.attribute, metric, float(wald_p_value(difference, se[0]))))
    groups = pd.DataFrame(
        group_rows, columns=["source", "attribute", "group", "metric", "estimate", "ci_low", "ci_high", "denominator"]
    )
    pairs = pd.DataFrame(pair_rows, columns=["source", "attribute", "metric", "p_value_raw"])
    return groups, pairs


def new_method(frame: pd.DataFrame, sensitive: list[str], *, n_boot: int, seed: int, interval_method="wilson"):
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=sensitive, source_col="source", score_col="score",
        metrics=METRICS,
        n_boot=n_boot, seed=seed, interval_method=interval_method,
    )  # fmt: skip
    groups = result.groups_frame()
    groups = groups[groups.attribute != OVERALL_ATTRIBUTE]
    gaps = result.gaps_frame()
    return groups, gaps[gaps.comparison == "pairwise"], gaps[gaps.comparison == "max-min"]


def _band(denominator: int) -> str | None:
    for low, high, name in BANDS:
        if low <= denominator <= high:
            return name
    return None


def _coverage_records(groups: pd.DataFrame, truth: Truth, method: str, setting: dict) -> list[dict]:
    records = []
    for row in groups.itertuples(index=False):
        band = _band(int(row.denominator))
        if band is None or np.isnan(row.estimate):
            continue
        value = truth.metric(row.metric)
        interior = 0.0 < row.estimate < 1.0
        records.append({
            **setting, "method": method, "metric": row.metric, "band": band,
            "covered": bool(row.ci_low <= value <= row.ci_high) if not np.isnan(row.ci_low) else np.nan,
            "zero_width": bool(interior and row.ci_high - row.ci_low <= 1e-12),
            "interior": interior,
        })  # fmt: skip
    return records


def _family_rejections(pairs: pd.DataFrame) -> list[bool]:
    """Per (source, attribute, metric) family with two or more tests: any Holm-corrected rejection."""
    out = []
    for _, family in pairs.groupby(["source", "attribute", "metric"]):
        p = family.p_value_raw.to_numpy(dtype=float)
        if (~np.isnan(p)).sum() >= 2:
            out.append(bool((holm(p) < 0.05).any()))
    return out


def run_null_study(replicates: int, n_boot: int, seed: int, *, methods=("old", "new")):
    """Coverage and type-I records over every (rows, attributes, truth) setting."""
    rng = np.random.default_rng(seed)
    coverage, type_one, family = [], [], []
    for n_rows in (250, 600):
        for n_attributes in (1, 2, 3):
            for truth in TRUTHS:
                setting = {"rows": n_rows, "attributes": n_attributes, "truth": truth.name}
                sensitive = list(ATTRIBUTES)[:n_attributes]
                for _ in range(replicates):
                    frame = simulate(n_rows, n_attributes, truth, rng)
                    audit_seed = int(rng.integers(1 << 30))
                    if "old" in methods:
                        groups, pairs = old_method(frame, sensitive, n_boot=n_boot, seed=audit_seed)
                        coverage += _coverage_records(groups, truth, "old", setting)
                        type_one += [{**setting, "method": "old", "test": "pairwise", "metric": m, "reject": p < 0.05}
                                     for m, p in zip(pairs.metric, pairs.p_value_raw) if not np.isnan(p)]  # fmt: skip
                        family += [{**setting, "method": "old", "reject": r} for r in _family_rejections(pairs)]
                    if "new" in methods:
                        groups, pairs, ranges = new_method(frame, sensitive, n_boot=n_boot, seed=audit_seed)
                        coverage += _coverage_records(groups, truth, "new", setting)
                        for test, rows in (("pairwise", pairs), ("max-min", ranges)):
                            type_one += [{**setting, "method": "new", "test": test, "metric": m, "reject": p < 0.05}
                                         for m, p in zip(rows.metric, rows.p_value_raw) if not np.isnan(p)]  # fmt: skip
                        family += [{**setting, "method": "new", "reject": r} for r in _family_rejections(pairs)]
    return pd.DataFrame(coverage), pd.DataFrame(type_one), pd.DataFrame(family)


def run_power_study(replicates: int, n_boot: int, seed: int) -> pd.DataFrame:
    """Rejection rate of the pairwise F-vs-M recall test in each source against a true gap (0.75 vs 0.55)."""
    rng = np.random.default_rng(seed)
    truth = Truth("moderate", 0.3, 0.70, 0.15)
    rows = []
    for n_rows in (250, 600, 1500):
        for _ in range(replicates):
            frame = simulate(n_rows, 1, truth, rng, tpr_by_sex={"F": 0.75, "M": 0.55})
            audit_seed = int(rng.integers(1 << 30))
            _, old_pairs = old_method(frame, ["sex"], n_boot=n_boot, seed=audit_seed)
            _, new_pairs, _ = new_method(frame, ["sex"], n_boot=n_boot, seed=audit_seed)
            for method, pairs in (("old", old_pairs), ("new", new_pairs)):
                recall = pairs[(pairs.metric == "recall") & (pairs.source != "ALL")]
                rows += [{"rows": n_rows, "method": method, "reject": p < 0.05} for p in recall.p_value_raw]
    return pd.DataFrame(rows)


def _mc_se(p: float, n: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)))


def coverage_table(coverage: pd.DataFrame) -> pd.DataFrame:
    """One row per (metric, denominator band): coverage and interval count per method, zero-width shares."""
    defined = coverage.dropna(subset=["covered"])
    rows = []
    for metric in METRICS:
        for _, _, band in BANDS:
            row = {"metric": metric, "band": band}
            for method in ("old", "new"):
                cell = defined[(defined.metric == metric) & (defined.band == band) & (defined.method == method)]
                inside = coverage[(coverage.metric == metric) & (coverage.band == band)
                                  & (coverage.method == method) & coverage.interior]
                row[f"coverage_{method}"] = cell.covered.mean() if len(cell) else float("nan")
                row[f"intervals_{method}"] = len(cell)
                row[f"zero_width_{method}"] = inside.zero_width.mean() if len(inside) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(coverage, type_one, family, power, *, replicates: int, n_boot: int, seconds: float) -> str:
    lines = [
        SECTION,
        "",
        f"Produced by `benchmarks/audit_validity.py` ({replicates} simulated tables per setting x 12 settings: "
        f"250 or 600 rows, 1-3 attributes, moderate or extreme rates; {n_boot} resamples/permutations per audit; "
        f"{seconds / 60:.1f} min on one thread). Every group has the same true rates, so every true gap is 0 and "
        "every metric's true value is known. *old* = the audit before this change (percentile bootstrap "
        "stratified by source x every attribute, Wald tests on the bootstrap SE); *new* = the audit now "
        "(Wilson intervals for proportions and for F1 through the Jaccard index, permutation tests "
        "within source; bootstrap of the reported partition only for AUROC, ECE and summaries). Denominator = the cases a metric is a share of (positives for recall, predicted "
        "positives for precision, the group for accuracy and F1).",
        "",
        "### Coverage of 95% group intervals (target >= 0.93 for denominators of 30+, >= 0.90 for 10-29)",
        "",
        "| metric | denominator | old coverage | new coverage | intervals (new) | zero-width, old | zero-width, new |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in coverage_table(coverage).itertuples(index=False):
        lines.append(
            f"| {row.metric} | {row.band} | {row.coverage_old:.3f} | {row.coverage_new:.3f} | {row.intervals_new} | "
            f"{row.zero_width_old:.3f} | {row.zero_width_new:.3f} |"
        )
    closed_form = coverage[~coverage.metric.isin(["auroc", "ece"])].dropna(subset=["covered"])
    by_truth = closed_form.groupby(["truth", "band", "method"]).covered.mean().unstack("method")
    lines += ["", "Coverage by true-rate setting (the rates and F1 together; AUROC and ECE are in the table above):", "",
              "| rates | denominator | old | new |", "|---|---|---|---|"]  # fmt: skip
    for (truth, band), row in by_truth.iterrows():
        lines.append(f"| {truth} | {band} | {row.get('old', np.nan):.3f} | {row.get('new', np.nan):.3f} |")
    lines += ["", "### Type-I error of the gap tests at alpha = 0.05 (every true gap is 0)", "",
              "| metric | old pairwise (Wald) | new pairwise (permutation) | new max-min (permutation) | tests (new pairwise) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for metric in METRICS:
        def rate(method, test):
            rows = type_one[(type_one.method == method) & (type_one.test == test) & (type_one.metric == metric)]
            return rows.reject.mean() if len(rows) else float("nan"), len(rows)

        old, _ = rate("old", "pairwise")
        new, n_new = rate("new", "pairwise")
        rng_rate, _ = rate("new", "max-min")
        lines.append(f"| {metric} | {old:.3f} | {new:.3f} | {rng_rate:.3f} | {n_new} |")
    by_rows = type_one[type_one.test == "pairwise"].groupby(["rows", "method"]).reject.mean().unstack("method")
    lines += ["", "Pairwise type-I error by table size: " + "; ".join(
        f"{rows} rows: old {row.get('old', np.nan):.3f}, new {row.get('new', np.nan):.3f}" for rows, row in by_rows.iterrows()
    ) + "."]  # fmt: skip
    fam = family.groupby("method").reject.agg(["mean", "size"])
    lines += [
        "",
        "Family-wise error of Holm-corrected pairwise tests (share of (source, attribute, metric) families with any "
        "rejection; Holm promises at most 0.05): "
        + "; ".join(f"{m} {row['mean']:.3f} over {int(row['size'])} families" for m, row in fam.iterrows())
        + ".",
        "",
        "### Power of the pairwise recall test (true TPR 0.75 for F vs 0.55 for M, per source)",
        "",
        "| rows | old (Wald) | new (permutation) |",
        "|---|---|---|",
    ]
    for rows, row in power.groupby(["rows", "method"]).reject.mean().unstack("method").iterrows():
        lines.append(f"| {rows} | {row.get('old', np.nan):.3f} | {row.get('new', np.nan):.3f} |")
    worst = coverage[coverage.method == "new"].dropna(subset=["covered"]).groupby(["metric", "band", "truth"]).covered.agg(["mean", "size"])
    worst = worst[worst["size"] >= 50].sort_values("mean").head(3)
    lines += ["", "Lowest new-method coverage in any (metric, denominator band, rate setting) cell with 50+ intervals: "
              + "; ".join(f"{m} {b} {t}: {row['mean']:.3f} (n = {int(row['size'])}, MC SE {_mc_se(row['mean'], int(row['size'])):.3f})"
                          for (m, b, t), row in worst.iterrows()) + "."]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=120, help="simulated tables per setting")
    parser.add_argument("--n-boot", type=int, default=400, help="resamples and permutations per audit")
    parser.add_argument("--power-replicates", type=int, default=150)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="smoke run (4 tables per setting)")
    args = parser.parse_args(argv)
    if args.quick:
        args.replicates, args.power_replicates, args.n_boot = 4, 4, 100
    start = time.perf_counter()
    coverage, type_one, family = run_null_study(args.replicates, args.n_boot, args.seed)
    power = run_power_study(args.power_replicates, args.n_boot, args.seed + 1)
    text = markdown(coverage, type_one, family, power, replicates=args.replicates, n_boot=args.n_boot,
                    seconds=time.perf_counter() - start)  # fmt: skip
    print(text)
    if not args.quick or "--results" in (argv or sys.argv):
        replace_section(args.results, SECTION, text)


if __name__ == "__main__":
    main()
