"""What a counterfactual analysis found, as typed records: the content of its ``tests.json``, built by the analysis,
written and read back once (``JsonRecord``), and read by the CLI and the Counterfactuals page by field.

``tests.json`` files written before these records existed load as they are: the JSON form is unchanged. Torch-free
(the review documents read it), so the flip row and the ECA are declared here and ``invariance`` computes them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairmed_core.counterfactual.settings import ValidityThresholds
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import read_json_object
from fairmed_core.settings import JsonRecord

__all__ = ["CITestSummary", "CounterfactualAccuracy", "CounterfactualTests", "FlipRow", "FlipSummary",
           "TrueCounterfactuals", "ValiditySummary", "read_counterfactual_run"]


@dataclass(frozen=True)
class FlipRow:
    """Flips between factual and counterfactual answers in one group (or overall: attribute = group = "ALL").

    ``b`` counts positive -> negative pairs and ``c`` negative -> positive pairs, among pairs with a parsed
    answer on both sides; they and the McNemar p-values are None/NaN when the answer is not binary.
    ``n_format_failure`` counts pairs with a format failure on at least one side (such a pair flips unless
    both sides failed). ``p_value`` is the McNemar variant chosen in ``invariance.flip_table``;
    ``p_value_holm`` is Holm-corrected across the groups of the same attribute (the overall row is a family of its
    own).
    """

    attribute: str
    group: str
    n_pairs: int
    flips: int
    flip_rate: float
    ci_low: float
    ci_high: float
    # What a non-binary answer has no value for (None / NaN), so a row read from a file may leave it out.
    n_format_failure: int = 0
    b: int | None = None
    c: int | None = None
    p_exact: float = math.nan
    p_midp: float = math.nan
    p_chi2_cc: float = math.nan
    p_value: float = math.nan
    p_value_holm: float = math.nan
    note: str = ""


@dataclass(frozen=True)
class CounterfactualAccuracy:
    """ECA = n_agree / n with its Wilson interval; format failures are an outcome (failure = failure agrees)."""

    eca: float
    ci_low: float
    ci_high: float
    n: int
    n_agree: int
    n_format_failure: int
    confidence: float


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


def read_counterfactual_run(folder: str | Path) -> tuple[CounterfactualTests, dict]:
    """(tests, run metadata) of a counterfactual run folder; an error naming the file when it is not one."""
    folder = Path(folder)
    meta, tests = read_json_object(folder / "run.json"), read_json_object(folder / "tests.json")
    for name, value in (("run.json", meta), ("tests.json", tests)):
        if value is None:
            raise FairMedInputError(f"not a complete counterfactual run ({name} missing or unreadable)",
                                    source=str(folder / name))
    if meta.get("kind") != "counterfactual":
        raise FairMedInputError("not a counterfactual run (run.json kind is not 'counterfactual')",
                                source=str(folder / "run.json"))
    return CounterfactualTests.from_json(tests, source=str(folder / "tests.json")), meta
