"""What a counterfactual analysis found, as typed records: the content of its ``tests.json``, built by the analysis,
written and read back once (``JsonRecord``), and read by the CLI and the Counterfactuals page by field.

``tests.json`` files written before these records existed load as they are: the JSON form is unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fairmed_core.counterfactual.invariance import CounterfactualAccuracy, FlipRow
from fairmed_core.counterfactual.settings import ValidityThresholds
from fairmed_core.settings import JsonRecord

__all__ = ["CITestSummary", "CounterfactualTests", "FlipSummary", "TrueCounterfactuals", "ValiditySummary"]


@dataclass(frozen=True)
class FlipSummary(JsonRecord):
    """How often the answer changed between the two images of a pair: overall first, then per group."""

    n_pairs: int
    rows: tuple[FlipRow, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def overall(self) -> FlipRow | None:
        """The row of every pair counted (attribute = group = "ALL"); None without pairs."""
        return self.rows[0] if self.rows else None


@dataclass(frozen=True)
class CITestSummary(JsonRecord):
    """The conditional-independence test on the edited cases (arXiv 2504.19621): H0, the answer is independent of
    the attribute given the image's latent. ``ran`` is False when it could not run (``note`` says why); then the
    numbers are None."""

    ran: bool
    note: str = ""
    statistic: float | None = None
    p_value: float | None = None
    n_train: int | None = None
    n_test: int | None = None
    mean_u: float | None = None
    mean_v: float | None = None
    mean_difference: float | None = None
    attribute_values: tuple[str, ...] = ()
    alternative: str | None = None
    n_left_out: int = 0  # cases without a parsable answer


@dataclass(frozen=True)
class ValiditySummary(JsonRecord):
    """How good the generated pairs were on average (grey-level errors 0..255, effectiveness 0-1), the thresholds a
    valid pair passed, and the attribute classifier's own check per source (``{source: {val_balanced_accuracy,
    trustworthy}}``, None without a classifier)."""

    composition_mae_mean: float | None = None
    effectiveness_mean: float | None = None
    reversibility_mae_mean: float | None = None
    truth_mae_mean: float | None = None
    baseline_mae_mean: float | None = None
    thresholds: ValidityThresholds = ValidityThresholds()
    classifier: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TrueCounterfactuals(JsonRecord):
    """On the benchmark, where each case's exact counterfactual is known: how often the answer stayed (ECA) on
    the true counterfactual and on the generated one of the same pairs, and how often the two agree on a flip."""

    eca: CounterfactualAccuracy
    eca_generated_same_pairs: CounterfactualAccuracy
    agreement_generated_vs_true_flip: float  # share of pairs, 0-1
    flips: FlipSummary


@dataclass(frozen=True)
class CounterfactualTests(JsonRecord):
    """Everything a counterfactual analysis tested (``tests.json``): flips on every pair and on valid pairs only,
    the conditional-independence test, pair validity, and the true counterfactuals where the data have them."""

    attribute: str
    n_cases: int
    n_pairs: int
    n_valid_pairs: int
    flips: FlipSummary
    flips_valid_pairs: FlipSummary
    ci_test: CITestSummary
    validity: ValiditySummary
    true_counterfactuals: TrueCounterfactuals | None = None
