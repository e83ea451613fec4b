"""Which column of a predictions table holds what: one value passed between the layers (the page's column mapper,
the CLI, a model run's table, a saved audit) instead of the keyword clump label/prediction/score/source/attributes
restated at each of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fairmed_core.errors import FairMedInputError

__all__ = ["MODEL_RUN_LABEL", "MODEL_RUN_PREDICTION", "MODEL_RUN_SOURCE", "PredictionColumns", "resolve_columns"]

# The columns every FairMed run writes into its predictions.csv.
MODEL_RUN_LABEL, MODEL_RUN_PREDICTION, MODEL_RUN_SOURCE, MODEL_RUN_SCORE = "y_true", "y_pred", "source", "score"


@dataclass(frozen=True)
class PredictionColumns:
    """The columns of a predictions table: the true label, the prediction, the sensitive attributes, and optionally
    the score P(positive) (for AUROC and calibration), the data source and the case id."""

    label: str
    prediction: str
    sensitive: tuple[str, ...] = ()
    score: str | None = None
    source: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        sensitive = (self.sensitive,) if isinstance(self.sensitive, str) else tuple(self.sensitive)
        object.__setattr__(self, "sensitive", sensitive)
        for name in ("label", "prediction"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise FairMedInputError(f"the {name} column must be named, got {getattr(self, name)!r}")

    @classmethod
    def model_run(cls, sensitive: Sequence[str] = (), *, score: bool = False) -> PredictionColumns:
        """The columns of a FairMed run's predictions.csv (``y_true``, ``y_pred``, ``source``, with ``score`` when
        the run stored one)."""
        return cls(MODEL_RUN_LABEL, MODEL_RUN_PREDICTION, tuple(sensitive), MODEL_RUN_SCORE if score else None,
                   MODEL_RUN_SOURCE)

    def with_sensitive(self, sensitive: Sequence[str]) -> PredictionColumns:
        return replace(self, sensitive=tuple(sensitive))

    def keywords(self) -> dict:
        """The same mapping as the keyword arguments of :func:`audit` and :func:`validate_predictions`
        (``label_col``, ``pred_col``, ``sensitive``, ``score_col``, ``source_col``)."""
        return dict(label_col=self.label, pred_col=self.prediction, sensitive=list(self.sensitive),
                    score_col=self.score, source_col=self.source)

    def to_json(self) -> dict:
        return dict(label=self.label, prediction=self.prediction, sensitive=list(self.sensitive), score=self.score,
                    source=self.source, id=self.id)


def resolve_columns(columns: PredictionColumns | None, *, label_col: str | None, pred_col: str | None,
                    sensitive: Sequence[str] | str | None, score_col: str | None, source_col: str | None,
                    id_col: str | None = None) -> PredictionColumns:
    """``columns``, or the one built from the fairlearn-style keywords; an error when both or neither are given."""
    given = {name: value for name, value in (("label_col", label_col), ("pred_col", pred_col),
                                            ("sensitive", sensitive), ("score_col", score_col),
                                            ("source_col", source_col), ("id_col", id_col)) if value is not None}
    if columns is not None:
        if given:
            raise FairMedInputError(f"columns= already names the columns; {sorted(given)} would name them again",
                                    hint="pass either columns= or the *_col keywords")
        return columns
    if label_col is None or pred_col is None or sensitive is None:
        raise FairMedInputError("name the label, prediction and sensitive columns",
                                hint="columns=PredictionColumns(label, prediction, sensitive) or label_col=, "
                                "pred_col=, sensitive=")
    return PredictionColumns(label_col, pred_col, sensitive, score_col, source_col, id_col)
