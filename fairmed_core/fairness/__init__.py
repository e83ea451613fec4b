"""Fairness audit engine: per-group metrics, gaps and FairGRPO summaries with fast bootstrap intervals.

Public surface::

    result = audit(frame, label_col="y", pred_col="y_hat", sensitive=["sex", "age_group"])
    result.groups_frame(); result.gaps_frame(); result.summary_frame(); result.to_json_dict()
    audit(..., protocol="fairgrpo_paper").paper_summary   # the FairGRPO paper's statistics, beside FairMed's
    audit(..., format_failures="abstain")                  # how "(format failure)" predictions are scored
    frame = load_predictions("preds.csv", label_col="y", pred_col="y_hat", sensitive=["sex"])
    columns = PredictionColumns("y", "y_hat", ("sex",), score="p")  # the same columns as one value, for the
    audit(frame, columns=columns); load_predictions(path, columns=columns)   # layers that pass them on

Intervals and tests are validated by simulation with known truth (``benchmarks/audit_validity.py``, table in
``docs/RESULTS.md``): score intervals for proportions, bootstrap of the reported partition for the rest,
permutation tests within source for gaps, and a minimum detectable gap per group.

Point estimates equal fairlearn's ``MetricFrame`` with scikit-learn metrics on the same data, except that an
undefined value (a zero denominator) is NaN with a reason where scikit-learn and fairlearn return 0.
"""

from fairmed_core.fairness._audit import MEAN_OVER_ATTRIBUTES, MEAN_OVER_SOURCES, audit
from fairmed_core.fairness._format_failures import FORMAT_FAILURE, FORMAT_FAILURE_POLICIES, FormatFailureRate
from fairmed_core.fairness._gaps import benjamini_hochberg, holm
from fairmed_core.fairness._intervals import (
    INTERVAL_METHODS,
    clopper_pearson_interval,
    minimum_detectable_gap,
    newcombe_difference_interval,
    wilson_interval,
)
from fairmed_core.fairness._columns import PredictionColumns
from fairmed_core.fairness._metric_spec import CONFUSION_SPECS, GLOSSARY, METRIC_SPECS, SPEC_BY_NAME, MetricSpec
from fairmed_core.fairness._one_answer import (
    NEAR_CONSTANT_RATE,
    NearConstant,
    OneAnswer,
    near_constant_sources,
    one_answer_sources,
)
from fairmed_core.fairness._pooled import PooledGapCheck, pooled_gap_checks
from fairmed_core.fairness._paper_protocol import (
    PROTOCOLS,
    PaperAggregate,
    PaperAttributeSummary,
    PaperGroupMetrics,
    PaperSourceSummary,
    PaperSummary,
    paper_protocol,
)
from fairmed_core.fairness._predictions import (
    MISSING_GROUP,
    load_predictions,
    read_predictions_table,
    validate_predictions,
)
from fairmed_core.fairness._results import (
    METRICS,
    AuditResult,
    AuditSettings,
    Estimate,
    FairnessSummary,
    GapEstimate,
    GroupEstimate,
)

__all__ = [
    "FORMAT_FAILURE",
    "FORMAT_FAILURE_POLICIES",
    "GLOSSARY",
    "INTERVAL_METHODS",
    "METRICS",
    "CONFUSION_SPECS",
    "METRIC_SPECS",
    "SPEC_BY_NAME",
    "MEAN_OVER_ATTRIBUTES",
    "MEAN_OVER_SOURCES",
    "MISSING_GROUP",
    "PROTOCOLS",
    "AuditResult",
    "PredictionColumns",
    "AuditSettings",
    "Estimate",
    "FairnessSummary",
    "FormatFailureRate",
    "GapEstimate",
    "GroupEstimate",
    "MetricSpec",
    "NEAR_CONSTANT_RATE",
    "NearConstant",
    "OneAnswer",
    "PooledGapCheck",
    "PaperAggregate",
    "PaperAttributeSummary",
    "PaperGroupMetrics",
    "PaperSourceSummary",
    "PaperSummary",
    "audit",
    "benjamini_hochberg",
    "clopper_pearson_interval",
    "holm",
    "load_predictions",
    "minimum_detectable_gap",
    "newcombe_difference_interval",
    "near_constant_sources",
    "one_answer_sources",
    "pooled_gap_checks",
    "paper_protocol",
    "read_predictions_table",
    "validate_predictions",
    "wilson_interval",
]
