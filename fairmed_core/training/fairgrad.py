"""FairGrad: a scikit-learn style binary classifier trained with reconciled task and fairness gradients.

DESIGN.md section 5. Each step has one objective for the task (binary cross-entropy) and one differentiable
fairness surrogate per sensitive attribute. With ``method="fairgrad"`` each objective gets its own gradient
(k attributes, k + 1 backward passes) and :func:`reconcile_gradients` removes the conflicting components before
the update: for each objective ``i``, over the other objectives ``j`` in a random order,
``g_i <- g_i - (g_i . g_j / |g_j|^2) g_j`` whenever ``g_i . g_j < 0``; the update is the sum of the projected
gradients. ``method="penalty"`` (task + a fixed weight times the fairness losses) and ``method="erm"`` (task
only) are the baselines DESIGN.md compares against.

The fairness terms mitigate a gap in the model's scores on the training data; they do not certify anything
about the deployed model, which still needs an audit on held-out data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from fairmed_core.errors import FairMedInputError
from fairmed_core.plain import python_scalar
from fairmed_core.training.fairgrad_config import METHODS, check_training_numbers  # noqa: F401 - re-exported

__all__ = [
    "SmallCNN",
    "FAIRNESS_OBJECTIVES",
    "MAX_GROUPS",
    "ConflictStats",
    "FairGradClassifier",
    "FairGradEpoch",
    "GroupRates",
    "demographic_parity_loss",
    "equal_opportunity_loss",
    "equalized_odds_loss",
    "check_training_numbers",
    "reconcile_gradients",
]

MAX_GROUPS = 50  # more groups than this in one attribute is almost always an identifier or a continuous column
_MODELS = ("logistic", "mlp", "cnn")
_DEFAULT_OBJECTIVE = "equalized_odds"


# --------------------------------------------------------------------------------------------------------------
# Gradient reconciliation
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConflictStats:
    """How the objectives' gradients disagreed in one reconciliation. Objective 0 is the task.

    ``conflicting_pairs`` counts unordered pairs of the original gradients with a negative dot product;
    ``projections`` counts the projection steps actually applied (it can differ, because each check uses the
    partly projected ``g_i``). ``projection_magnitudes[i]`` is ``|g_i' - g_i|``, how much of objective ``i``'s
    gradient the projections removed.
    """

    n_objectives: int
    conflicting_pairs: int
    projections: int
    cosine_similarities: tuple[tuple[float, ...], ...]
    projection_magnitudes: tuple[float, ...]

    @property
    def mean_conflict_cosine(self) -> float:
        """Mean cosine over the conflicting pairs (in [-1, 0)); 0.0 when nothing conflicted."""
        values = [
            self.cosine_similarities[i][j]
            for i in range(self.n_objectives)
            for j in range(i + 1, self.n_objectives)
            if self.cosine_similarities[i][j] < 0
        ]
        return float(sum(values) / len(values)) if values else 0.0


def reconcile_gradients(
    task_grad: torch.Tensor,
    fairness_grads: Sequence[torch.Tensor],
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ConflictStats]:
    """DESIGN.md section 5's projection on flattened gradients; returns the update direction and its stats.

    Objectives are ``[task_grad, *fairness_grads]``. For each objective ``i`` a fresh random permutation of the
    other objectives is drawn from ``generator``; walking it, whenever the current ``g_i`` has a negative dot
    product with the *original* ``g_j`` it is projected onto ``g_j``'s normal plane,
    ``g_i <- g_i - (g_i . g_j / |g_j|^2) g_j``. Projecting against the originals (not the already projected
    ``g_j``) keeps each objective's result independent of the order in which the ``i`` are processed, so the
    only randomness is the order of the ``j`` for each ``i``. The combined update is the sum of the projected
    gradients. ``generator=None`` uses a generator seeded with 0, so a call is always reproducible.

    A zero gradient (e.g. a fairness loss that is 0 because a minibatch holds one group) has a zero dot product
    with everything, so it neither conflicts nor is projected against.
    """
    grads = [task_grad, *fairness_grads]
    first = grads[0]
    for index, grad in enumerate(grads):
        if not isinstance(grad, torch.Tensor) or grad.dim() != 1:
            raise FairMedInputError(f"gradient {index} must be a 1-D torch tensor (flatten the parameters first)")
        if grad.shape != first.shape:
            raise FairMedInputError(
                f"gradient {index} has {grad.numel()} entries but the task gradient has {first.numel()}")
        if not grad.is_floating_point():
            raise FairMedInputError(f"gradient {index} must be floating point, got {grad.dtype}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    with torch.no_grad():
        original = torch.stack([grad.detach().to(first.dtype) for grad in grads])
        n_objectives = original.shape[0]
        # Every projected g_i is a combination of the original gradients, g_i = sum_m c[i][m] g_m, so the dot
        # products the projection needs are sums over the (k+1) x (k+1) Gram matrix: the parameter-sized vectors
        # are touched twice (the Gram matrix and the final combination), not once per projection.
        gram = (original @ original.T).tolist()
        coefficients = [[1.0 if m == i else 0.0 for m in range(n_objectives)] for i in range(n_objectives)]
        projections = 0
        for i in range(n_objectives):
            others = [j for j in range(n_objectives) if j != i]
            # One other objective has one order: no draw (and the same generator stream whenever there are more).
            order = torch.randperm(len(others), generator=generator).tolist() if len(others) > 1 else [0] * len(others)
            row = coefficients[i]
            for position in order:
                j = others[position]
                dot = sum(row[m] * gram[m][j] for m in range(n_objectives))
                if dot < 0:  # implies |g_j| > 0
                    row[j] -= dot / gram[j][j]
                    projections += 1
        total = torch.tensor([sum(row[m] for row in coefficients) for m in range(n_objectives)],
                             dtype=original.dtype, device=original.device)
        combined = total @ original

    norms = [math.sqrt(max(gram[i][i], 0.0)) for i in range(n_objectives)]
    cosines = tuple(tuple(gram[i][j] / (norms[i] * norms[j]) if norms[i] * norms[j] > 0 else 0.0
                          for j in range(n_objectives)) for i in range(n_objectives))
    magnitudes = []
    for i, row in enumerate(coefficients):  # |g_i' - g_i|^2 = d^T G d with d = c_i - e_i
        delta = [row[m] - (1.0 if m == i else 0.0) for m in range(n_objectives)]
        squared = sum(delta[a] * gram[a][b] * delta[b] for a in range(n_objectives) for b in range(n_objectives))
        magnitudes.append(math.sqrt(max(squared, 0.0)))
    stats = ConflictStats(
        n_objectives=n_objectives,
        conflicting_pairs=sum(gram[i][j] < 0 for i in range(n_objectives) for j in range(i + 1, n_objectives)),
        projections=projections,
        cosine_similarities=cosines,
        projection_magnitudes=tuple(magnitudes),
    )
    return combined, stats


# --------------------------------------------------------------------------------------------------------------
# Differentiable fairness surrogates
# --------------------------------------------------------------------------------------------------------------


def _stratified_group_deviation(proba: torch.Tensor, groups: torch.Tensor, strata: torch.Tensor | None,
                                counted: Sequence[bool] = (True,)) -> torch.Tensor:
    """``sum_y sum_s |E[p | Y=y, S=s] - E[p | Y=y]|`` over the counted strata ``y`` (``strata`` codes 0..Y-1,
    ``None``: one stratum) and, within each, the groups present; a stratum with fewer than two groups present
    adds 0, and the result stays attached to the graph (a zero gradient, not an error, from ``autograd.grad``).

    All strata and groups go through one ``bincount`` and one ``index_add`` over (stratum, group) cells: this
    runs once per objective per minibatch, and at tabular sizes its cost is the number of tensor operations,
    not arithmetic (benchmarks/fairgrad_support2.py, "FairGrad: time per epoch vs ERM").
    """
    if groups.numel() and int(groups.min()) < 0:
        groups = torch.unique(groups, return_inverse=True)[1]  # arbitrary integer codes -> 0..G-1
    n_groups = int(groups.max()) + 1 if groups.numel() else 1
    n_strata = len(counted)
    cells = groups if strata is None else strata * n_groups + groups
    counts = torch.bincount(cells, minlength=n_strata * n_groups).view(n_strata, n_groups).to(proba.dtype)
    sums = torch.zeros(n_strata * n_groups, dtype=proba.dtype, device=proba.device).index_add(0, cells, proba)
    sums = sums.view(n_strata, n_groups)
    present = counts > 0
    stratum_means = sums.sum(dim=1) / counts.sum(dim=1).clamp(min=1)
    deviations = ((sums / counts.clamp(min=1) - stratum_means[:, None]).abs() * present).sum(dim=1)
    keep = (present.sum(dim=1) >= 2) & torch.tensor(counted, device=proba.device)
    return (deviations * keep).sum()


def _check_surrogate_inputs(proba: torch.Tensor, y_true: torch.Tensor, groups: torch.Tensor) -> None:
    if proba.dim() != 1 or y_true.shape != proba.shape or groups.shape != proba.shape:
        raise FairMedInputError(
            f"proba, y_true and groups must be 1-D and the same length, got shapes {tuple(proba.shape)}, "
            f"{tuple(y_true.shape)} and {tuple(groups.shape)}")


def equalized_odds_loss(proba: torch.Tensor, y_true: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Equalized-odds surrogate ``sum_{y in {0,1}} sum_s |E[p | Y=y, S=s] - E[p | Y=y]|``.

    ``proba`` are predicted probabilities of the positive class, ``y_true`` 0/1 labels, ``groups`` integer
    group codes. The mean score among positives stands in for the TPR and among negatives for the FPR, so the
    loss is a smooth version of the per-group TPR and FPR gaps. Groups absent from the rows of a label are
    skipped; a label with fewer than two groups present contributes 0.
    """
    _check_surrogate_inputs(proba, y_true, groups)
    return _stratified_group_deviation(proba, groups, (y_true > 0.5).long(), counted=(True, True))


def equal_opportunity_loss(proba: torch.Tensor, y_true: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Equal-opportunity surrogate ``sum_s |E[p | Y=1, S=s] - E[p | Y=1]|`` (a smooth TPR gap).

    Groups with no positives in the batch are skipped; fewer than two such groups gives 0.
    """
    _check_surrogate_inputs(proba, y_true, groups)
    return _stratified_group_deviation(proba, groups, (y_true > 0.5).long(), counted=(False, True))


def demographic_parity_loss(proba: torch.Tensor, y_true: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Demographic-parity surrogate ``sum_s |E[p | S=s] - E[p]|`` (a smooth selection-rate gap; ignores y).

    Fewer than two groups present gives 0.
    """
    _check_surrogate_inputs(proba, y_true, groups)
    return _stratified_group_deviation(proba, groups, None)


FAIRNESS_OBJECTIVES: Mapping[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "equalized_odds": equalized_odds_loss,
    "equal_opportunity": equal_opportunity_loss,
    "demographic_parity": demographic_parity_loss,
}


# --------------------------------------------------------------------------------------------------------------
# Training history records
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRates:
    """One group's true and false positive rates on the validation split (None where undefined)."""

    attribute: str
    group: object
    n: int
    true_positive_rate: float | None
    false_positive_rate: float | None


@dataclass(frozen=True)
class FairGradEpoch:
    """One epoch of a fit: mean training losses, gradient conflicts, and validation rates when there is a split.

    ``conflicting_pairs`` totals the conflicting gradient pairs over the epoch's steps and
    ``mean_conflict_cosine`` averages their cosines; both are None unless ``method="fairgrad"``, the only
    method that computes per-objective gradients.
    """

    epoch: int
    steps: int
    task_loss: float
    fairness_losses: tuple[tuple[str, float], ...]
    conflicting_pairs: int | None
    mean_conflict_cosine: float | None
    validation_accuracy: float | None
    validation_rates: tuple[GroupRates, ...]

    def fairness_loss(self, attribute: str) -> float:
        """The epoch's mean fairness loss for ``attribute``."""
        for name, value in self.fairness_losses:
            if name == attribute:
                return value
        raise KeyError(attribute)

    def equalized_odds_difference(self, attribute: str) -> float | None:
        """Validation max(TPR gap, FPR gap) across ``attribute``'s groups (fairlearn's definition); None if
        there is no validation split or no gap is defined."""
        rates = [rate for rate in self.validation_rates if rate.attribute == attribute]
        gaps = []
        for values in ([r.true_positive_rate for r in rates], [r.false_positive_rate for r in rates]):
            defined = [value for value in values if value is not None]
            if len(defined) >= 2:
                gaps.append(max(defined) - min(defined))
        return max(gaps) if gaps else None


# --------------------------------------------------------------------------------------------------------------
# Input checks that name the offending column
# --------------------------------------------------------------------------------------------------------------


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_feature_columns(X) -> None:
    """Raise a FairMedInputError naming the column for non-numeric, NaN or infinite features.

    Anything this does not recognise (sparse matrices, 1-D or ragged input, complex numbers) is left to
    scikit-learn's ``validate_data``, whose messages the conformance checks expect.
    """
    if isinstance(X, pd.DataFrame):
        for position, name in enumerate(X.columns):
            column = X.iloc[:, position]
            if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
                try:
                    column = pd.to_numeric(column, errors="raise")
                except (TypeError, ValueError) as error:
                    raise FairMedInputError(
                        f"feature column is not numeric (dtype {X.dtypes.iloc[position]}): {error}",
                        column=str(name), hint="encode categories as numbers (e.g. one-hot) before fitting",
                    ) from error
            if pd.api.types.is_complex_dtype(column):
                continue
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            _check_finite(values, str(name))
        return
    if sparse.issparse(X):
        return
    try:
        array = np.asarray(X)
    except Exception:  # noqa: BLE001 - malformed input gets scikit-learn's own error below
        return
    if array.ndim != 2:
        return
    if array.dtype.kind in "OUS":
        for position in range(array.shape[1]):
            try:
                values = np.asarray(array[:, position], dtype=np.float64)
            except ValueError as error:
                # A TypeError (a dict in a cell) propagates as is: it is not a column the user can re-encode.
                raise FairMedInputError(
                    f"feature column {position} is not numeric: {error}", column=str(position),
                    hint="encode categories as numbers (e.g. one-hot) before fitting") from error
            _check_finite(values, str(position))
    elif array.dtype.kind == "f":
        for position in range(array.shape[1]):
            _check_finite(array[:, position], str(position))


def _check_finite(values: np.ndarray, column: str) -> None:
    nan = np.isnan(values)
    if nan.any():
        raise FairMedInputError(
            "feature contains NaN", column=column, row=_first_bad_row(nan),
            hint="impute or drop missing values before fitting")
    inf = np.isinf(values)
    if inf.any():
        raise FairMedInputError("feature contains inf", column=column, row=_first_bad_row(inf),
                                hint="clip or drop infinite values before fitting")


def _sensitive_frame(sensitive_features, n_rows: int) -> pd.DataFrame:
    """One column per sensitive attribute, rows by position; names for 1-D input come from a Series name."""
    if isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features.reset_index(drop=True)
        frame.columns = [str(name) for name in frame.columns]
    elif isinstance(sensitive_features, pd.Series):
        name = "sensitive_feature" if sensitive_features.name is None else str(sensitive_features.name)
        frame = pd.DataFrame({name: sensitive_features.to_numpy()})
    elif isinstance(sensitive_features, Mapping):
        frame = pd.DataFrame({str(name): np.asarray(values) for name, values in sensitive_features.items()})
    else:
        array = np.asarray(sensitive_features, dtype=object)
        if array.ndim == 1:
            frame = pd.DataFrame({"sensitive_feature": array})
        elif array.ndim == 2:
            frame = pd.DataFrame({f"sensitive_feature_{k}": array[:, k] for k in range(array.shape[1])})
        else:
            raise FairMedInputError(f"sensitive_features must be 1-D or 2-D, got {array.ndim} dimensions")
    if frame.shape[1] == 0:
        raise FairMedInputError("sensitive_features has no columns", hint="pass None to fit without attributes")
    if frame.columns.duplicated().any():
        raise FairMedInputError(f"sensitive_features has duplicate column names {list(frame.columns)}")
    if len(frame) != n_rows:
        raise FairMedInputError(f"sensitive_features has {len(frame)} rows but X has {n_rows}",
                                hint="pass one sensitive value per row of X, in the same order")
    for name in frame.columns:
        missing = frame[name].isna().to_numpy()
        if missing.any():
            raise FairMedInputError(
                "sensitive attribute is missing (NaN)", column=name, row=_first_bad_row(missing),
                hint="give missing values their own group label (e.g. 'unknown') or drop those rows")
    return frame


def _encode_groups(frame: pd.DataFrame) -> tuple[tuple[tuple[object, ...], ...], np.ndarray]:
    """Group labels per attribute and an (n_rows, n_attributes) matrix of integer group codes."""
    labels, codes = [], []
    for name in frame.columns:
        try:
            uniques, inverse = np.unique(frame[name].to_numpy(), return_inverse=True)
        except TypeError:  # mixed types (e.g. 1 and "1") cannot be sorted; compare them as text
            uniques, inverse = np.unique(frame[name].astype(str).to_numpy(), return_inverse=True)
        if len(uniques) > MAX_GROUPS:
            raise FairMedInputError(
                f"sensitive attribute has {len(uniques)} groups, more than the {MAX_GROUPS} supported",
                column=name, hint="bin a continuous attribute (e.g. age into bands) or merge rare groups")
        labels.append(tuple(python_scalar(value) for value in uniques))
        codes.append(inverse.reshape(-1))
    return tuple(labels), np.stack(codes, axis=1)


# --------------------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------------------


class SmallCNN(torch.nn.Module):
    """Two strided convolutions, global pooling to 4x4 and a linear read-out: a small image classifier for
    flattened ``(channels, height, width)`` rows (the benchmark's 64x64 images: about 3k parameters)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 8) -> None:
        super().__init__()
        self.image_shape = tuple(int(v) for v in image_shape)
        channels = self.image_shape[0]
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, width, kernel_size=5, stride=2, padding=2), torch.nn.ReLU(),
            torch.nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
        self.head = torch.nn.Linear(2 * width * 16, 1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(rows.reshape(-1, *self.image_shape)))


class FairGradClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier (logistic regression or a one-hidden-layer MLP) trained with FairGrad.

    Parameters
    ----------
    model : "logistic", "mlp" or "cnn" (``SmallCNN``: rows are flattened images of ``image_shape``)
    hidden : width of the MLP's hidden layer, or the CNN's first convolution (ignored for "logistic").
    image_shape : ``(channels, height, width)`` of the flattened rows, for "cnn" only.
    objectives : dict sensitive attribute -> "equalized_odds", "equal_opportunity" or "demographic_parity";
        None, and any attribute it does not name, uses equalized odds.
    method : "fairgrad" (reconcile per-objective gradients, DESIGN.md section 5), "penalty" (task loss plus
        ``penalty_weight`` times the sum of fairness losses) or "erm" (task loss only; fairness losses are
        computed for the history but not optimised). ``penalty_weight`` is used by "penalty" only: FairGrad
        sums the reconciled gradients with unit weights, as DESIGN.md specifies.
    epochs, batch_size, lr, weight_decay : Adam training settings.
    warmup_epochs : the first epochs train the task loss alone (ERM) before "fairgrad" or "penalty" start. From a
        random start the fairness surrogates, which a constant prediction satisfies exactly, can pull a model
        that has learnt nothing yet into predicting the majority class (measured on the benchmark's chest X-rays
        with a small CNN: both methods collapse to the prevalence without a warm-up).
    random_state : seeds initialisation, shuffling, the validation split and the projection order.
    validation_fraction : share of rows held out (at random) to record per-group TPR/FPR each epoch in
        ``history_``; 0 trains on every row.
    verbose : print one line per epoch.

    Features are standardised with the training rows' mean and standard deviation. ``fit`` without
    ``sensitive_features`` treats all rows as one group: every fairness loss is 0 and all methods reduce to
    ERM, which is what lets scikit-learn's conformance checks call ``fit(X, y)``.
    """

    def __init__(
        self,
        *,
        model: str = "logistic",
        hidden: int = 32,
        image_shape: tuple[int, int, int] | None = None,
        objectives: Mapping[str, str] | None = None,
        method: str = "fairgrad",
        penalty_weight: float = 1.0,
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        warmup_epochs: int = 0,
        random_state=0,
        validation_fraction: float = 0.0,
        verbose: bool = False,
    ) -> None:
        self.model = model
        self.hidden = hidden
        self.image_shape = image_shape
        self.objectives = objectives
        self.method = method
        self.penalty_weight = penalty_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.random_state = random_state
        self.validation_fraction = validation_fraction
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    # -- fitting -----------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.model not in _MODELS:
            raise FairMedInputError(f"model must be one of {list(_MODELS)}, got {self.model!r}")
        if self.method not in METHODS:
            raise FairMedInputError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        for name in ("hidden", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FairMedInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, (int, np.integer)) or (
                self.warmup_epochs < 0):
            raise FairMedInputError(f"warmup_epochs must be a non-negative integer, got {self.warmup_epochs!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise FairMedInputError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("weight_decay", "penalty_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise FairMedInputError(f"{name} must be a non-negative number, got {value!r}")
        if not (isinstance(self.validation_fraction, (int, float)) and 0 <= self.validation_fraction < 1):
            raise FairMedInputError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.objectives is not None:
            if not isinstance(self.objectives, Mapping):
                raise FairMedInputError("objectives must be a dict of attribute -> objective name")
            for attribute, objective in self.objectives.items():
                if objective not in FAIRNESS_OBJECTIVES:
                    raise FairMedInputError(
                        f"unknown fairness objective {objective!r} for attribute {attribute!r}",
                        hint=f"known: {sorted(FAIRNESS_OBJECTIVES)}")

    def _build_network(self, n_features: int) -> torch.nn.Module:
        if self.model == "logistic":
            network = torch.nn.Linear(n_features, 1)
        elif self.model == "cnn":
            shape = tuple(self.image_shape or ())
            if len(shape) != 3 or int(np.prod(shape)) != n_features:
                raise FairMedInputError(
                    f"model 'cnn' needs image_shape (channels, height, width) whose product is the number of "
                    f"features ({n_features}), got {self.image_shape!r}", column="image_shape")
            network = SmallCNN(shape, width=min(self.hidden, 16))
        else:
            network = torch.nn.Sequential(
                torch.nn.Linear(n_features, self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, 1))
        # float64: predictions on a subset of rows then equal those on all rows to far below sklearn's tolerance.
        return network.to(torch.float64)

    def fit(self, X, y, *, sensitive_features=None,
            epoch_callback: Callable[[FairGradEpoch], None] | None = None) -> FairGradClassifier:
        """Fit on features ``X``, binary labels ``y`` and optional ``sensitive_features`` (a DataFrame with one
        column per attribute, a Series, or a 1-D array; rows matched to ``X`` by position). ``epoch_callback``
        is called with each epoch's record as soon as the epoch ends (progress bars, live curves)."""
        self._check_params()
        _check_feature_columns(X)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        classes, y_encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise FairMedInputError(
                f"y has one class ({python_scalar(classes[0])!r}); a classifier needs both outcomes",
                column="y", hint="check the label column, or the filter that produced these rows")
        if y_type != "binary" or len(classes) > 2:
            raise FairMedInputError(
                f"Only binary classification is supported. The type of the target is {y_type} "
                f"with {len(classes)} classes", column="y", hint="binarise the label (one class vs the rest)")

        if sensitive_features is None:
            attributes: tuple[str, ...] = ()
            group_labels: tuple[tuple[object, ...], ...] = ()
            group_codes = np.zeros((X.shape[0], 0), dtype=np.int64)
        else:
            frame = _sensitive_frame(sensitive_features, X.shape[0])
            attributes = tuple(frame.columns)
            group_labels, group_codes = _encode_groups(frame)
        objectives = dict(self.objectives or {})
        unknown = sorted(set(objectives) - set(attributes))
        if unknown:
            raise FairMedInputError(f"objectives name attributes {unknown} that sensitive_features does not have",
                                    hint=f"sensitive attributes: {list(attributes)}")
        objective_names = tuple(objectives.get(attribute, _DEFAULT_OBJECTIVE) for attribute in attributes)

        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        rng = np.random.default_rng(seed)
        n_rows = X.shape[0]
        n_validation = int(round(self.validation_fraction * n_rows))
        permutation = rng.permutation(n_rows)
        validation_rows = np.sort(permutation[:n_validation])
        train_rows = np.sort(permutation[n_validation:])
        if len(np.unique(y_encoded[train_rows])) < 2:
            raise FairMedInputError("the training split has one class",
                                    hint="lower validation_fraction or fit on more rows")

        mean = X[train_rows].mean(axis=0)
        scale = X[train_rows].std(axis=0)
        scale[~(scale > 0)] = 1.0  # constant columns: centre only
        features = torch.from_numpy((X - mean) / scale)
        labels = torch.from_numpy(y_encoded.astype(np.float64))
        codes = torch.from_numpy(group_codes.astype(np.int64))

        with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
            torch.manual_seed(seed)
            network = self._build_network(X.shape[1])
        parameters = list(network.parameters())
        optimizer = torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        order_generator = torch.Generator().manual_seed(seed)
        losses = [FAIRNESS_OBJECTIVES[name] for name in objective_names]
        train_index = torch.from_numpy(train_rows)

        history: list[FairGradEpoch] = []
        for epoch in range(self.epochs):
            network.train()
            shuffled = train_index[torch.from_numpy(rng.permutation(len(train_rows)))]
            task_total, fairness_totals, seen, steps = 0.0, [0.0] * len(losses), 0, 0
            conflicts, conflict_cosine_total = 0, 0.0
            for start in range(0, len(shuffled), self.batch_size):
                rows = shuffled[start:start + self.batch_size]
                logits = network(features[rows]).squeeze(-1)
                proba = torch.sigmoid(logits)
                task_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[rows])
                fairness = [loss(proba, labels[rows], codes[rows, k]) for k, loss in enumerate(losses)]
                optimizer.zero_grad(set_to_none=True)
                if epoch < self.warmup_epochs:
                    task_loss.backward()
                elif self.method == "fairgrad":
                    stats = self._fairgrad_step(task_loss, fairness, parameters, order_generator)
                    conflicts += stats.conflicting_pairs
                    conflict_cosine_total += stats.mean_conflict_cosine * stats.conflicting_pairs
                elif self.method == "penalty":
                    (task_loss + self.penalty_weight * sum(fairness, torch.zeros((), dtype=logits.dtype))).backward()
                else:
                    task_loss.backward()
                optimizer.step()
                batch_rows = len(rows)
                seen += batch_rows
                steps += 1
                task_total += float(task_loss.detach()) * batch_rows
                for k, value in enumerate(fairness):
                    fairness_totals[k] += float(value.detach()) * batch_rows
            record = FairGradEpoch(
                epoch=epoch,
                steps=steps,
                task_loss=task_total / seen,
                fairness_losses=tuple((a, total / seen) for a, total in zip(attributes, fairness_totals)),
                conflicting_pairs=conflicts if self.method == "fairgrad" else None,
                mean_conflict_cosine=((conflict_cosine_total / conflicts if conflicts else 0.0)
                                      if self.method == "fairgrad" else None),
                **self._validation_record(network, features, y_encoded, group_codes, validation_rows,
                                          attributes, group_labels),
            )
            history.append(record)
            if epoch_callback is not None:
                epoch_callback(record)
            if self.verbose:
                print(_describe_epoch(record, self.epochs))
        network.eval()

        self.classes_ = classes
        self.model_ = network
        self.feature_mean_ = mean
        self.feature_scale_ = scale
        self.sensitive_attributes_ = attributes
        self.sensitive_groups_ = group_labels
        self.objectives_ = dict(zip(attributes, objective_names))
        self.history_ = history
        return self

    @staticmethod
    def _fairgrad_step(task_loss: torch.Tensor, fairness: list[torch.Tensor], parameters: list[torch.nn.Parameter],
                       generator: torch.Generator) -> ConflictStats:
        """One backward pass per objective, reconcile, and write the combined gradient into ``.grad``."""
        flat = []
        for index, objective in enumerate([task_loss, *fairness]):
            grads = torch.autograd.grad(objective, parameters, retain_graph=index < len(fairness),
                                        allow_unused=True)
            flat.append(torch.cat([
                (torch.zeros_like(parameter) if grad is None else grad).reshape(-1)
                for parameter, grad in zip(parameters, grads)]))
        combined, stats = reconcile_gradients(flat[0], flat[1:], generator=generator)
        offset = 0
        for parameter in parameters:
            size = parameter.numel()
            parameter.grad = combined[offset:offset + size].view_as(parameter)  # combined is fresh: no copy
            offset += size
        return stats

    @staticmethod
    def _validation_record(network, features, y_encoded, group_codes, validation_rows, attributes,
                           group_labels) -> dict:
        """FairGradEpoch's validation fields: accuracy and per-group TPR/FPR at the 0.5 threshold."""
        if len(validation_rows) == 0:
            return {"validation_accuracy": None, "validation_rates": ()}
        network.eval()
        with torch.no_grad():
            predicted = (network(features[torch.from_numpy(validation_rows)]).squeeze(-1) > 0).numpy()
        truth = y_encoded[validation_rows] == 1
        rates = []
        for k, attribute in enumerate(attributes):
            codes = group_codes[validation_rows, k]
            for code, label in enumerate(group_labels[k]):
                in_group = codes == code
                positives, negatives = in_group & truth, in_group & ~truth
                rates.append(GroupRates(
                    attribute=attribute,
                    group=label,
                    n=int(in_group.sum()),
                    true_positive_rate=float(predicted[positives].mean()) if positives.any() else None,
                    false_positive_rate=float(predicted[negatives].mean()) if negatives.any() else None,
                ))
        return {"validation_accuracy": float((predicted == truth).mean()), "validation_rates": tuple(rates)}

    # -- prediction --------------------------------------------------------------------------------------------

    def decision_function(self, X) -> np.ndarray:
        """Log-odds of the positive class (``classes_[1]``), shape (n_samples,)."""
        check_is_fitted(self)
        _check_feature_columns(X)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with torch.no_grad():
            logits = self.model_(torch.from_numpy((X - self.feature_mean_) / self.feature_scale_)).squeeze(-1)
        return logits.numpy().copy()

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities of ``classes_[0]`` and ``classes_[1]``, shape (n_samples, 2)."""
        positive = expit(self.decision_function(X))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X) -> np.ndarray:
        """``classes_[1]`` where the log-odds are positive, else ``classes_[0]``."""
        positive = self.decision_function(X) > 0  # checks fitted-ness before classes_ is touched
        return self.classes_[positive.astype(int)]


def _describe_epoch(record: FairGradEpoch, epochs: int) -> str:
    parts = [f"epoch {record.epoch + 1}/{epochs}", f"task {record.task_loss:.4f}"]
    parts += [f"{attribute} {value:.4f}" for attribute, value in record.fairness_losses]
    if record.conflicting_pairs is not None:
        parts.append(f"conflicts {record.conflicting_pairs} (mean cos {record.mean_conflict_cosine:.3f})")
    if record.validation_accuracy is not None:
        parts.append(f"val acc {record.validation_accuracy:.3f}")
    return ", ".join(parts)
