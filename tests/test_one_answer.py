"""A model that gives one answer to every case of a source is named, so its zero gaps are not read as fairness."""

import pandas as pd
import pytest

from fairmed_core.fairness import OneAnswer, one_answer_sources


def test_sources_with_a_single_answer_are_found_and_others_not():
    frame = pd.DataFrame({"source": ["cxr"] * 3 + ["derm"] * 3, "y_pred": ["no", "no", "no", "yes", "no", "no"]})
    assert one_answer_sources(frame, "y_pred", "source") == [OneAnswer(source="cxr", answer="no", n=3)]
    assert one_answer_sources(frame, "y_pred") == []  # pooled, the model does say yes
    assert one_answer_sources(frame.assign(y_pred=1), "y_pred")[0].describe() == \
        "The model answers 1 to all 6 cases"
    with pytest.raises(KeyError, match="no prediction column"):
        one_answer_sources(frame, "prediction")
