"""Does the model's answer depend on a sensitive attribute? Statistical tests of counterfactual invariance.

Three tools, from the most direct to the one that needs no counterfactual at all (DESIGN.md, section 6):

* :func:`flip_table` -- pairs of (factual, counterfactual) answers: per group and overall, how often the
  parsed answer flips, with a Wilson interval and McNemar's test of "flips in both directions are equally
  likely", Holm-corrected across the groups of each attribute.
* :func:`counterfactual_accuracy` -- the empirical counterfactual accuracy ECA = mean 1[f(x) = f(x_cf)]
  (Ma, Quinzan, Willem & Bauer, arXiv 2504.19621), the ground truth of invariance on the synthetic
  benchmark, where every case has its true counterfactual.
* :func:`conditional_independence_test` -- the paper's test of H0: f(X) independent of A given Z, from
  observational data only: a latent Z of each image, its attribute A and the model's binary prediction.

Answers are compared as given (the answer parser already normalises them). A missing answer (None, NaN or an
empty string: what :func:`fairmed_core.models.answers.parse_completion` yields when it finds no answer) is a
format failure, counted as an outcome of its own, ``"(format failure)"``: answer -> failure is a flip, failure
-> failure is not. A reviewer wants to see a model that stops answering when the patient's sex changes, and
dropping those pairs would hide exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats

from fairmed_core.counterfactual.records import CounterfactualAccuracy, FlipRow
from fairmed_core.data.schema import ALL
from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import MISSING_GROUP, holm

__all__ = [
    "FORMAT_FAILURE",
    "OVERALL",
    "CITestResult",
    "CounterfactualAccuracy",
    "FlipRow",
    "FlipTable",
    "HeadInfo",
    "conditional_independence_test",
    "counterfactual_accuracy",
    "flip_table",
    "mcnemar_p_values",
    "wilson_interval",
]

FORMAT_FAILURE = "(format failure)"
"""The outcome of a pair side whose answer could not be parsed (None, NaN or empty)."""

OVERALL = ALL
"""Attribute and group name of the row that pools every pair."""

McNemarTest = Literal["exact", "mid-p", "chi2-cc"]

# Answer pairs that name a positive class without being told which one: the first value of each pair is
# the positive one. Anything else needs ``positive=`` before a 2x2 table (and McNemar) can be formed.
_KNOWN_BINARY = (("yes", "no"), ("true", "false"), ("positive", "negative"), ("abnormal", "normal"))


# --------------------------------------------------------------------------------------------------------
# Small statistics
# --------------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (NaN, NaN) when ``n`` is 0.

    Chosen over the Wald interval because flip rates are often near 0, where Wald collapses to a point
    and undercovers; Wilson stays inside [0, 1] and keeps close to nominal coverage for small n.
    """
    if n < 0 or successes < 0 or successes > n:
        raise FairMedInputError(f"need 0 <= successes <= n, got {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise FairMedInputError(f"confidence must lie in (0, 1), got {confidence}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    # Clip rounding only: at p = 0 or 1 the bound is exactly 0 or 1 in exact arithmetic.
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_p_values(b: int, c: int) -> dict[str, float]:
    """Two-sided McNemar p-values from the discordant counts ``b`` and ``c`` of a paired 2x2 table.

    * ``exact``: under H0 each discordant pair goes either way with probability 1/2, so b ~ Binomial(b + c,
      1/2); the p-value is scipy's two-sided binomial test (for p = 1/2 that is 2 P(X <= min(b, c)), capped
      at 1). Conservative for small counts.
    * ``mid-p``: the exact p-value minus the probability of the observed count, 2 P(X <= m) - P(X = m) with
      m = min(b, c); Fagerland, Lydersen & Laake (2013) recommend it: close to nominal size, less conservative.
    * ``chi2-cc``: the classic statistic (max(0, |b - c| - 1))^2 / (b + c) with Edwards' continuity
      correction on 1 degree of freedom; an approximation for large b + c, kept for comparison with other tools.

    With no discordant pair there is no evidence either way and every p-value is 1.
    """
    n = b + c
    if n == 0:
        return {"exact": 1.0, "mid-p": 1.0, "chi2-cc": 1.0}
    low = min(b, c)
    exact = float(stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue)
    mid = float(min(1.0, 2.0 * stats.binom.cdf(low, n, 0.5) - stats.binom.pmf(low, n, 0.5)))
    chi2 = max(0.0, abs(b - c) - 1.0) ** 2 / n
    return {"exact": exact, "mid-p": mid, "chi2-cc": float(stats.chi2.sf(chi2, 1))}


def _outcome(value: Any) -> Any:
    """One side of a pair as a comparable outcome: the answer itself, or FORMAT_FAILURE when there is none."""
    if value is None:
        return FORMAT_FAILURE
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return FORMAT_FAILURE
    if value is pd.NA or value is pd.NaT:
        return FORMAT_FAILURE
    if isinstance(value, str) and not value.strip():
        return FORMAT_FAILURE
    return value


def _outcomes(values: Any, *, what: str) -> list[Any]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise FairMedInputError(f"{what} must be a sequence of answers, got {type(values).__name__}")
    return [_outcome(v) for v in (values.tolist() if hasattr(values, "tolist") else list(values))]


def _binary_positive(outcomes: set, positive: Any) -> tuple[Any, str]:
    """The positive outcome when the valid answers form a binary task, else (None, why not)."""
    valid = {o for o in outcomes if o != FORMAT_FAILURE}
    if positive is not None:
        others = valid - {positive}
        if len(others) > 1:
            return None, (f"McNemar needs a binary answer: besides the positive {positive!r} the answers "
                          f"take {len(others)} values")
        return positive, ""
    if len(valid) > 2:
        return None, f"McNemar needs a binary answer; the answers take {len(valid)} values"
    if valid and all(isinstance(o, (bool, int, float)) for o in valid) and valid <= {0, 1}:
        return 1, ""
    if valid and all(isinstance(o, str) for o in valid):
        lowered = {o.lower(): o for o in valid}
        if len(lowered) == len(valid):
            for yes, no in _KNOWN_BINARY:
                if set(lowered) <= {yes, no}:
                    return lowered.get(yes, yes), ""
    if not valid:
        return None, "no pair has a parsed answer on both sides"
    return None, (f"cannot tell which of {sorted(map(str, valid))} is the positive answer; "
                  "pass positive= to get the 2x2 table and McNemar's test")


# --------------------------------------------------------------------------------------------------------
# Flip table
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlipTable:
    """Per-group flip rates and McNemar tests; ``notes`` say what was left out or could not be tested."""

    rows: tuple[FlipRow, ...]
    notes: tuple[str, ...]
    factual_col: str
    counterfactual_col: str
    group_cols: tuple[str, ...]
    positive: Any
    test: str
    confidence: float

    def frame(self) -> pd.DataFrame:
        """One row per group, overall first, then attribute by attribute."""
        columns = [f.name for f in fields(FlipRow)]
        return pd.DataFrame([asdict(row) for row in self.rows], columns=columns)

    def row(self, attribute: str, group: str) -> FlipRow:
        for row in self.rows:
            if row.attribute == attribute and row.group == str(group):
                return row
        raise KeyError((attribute, group))


def _flip_row(attribute: str, group: str, factual: list, counterfactual: list, *, positive: Any,
              binary_note: str, test: str, confidence: float) -> FlipRow:
    n = len(factual)
    flips = sum(f != c for f, c in zip(factual, counterfactual, strict=True))
    failures = sum(f == FORMAT_FAILURE or c == FORMAT_FAILURE for f, c in zip(factual, counterfactual, strict=True))
    low, high = wilson_interval(flips, n, confidence=confidence)
    if positive is None:
        b = c = None
        p = {"exact": math.nan, "mid-p": math.nan, "chi2-cc": math.nan}
        note = binary_note
    else:
        both = [(f, cf) for f, cf in zip(factual, counterfactual, strict=True)
                if f != FORMAT_FAILURE and cf != FORMAT_FAILURE]
        b = sum(f == positive and cf != positive for f, cf in both)
        c = sum(f != positive and cf == positive for f, cf in both)
        p = mcnemar_p_values(b, c)
        note = "no discordant pair: nothing to test, p = 1" if b + c == 0 else ""
    return FlipRow(attribute=attribute, group=group, n_pairs=n, flips=flips, flip_rate=flips / n, ci_low=low,
                   ci_high=high, n_format_failure=failures, b=b, c=c, p_exact=p["exact"], p_midp=p["mid-p"],
                   p_chi2_cc=p["chi2-cc"], p_value=p[test], p_value_holm=math.nan, note=note)


def flip_table(
    pairs: pd.DataFrame,
    *,
    factual_col: str = "answer",
    counterfactual_col: str = "counterfactual_answer",
    group_cols: Sequence[str] = ("sex", "age_group"),
    positive: Any = None,
    test: McNemarTest = "exact",
    confidence: float = 0.95,
) -> FlipTable:
    """Flip rate of the parsed answer between factual and counterfactual, overall and per group.

    ``pairs`` holds one row per (case, counterfactual) pair; put one intervention per table (e.g. only
    sex-flipped counterfactuals), or add the target attribute to ``group_cols``. Every column of
    ``group_cols`` is one attribute; its groups are tested separately and the McNemar p-values of one
    attribute form one Holm family, as in the audit's gap tests. A missing group value is the group "UNK".

    McNemar's test (two-sided) asks whether flips go one way more than the other: ``b`` positive -> negative
    against ``c`` negative -> positive. It needs a binary answer; ``positive`` names the positive answer and
    is inferred for yes/no, true/false, positive/negative, normal/abnormal and 0/1 answers. ``test`` picks
    which variant fills ``p_value`` (see :func:`mcnemar_p_values`); all three are reported. Note that a
    model can flip often and symmetrically (b = c): the flip rate shows that, McNemar does not.

    Raises FairMedInputError for a missing column, a table that is not a DataFrame, or no pairs.
    """
    if not isinstance(pairs, pd.DataFrame):
        raise FairMedInputError(f"expected a pandas DataFrame of answer pairs, got {type(pairs).__name__}")
    if test not in ("exact", "mid-p", "chi2-cc"):
        raise FairMedInputError(f"unknown McNemar variant {test!r}", hint="use 'exact', 'mid-p' or 'chi2-cc'")
    if not 0.0 < confidence < 1.0:
        raise FairMedInputError(f"confidence must lie in (0, 1), got {confidence}")
    group_cols = (group_cols,) if isinstance(group_cols, str) else tuple(group_cols)
    roles = {"factual answer": factual_col, "counterfactual answer": counterfactual_col}
    roles.update({f"group #{i + 1}": column for i, column in enumerate(group_cols)})
    for role, column in roles.items():
        if column not in pairs.columns:
            raise FairMedInputError(
                f"the {role} column is missing; columns present: {', '.join(map(str, pairs.columns)) or '(none)'}",
                column=column,
            )
    if len(set(roles.values())) != len(roles):
        raise FairMedInputError(f"a column is used for two roles: {roles}")
    if len(pairs) == 0:
        raise FairMedInputError("the pair table is empty", hint="generate counterfactuals first")

    factual = _outcomes(pairs[factual_col], what=factual_col)
    counterfactual = _outcomes(pairs[counterfactual_col], what=counterfactual_col)
    positive, binary_note = _binary_positive(set(factual) | set(counterfactual), positive)
    build = dict(positive=positive, binary_note=binary_note, test=test, confidence=confidence)

    notes: list[str] = []
    if binary_note:
        notes.append(binary_note)
    n_failed = sum(f == FORMAT_FAILURE or c == FORMAT_FAILURE for f, c in zip(factual, counterfactual, strict=True))
    if n_failed:
        notes.append(f"{n_failed} pair(s) have a format failure on at least one side: counted as an outcome "
                     f"'{FORMAT_FAILURE}' in the flip rate, left out of McNemar's 2x2 table")

    overall = _flip_row(OVERALL, OVERALL, factual, counterfactual, **build)
    rows = [replace(overall, p_value_holm=overall.p_value)]
    for column in group_cols:
        series = pairs[column]
        missing = series.isna().to_numpy()
        if missing.any():
            notes.append(f"{int(missing.sum())} pair(s) without a value of {column!r} form the group "
                         f"{MISSING_GROUP!r}")
        labels = np.where(missing, MISSING_GROUP, series.astype(str).to_numpy())
        # Categorical columns may declare groups that have no pair: they are listed, not tested.
        declared = [str(v) for v in series.cat.categories] if isinstance(series.dtype, pd.CategoricalDtype) else []
        present = list(dict.fromkeys(labels.tolist()))
        ordered = [g for g in declared if g in present] + sorted(g for g in present if g not in declared)
        empty = [g for g in declared if g not in present]
        if empty:
            notes.append(f"{column}: group(s) {', '.join(empty)} have no pairs and are omitted")
        family = []
        for group in ordered:
            index = np.flatnonzero(labels == group)
            family.append(_flip_row(column, group, [factual[i] for i in index],
                                    [counterfactual[i] for i in index], **build))
        adjusted = holm([row.p_value for row in family])
        rows.extend(replace(row, p_value_holm=float(p)) for row, p in zip(family, adjusted, strict=True))
    return FlipTable(rows=tuple(rows), notes=tuple(notes), factual_col=factual_col,
                     counterfactual_col=counterfactual_col, group_cols=group_cols, positive=positive, test=test,
                     confidence=confidence)


# --------------------------------------------------------------------------------------------------------
# Counterfactual accuracy
# --------------------------------------------------------------------------------------------------------


def counterfactual_accuracy(
    factual_answers: Sequence[Any] | np.ndarray | pd.Series,
    counterfactual_answers: Sequence[Any] | np.ndarray | pd.Series,
    *,
    confidence: float = 0.95,
) -> CounterfactualAccuracy:
    """Empirical counterfactual accuracy ECA = mean 1[f(x) = f(x_cf)] (arXiv 2504.19621), i.e. 1 - flip rate.

    1 means the answer never changed under the intervention. On the synthetic benchmark, where ``x_cf`` is
    the true counterfactual, this is the ground truth that :func:`conditional_independence_test` estimates.
    """
    factual = _outcomes(factual_answers, what="factual answers")
    counterfactual = _outcomes(counterfactual_answers, what="counterfactual answers")
    if len(factual) != len(counterfactual):
        raise FairMedInputError(f"{len(factual)} factual but {len(counterfactual)} counterfactual answers",
                                hint="pass one counterfactual answer per factual answer, in the same order")
    if not factual:
        raise FairMedInputError("no answers given")
    agree = sum(f == c for f, c in zip(factual, counterfactual, strict=True))
    failures = sum(f == FORMAT_FAILURE or c == FORMAT_FAILURE for f, c in zip(factual, counterfactual, strict=True))
    low, high = wilson_interval(agree, len(factual), confidence=confidence)
    return CounterfactualAccuracy(eca=agree / len(factual), ci_low=low, ci_high=high, n=len(factual),
                                  n_agree=agree, n_format_failure=failures, confidence=confidence)


# --------------------------------------------------------------------------------------------------------
# Conditional-independence test (arXiv 2504.19621)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadInfo:
    """One fitted MLP: ``g[a=...]`` (fit on train cases with that attribute value) or ``h`` (all train cases)."""

    name: str
    attribute_value: str | None
    n_train: int
    n_positive: int
    final_loss: float  # mean BCE on its training cases after the last epoch


@dataclass(frozen=True)
class CITestResult:
    """Paired t-test of u_i = yhat_i g(A_i, Z_i) against v_i = yhat_i h(Z_i) on the test split.

    ``statistic`` is scipy's ``ttest_rel(u, v)`` t (positive when u exceeds v on average) and ``p_value``
    its p-value for ``alternative`` ("greater" or "two-sided"). A small p-value says the predictions
    depend on the attribute beyond what the latent explains. ``note`` explains a result that did not
    come from a t-test (constant predictions) or one that needs care.
    """

    statistic: float
    p_value: float
    n_train: int
    n_test: int
    mean_u: float
    mean_v: float
    heads: tuple[HeadInfo, ...]
    attribute_values: tuple[str, ...]
    alternative: str
    note: str

    @property
    def mean_difference(self) -> float:
        return self.mean_u - self.mean_v


def _as_latents(latents: Any) -> np.ndarray:
    if isinstance(latents, torch.Tensor):  # e.g. straight from an encoder
        latents = latents.detach().cpu().numpy()
    try:
        z = np.asarray(latents, dtype=float)
    except (TypeError, ValueError) as error:
        raise FairMedInputError(f"latents must be numbers: {error}") from None
    if z.ndim != 2:
        raise FairMedInputError(f"latents must be a 2-D array (n cases, d dimensions), got shape {z.shape}",
                                hint="for a single latent dimension use z.reshape(-1, 1)")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise FairMedInputError("latents contain NaN or infinite values", row=int(np.flatnonzero(bad)[0]))
    return z


def _as_predictions(predictions: Any, n: int) -> np.ndarray:
    raw = pd.Series(np.asarray(predictions, dtype=object).ravel())
    if len(raw) != n:
        raise FairMedInputError(f"{n} latents but {len(raw)} predictions",
                                hint="pass one prediction per latent row, in the same order")
    numeric = pd.to_numeric(raw.map(lambda v: int(v) if isinstance(v, (bool, np.bool_)) else v), errors="coerce")
    bad = ~numeric.isin([0, 1]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FairMedInputError(f"predictions must be 0/1, got {raw.iloc[row]!r}", row=row,
                                hint="binarise the model's answer first, e.g. answer == 'yes'")
    return numeric.to_numpy(dtype=float)


def _as_attribute(attribute: Any, n: int) -> np.ndarray:
    raw = pd.Series(np.asarray(attribute, dtype=object).ravel())
    if len(raw) != n:
        raise FairMedInputError(f"{n} latents but {len(raw)} attribute values",
                                hint="pass one attribute value per latent row, in the same order")
    missing = raw.isna().to_numpy()
    if missing.any():
        raise FairMedInputError("the attribute is missing", row=int(np.flatnonzero(missing)[0]),
                                hint="drop cases without the attribute, or give them their own group")
    return raw.astype(str).to_numpy()


def _stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean train mask with the same attribute mix in train and test (each value split on its own)."""
    train = np.zeros(labels.size, dtype=bool)
    for value in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == value))
        n_train = int(round(index.size * (1.0 - test_fraction)))
        if index.size >= 2:  # keep at least one case on each side when the value can be split at all
            n_train = min(max(n_train, 1), index.size - 1)
        train[index[:n_train]] = True
    return train


def _stack_logits(parameters: list, z: torch.Tensor) -> torch.Tensor:
    """Logits (K, n) of K independent MLPs z -> logit (two hidden ReLU layers), by batched matmuls."""
    x = z.unsqueeze(0).expand(parameters[0][0].shape[0], -1, -1)
    for layer, (weight, bias) in enumerate(parameters):
        x = torch.baddbmm(bias, x, weight)
        if layer < len(parameters) - 1:
            x = torch.relu(x)
    return x.squeeze(-1)


def _fit_heads(z: torch.Tensor, targets: torch.Tensor, membership: torch.Tensor, *, hidden: int, epochs: int,
               learning_rate: float, weight_decay: float, seed: int) -> tuple[list, np.ndarray]:
    """Fit K MLPs at once, network k by BCE on its own cases (row k of the 0/1 ``membership``, shape (K, n)).

    Each network's loss only touches its own parameters and Adam is element-wise, so full-batch Adam on
    the sum of the per-network mean losses trains every network exactly as if it were trained alone --
    in one loop instead of K.
    """
    generator = torch.Generator().manual_seed(seed)
    k, d = membership.shape[0], z.shape[1]
    parameters = []
    for fan_in, fan_out in ((d, hidden), (hidden, hidden), (hidden, 1)):
        # nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from our own generator
        bound = 1.0 / math.sqrt(fan_in)
        weight = ((torch.rand(k, fan_in, fan_out, generator=generator) * 2 - 1) * bound).requires_grad_()
        bias = ((torch.rand(k, 1, fan_out, generator=generator) * 2 - 1) * bound).requires_grad_()
        parameters.append((weight, bias))
    optimizer = torch.optim.Adam([t for pair in parameters for t in pair], lr=learning_rate,
                                 weight_decay=weight_decay)
    weights = membership / membership.sum(dim=1, keepdim=True)  # a mean over each network's own cases
    expanded = targets.unsqueeze(0).expand_as(membership)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = (bce(_stack_logits(parameters, z), expanded, reduction="none") * weights).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = bce(_stack_logits(parameters, z), expanded, reduction="none")
        per_head = (final * weights).sum(dim=1).numpy()
    return [(w.detach(), b.detach()) for w, b in parameters], per_head


def conditional_independence_test(
    latents: np.ndarray,
    attribute: Sequence[Any] | np.ndarray,
    predictions: Sequence[Any] | np.ndarray,
    *,
    test_fraction: float = 0.5,
    hidden: int = 16,
    epochs: int = 300,
    learning_rate: float = 0.01,
    weight_decay: float = 1e-4,
    min_train_per_value: int = 20,
    alternative: Literal["two-sided", "greater"] = "greater",
    seed: int = 0,
) -> CITestResult:
    """The conditional-independence test of arXiv 2504.19621: H0 f(X) independent of A given Z.

    Z is a latent of the image (e.g. the diffusion model's inversion, or an encoder's embedding), A the
    sensitive attribute and f(X) the model's binary prediction. On a train split (stratified by A):

    * g(a, z) ~ P(yhat = 1 | A = a, Z = z): one MLP per attribute value a, fit on the cases with A = a;
    * h(z) ~ P(yhat = 1 | Z = z): one MLP of the same shape, fit on all cases;

    all by BCE with full-batch Adam for ``epochs`` steps, on z standardised with the train mean and sd
    (two hidden ReLU layers of width ``hidden``). On the test split, u_i = yhat_i g(A_i, Z_i) and
    v_i = yhat_i h(Z_i) are compared by a paired t-test, ``scipy.stats.ttest_rel(u, v, alternative=...)``.

    One-sided by default (``alternative="greater"``: u exceeds v). With the true g and h,
    E[u - v] = E[yhat (g - h)] = E[g (g - h)] = E[(g - h)^2] + E[h (g - h)] = E[(g - h)^2], because
    E[g(A, Z) | Z] = h(Z) makes the last term vanish. So E[u - v] >= 0, with equality exactly under H0:
    dependence can only push u above v. A negative mean difference is estimation error -- each head g is
    fit on the cases of one attribute value only, so it is noisier than h, and on the yhat = 1 cases a
    noisier probability is a lower one. That bias made the two-sided test reject a truly invariant model
    far too often: over 100 synthetic data sets (z ~ N(0, I_4), a ~ Bernoulli(1/2), yhat = 1[z.w > 0])
    the two-sided size at 0.05 was 0.21 with 1,000 cases and 0.28 with 2,000 (mean t about -1), against
    0.01 and 0.03 one-sided (0.02 when z also encodes a, as image latents usually do), while a model whose
    answer flips for 10% of cases (ECA 0.90) was still detected in 10 of 10 data sets of 1,000 cases.
    The authors' code tests two-sided (their ``ci_test_method`` calls
    ``ttest_rel(g_vals, h_vals)`` with scipy's default); ``alternative="two-sided"`` reproduces it.

    The test is only as good as the fits: it needs enough train cases per attribute value for g to learn
    what h learns, and its p-value is conditional on the fitted heads (the variation between fits is not
    in it), so read p-values near the threshold with care and compare seeds.

    Raises FairMedInputError for mismatched lengths, non-binary predictions, missing attribute values,
    fewer than two attribute values, or an attribute value with fewer than ``min_train_per_value`` train cases.
    Constant predictions give p = 1 with a note (no dependence can be detected), without fitting.
    """
    if not 0.0 < test_fraction < 1.0:
        raise FairMedInputError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if alternative not in ("two-sided", "greater"):
        raise FairMedInputError(f"unknown alternative {alternative!r}", hint="use 'two-sided' or 'greater'")
    if hidden < 1 or epochs < 1:
        raise FairMedInputError(f"hidden and epochs must be positive, got hidden={hidden}, epochs={epochs}")
    z = _as_latents(latents)
    yhat = _as_predictions(predictions, len(z))
    labels = _as_attribute(attribute, len(z))
    values = tuple(np.unique(labels).tolist())
    if len(values) < 2:
        raise FairMedInputError(f"the attribute takes one value ({values[0] if values else 'none'}); "
                                "the test compares at least two",
                                hint="check that the attribute column is the right one")

    rng = np.random.default_rng(seed)
    train = _stratified_split(labels, test_fraction, rng)
    test = ~train
    n_train, n_test = int(train.sum()), int(test.sum())

    if np.all(yhat == yhat[0]):
        # yhat carries no information: it is independent of everything, and u - v has no variance.
        constant = int(yhat[0])
        return CITestResult(statistic=0.0, p_value=1.0, n_train=n_train, n_test=n_test,
                            mean_u=math.nan, mean_v=math.nan, heads=(), attribute_values=values,
                            alternative=alternative,
                            note=f"every prediction is {constant}: no dependence on the attribute can be detected")

    for value in values:
        n_value = int((train & (labels == value)).sum())
        if n_value < min_train_per_value:
            raise FairMedInputError(
                f"attribute value {value!r} has {n_value} train case(s); its head g needs at least "
                f"{min_train_per_value}",
                hint="collect more cases of this group, merge it with another, lower test_fraction, "
                     "or lower min_train_per_value",
            )

    mean, sd = z[train].mean(axis=0), z[train].std(axis=0)
    sd[sd == 0] = 1.0  # a constant latent dimension carries no information; avoid dividing by zero
    z_std = (z - mean) / sd

    # Rows 0..K-1 of the stack are g's heads (one per attribute value), row K is h.
    membership = np.vstack([labels[train] == value for value in values] + [np.ones(n_train, dtype=bool)])
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest and repeatable on the 2-core machines
    try:
        parameters, losses = _fit_heads(
            torch.as_tensor(z_std[train], dtype=torch.float32),
            torch.as_tensor(yhat[train], dtype=torch.float32),
            torch.as_tensor(membership, dtype=torch.float32),
            hidden=hidden, epochs=epochs, learning_rate=learning_rate, weight_decay=weight_decay, seed=seed,
        )
        with torch.no_grad():
            test_z = torch.as_tensor(z_std[test], dtype=torch.float32)
            probabilities = torch.sigmoid(_stack_logits(parameters, test_z)).double().numpy()
    finally:
        torch.set_num_threads(previous_threads)

    value_index = np.searchsorted(np.asarray(values), labels[test])
    g = probabilities[value_index, np.arange(n_test)]
    h = probabilities[len(values)]
    u, v = yhat[test] * g, yhat[test] * h

    heads = tuple(
        HeadInfo(name=f"g[a={value}]", attribute_value=value, n_train=int(membership[k].sum()),
                 n_positive=int(yhat[train][membership[k]].sum()), final_loss=float(losses[k]))
        for k, value in enumerate(values)
    ) + (HeadInfo(name="h", attribute_value=None, n_train=n_train, n_positive=int(yhat[train].sum()),
                  final_loss=float(losses[-1])),)

    notes = []
    one_class = [head.name for head in heads if head.n_positive in (0, head.n_train)]
    if one_class:
        notes.append(f"{', '.join(one_class)} saw a single predicted class in training")
    if np.ptp(u - v) == 0.0:
        # ttest_rel is undefined (0/0) when every difference is equal, e.g. no positive prediction in test.
        statistic, p_value = 0.0, 1.0
        notes.append("u - v is constant on the test split (e.g. no positive prediction there): nothing to test")
    else:
        result = stats.ttest_rel(u, v, alternative=alternative)
        statistic, p_value = float(result.statistic), float(result.pvalue)
        if alternative == "two-sided" and statistic < 0 and p_value < 0.05:
            notes.append("u is significantly below v: that is estimation error of the heads g (too few cases "
                         "per attribute value), not dependence on the attribute")
    note = "; ".join(notes)
    return CITestResult(statistic=statistic, p_value=p_value, n_train=n_train, n_test=n_test,
                        mean_u=float(u.mean()), mean_v=float(v.mean()), heads=heads, attribute_values=values,
                        alternative=alternative, note=note)
