"""Three-state verdicts from hand-made intervals, at every boundary of the band."""

from __future__ import annotations

import math

import pytest

from fairmed_core.fairness import GapEstimate, GroupEstimate
from fairmed_core.report.plan import MetricMargin
from fairmed_core.report.verdicts import (
    FAILS,
    INSUFFICIENT,
    MEETS,
    difference_band,
    gap_verdict,
    group_verdict,
    interval_verdict,
    detectable_gap,
    verdict_counts,
)


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (-0.05, 0.05, MEETS),          # well inside
        (-0.10, 0.10, MEETS),          # exactly the band: edges belong to it
        (-0.10, -0.10, MEETS),         # a point interval on the lower edge
        (-0.11, 0.05, INSUFFICIENT),   # crosses the lower edge
        (0.05, 0.1000001, INSUFFICIENT),  # crosses the upper edge by a hair
        (0.10, 0.30, INSUFFICIENT),    # touches the upper edge from outside: not wholly outside
        (0.1000001, 0.30, FAILS),      # wholly above
        (-0.50, -0.1000001, FAILS),    # wholly below
        (-0.50, 0.50, INSUFFICIENT),   # covers the whole band
        (math.nan, 0.05, INSUFFICIENT),
        (0.05, -0.05, INSUFFICIENT),   # not an interval
    ],
)
def test_interval_verdict_at_the_boundaries(low, high, expected):
    assert interval_verdict(low, high, -0.10, 0.10) == expected


def test_difference_band_intersects_difference_and_ratio():
    both = MetricMargin(metric="recall", max_difference=0.10, ratio_low=0.8, ratio_high=1.25)
    assert difference_band(both, 0.9) == pytest.approx((-0.10, 0.10))  # ratio band wider at 0.9: [-0.18, 0.225]
    assert difference_band(both, 0.3) == pytest.approx((-0.06, 0.075))  # ratio band binds at 0.3
    ratio_only = MetricMargin(metric="recall", max_difference=None, ratio_low=0.8, ratio_high=1.25)
    assert all(math.isnan(v) for v in difference_band(ratio_only, 0.0))
    assert difference_band(MetricMargin(metric="fdr", max_difference=0.05), math.nan) == (-0.05, 0.05)


def _group(name, estimate, n=200, reason=""):
    return GroupEstimate(source="s", attribute="sex", group=name, n=n, n_positive=n // 2, prevalence=0.5,
                         small_group=False, small_group_reason="", metric="recall", estimate=estimate,
                         ci_low=estimate - 0.05, ci_high=estimate + 0.05, undefined_reason=reason,
                         denominator=n // 2)


def _gap(difference, low, high, a="F", b="M", comparison="vs-reference"):
    return GapEstimate(source="s", attribute="sex", metric="recall", comparison=comparison, group_a=a, group_b=b,
                       difference=difference, ratio=math.nan, ci_low=low, ci_high=high, p_value_raw=0.01,
                       p_value=0.02, significant=True, note="")


MARGIN = MetricMargin(metric="recall", max_difference=0.10)


def _verdict(group, reference, comparison, min_group_size=30):
    return group_verdict(group=group, reference=reference, comparison=comparison, margin=MARGIN,
                         min_group_size=min_group_size, confidence=0.95)


def test_group_verdict_uses_the_interval_not_the_point_estimate():
    # The point difference (0.02) is well inside the margin, but the interval straddles it.
    verdict = _verdict(_group("F", 0.72), _group("M", 0.70), _gap(0.02, -0.12, 0.16))
    assert verdict.verdict == INSUFFICIENT
    assert "straddles" in verdict.reason and "detects a difference of" in verdict.reason
    # recall: the detectable gap is how much lower than the reference's 0.70 the group must be, on 100 positives each
    assert verdict.minimum_detectable_gap == pytest.approx(detectable_gap("recall", 0.70, 100, 100))
    assert 0.1 < verdict.minimum_detectable_gap < 0.25
    # A large point difference (0.15) whose interval is wholly outside fails; one inside meets.
    assert _verdict(_group("F", 0.85), _group("M", 0.70), _gap(0.15, 0.11, 0.19)).verdict == FAILS
    assert _verdict(_group("F", 0.71), _group("M", 0.70), _gap(0.01, -0.04, 0.06)).verdict == MEETS


def test_small_group_is_insufficient_even_with_a_clear_interval():
    verdict = _verdict(_group("F", 0.95, n=12), _group("M", 0.70), _gap(0.25, 0.2, 0.3))
    assert verdict.verdict == INSUFFICIENT
    assert "F has n = 12, below the plan's smallest group of 30" in verdict.reason


def test_undefined_metric_and_missing_interval_are_insufficient():
    undefined = _verdict(_group("F", math.nan, reason="no positive cases"), _group("M", 0.7), _gap(math.nan, math.nan, math.nan))
    assert undefined.verdict == INSUFFICIENT and "no positive cases" in undefined.reason
    assert _verdict(_group("F", 0.7), _group("M", 0.7), None).verdict == INSUFFICIENT


def test_gap_verdict_against_the_allowed_gap():
    high, low = _group("F", 0.80), _group("M", 0.75)
    def run(lo, hi, margin=MARGIN):
        return gap_verdict(gap=_gap(0.05, lo, hi, comparison="max-min"), high_group=high, low_group=low,
                           margin=margin, min_group_size=30, confidence=0.95)
    assert run(0.01, 0.10).verdict == MEETS
    assert run(0.05, 0.12).verdict == INSUFFICIENT
    assert run(0.11, 0.20).verdict == FAILS
    # A ratio band 0.8-1.25 at the larger group's 0.80 allows a gap of (1 - 0.8) x 0.80 = 0.16.
    ratio = MetricMargin(metric="recall", max_difference=None, ratio_low=0.8, ratio_high=1.25)
    assert run(0.12, 0.15, ratio).verdict == MEETS and run(0.12, 0.15, ratio).allowed == pytest.approx(0.16)


def test_detectable_gap_shrinks_with_n_and_follows_the_metric_direction():
    assert detectable_gap("recall", 0.5, 100, 100) > detectable_gap("recall", 0.5, 400, 400)
    # Cohen's h by hand: arcsine scale, h = (z_0.975 + z_0.8) x sqrt(2/100), back to a rate below 0.5
    h = (1.959964 + 0.841621) * math.sqrt(2 / 100)
    assert detectable_gap("accuracy", 0.5, 100, 100) == pytest.approx(0.5 - math.sin((math.pi / 2 - h) / 2) ** 2)
    assert math.isnan(detectable_gap("recall", 0.5, 0, 100))
    assert math.isinf(detectable_gap("recall", 0.05, 3, 3))  # no lower rate is detectable from 0.05 with 3 cases
    # an error rate is worse when it rises: its detectable gap is measured upward from the reference
    assert detectable_gap("fdr", 0.1, 50, 50) == detectable_gap("recall", 0.1, 50, 50, direction="higher")
    assert detectable_gap("fdr", 0.1, 50, 50) != detectable_gap("recall", 0.1, 50, 50)
    small = _verdict(_group("F", 0.05, n=6), _group("M", 0.05, n=6), _gap(0.0, -0.3, 0.3), min_group_size=0)
    assert small.verdict == INSUFFICIENT and "no difference is detectable" in small.reason


def test_verdict_counts_lists_every_state():
    verdict = _verdict(_group("F", 0.71), _group("M", 0.70), _gap(0.01, -0.04, 0.06))
    assert verdict_counts([verdict]) == {MEETS: 1, FAILS: 0, INSUFFICIENT: 0}
