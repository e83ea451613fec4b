"""The default audit of a model's predictions table (``y_true``, ``y_pred``, ``source`` and one column per
attribute, as every FairMed run writes it): every attribute, per source, with bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence

from fairmed_core.fairness import PredictionColumns, audit

__all__ = ["audit_predictions"]


def audit_predictions(predictions, attributes: Sequence[str], *, positive_label: str | None, n_boot: int = 1000,
                      seed: int = 0):
    """The default audit of a model's predictions: every attribute, per source, with bootstrap intervals."""
    return audit(predictions, columns=PredictionColumns.model_run(attributes), positive_label=positive_label,
                 n_boot=n_boot, seed=seed)
