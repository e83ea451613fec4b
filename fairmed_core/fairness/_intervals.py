"""Closed-form intervals for proportions and their differences, and the minimum detectable gap.

These replace the percentile bootstrap where it is known to undercover: small denominators and rates near 0
or 1 (Brown, Cai and DasGupta 2001, "Interval estimation for a binomial proportion"; measured for FairMed in
``benchmarks/audit_validity.py``). All functions are vectorised over numpy arrays and return NaN where the
denominator is 0.

* :func:`wilson_interval`: the score interval of Wilson (1927). Never zero width for ``0 < x < n``, never
  outside [0, 1]; coverage close to nominal on average over rates, with narrow dips.
* :func:`clopper_pearson_interval`: the "exact" interval, coverage >= nominal for every rate and size
  (conservative: wider).
* :func:`newcombe_difference_interval`: Newcombe's (1998) hybrid score interval for ``p_a - p_b`` of two
  independent proportions (his method 10), built from the two Wilson intervals; :func:`mover_difference_interval`
  is the same construction from any two independent intervals (used for F1).
* :func:`minimum_detectable_gap`: the smallest gap from a reference rate that a two-sided test at ``alpha``
  detects with probability ``power``, by Cohen's arcsine transformation (variance-stabilising, so it stays
  sensible near 0 and 1).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri
from scipy.stats import beta

INTERVAL_METHODS = ("wilson", "clopper-pearson", "bootstrap")
"""How a proportion's interval is computed; non-proportion metrics (F1, AUROC, ECE) always bootstrap."""


def _z(confidence: float) -> float:
    return float(ndtri(0.5 + confidence / 2.0))


def wilson_interval(
    successes: np.ndarray, n: np.ndarray, *, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``successes / n`` (NaN where ``n`` is 0)."""
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _z(confidence)
    z2 = z * z
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        centre = (x + z2 / 2.0) / (n + z2)
        half = z / (n + z2) * np.sqrt(np.maximum(x * (n - x) / n, 0.0) + z2 / 4.0)
    empty = ~(n > 0)
    low = np.where(empty, np.nan, np.clip(centre - half, 0.0, 1.0))
    high = np.where(empty, np.nan, np.clip(centre + half, 0.0, 1.0))
    # At x = 0 (x = n) the bound is exactly 0 (1); clipping rounding error keeps the point inside.
    low = np.where(~empty & (x <= 0), 0.0, np.minimum(low, np.where(empty, np.nan, p)))
    high = np.where(~empty & (x >= n), 1.0, np.maximum(high, np.where(empty, np.nan, p)))
    return low, high


def clopper_pearson_interval(
    successes: np.ndarray, n: np.ndarray, *, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson ("exact") interval of ``successes / n`` from beta quantiles (NaN where ``n`` is 0)."""
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    tail = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(x > 0, beta.ppf(tail, np.maximum(x, 1e-300), n - x + 1.0), 0.0)
        high = np.where(x < n, beta.ppf(1.0 - tail, x + 1.0, np.maximum(n - x, 1e-300)), 1.0)
    empty = ~(n > 0)
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def proportion_interval(
    successes: np.ndarray, n: np.ndarray, *, confidence: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """The interval of ``successes / n`` by ``method`` ("wilson" or "clopper-pearson")."""
    if method == "wilson":
        return wilson_interval(successes, n, confidence=confidence)
    if method == "clopper-pearson":
        return clopper_pearson_interval(successes, n, confidence=confidence)
    raise ValueError(f"no closed-form proportion interval {method!r}")


def mover_difference_interval(
    estimate_a: np.ndarray,
    low_a: np.ndarray,
    high_a: np.ndarray,
    estimate_b: np.ndarray,
    low_b: np.ndarray,
    high_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval for ``a - b`` of two independent estimates from their own intervals (MOVER; Zou and Donner
    2008). With Wilson intervals of two proportions this is Newcombe's hybrid score interval."""
    d = np.asarray(estimate_a, dtype=float) - np.asarray(estimate_b, dtype=float)
    low = d - np.sqrt((estimate_a - low_a) ** 2 + (high_b - estimate_b) ** 2)
    high = d + np.sqrt((high_a - estimate_a) ** 2 + (estimate_b - low_b) ** 2)
    return low, high


def newcombe_difference_interval(
    successes_a: np.ndarray,
    n_a: np.ndarray,
    successes_b: np.ndarray,
    n_b: np.ndarray,
    *,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval for ``x_a / n_a - x_b / n_b`` (independent groups)."""
    xa, na = np.asarray(successes_a, dtype=float), np.asarray(n_a, dtype=float)
    xb, nb = np.asarray(successes_b, dtype=float), np.asarray(n_b, dtype=float)
    la, ua = wilson_interval(xa, na, confidence=confidence)
    lb, ub = wilson_interval(xb, nb, confidence=confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = xa / na, xb / nb
    low, high = mover_difference_interval(pa, la, ua, pb, lb, ub)
    return np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)


def minimum_detectable_gap(
    reference_rate: np.ndarray,
    n_group: np.ndarray,
    n_reference: np.ndarray,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    direction: str = "lower",
) -> np.ndarray:
    """Smallest |rate - reference_rate| a two-sided test at ``alpha`` detects with probability ``power``.

    Cohen's h: the arcsine-transformed rates differ by ``(z_{1-alpha/2} + z_power) * sqrt(1/n_group +
    1/n_reference)``. ``direction`` is where the group's rate lies: "lower" (a metric where higher is better:
    how much worse must the group be), "higher" (FPR, FDR) or "either" (the smaller of the two). Infinite
    where even the most extreme rate could not be detected (the groups are too small), NaN where a size is 0
    or the reference rate is undefined. A planning number (normal approximation), not an exact power.
    """
    p = np.asarray(reference_rate, dtype=float)
    n_g = np.asarray(n_group, dtype=float)
    n_r = np.asarray(n_reference, dtype=float)
    z_sum = float(ndtri(1.0 - alpha / 2.0) + ndtri(power))
    with np.errstate(invalid="ignore", divide="ignore"):
        h = z_sum * np.sqrt(1.0 / n_g + 1.0 / n_r)
        phi = 2.0 * np.arcsin(np.sqrt(np.clip(p, 0.0, 1.0)))
    down_phi, up_phi = phi - h, phi + h
    down = np.where(down_phi >= 0.0, p - np.sin(np.maximum(down_phi, 0.0) / 2.0) ** 2, np.inf)
    up = np.where(up_phi <= np.pi, np.sin(np.minimum(up_phi, np.pi) / 2.0) ** 2 - p, np.inf)
    if direction == "lower":
        gap = down
    elif direction == "higher":
        gap = up
    elif direction == "either":
        gap = np.minimum(down, up)
    else:
        raise ValueError(f"direction must be 'lower', 'higher' or 'either', got {direction!r}")
    undefined = np.isnan(p) | ~(n_g > 0) | ~(n_r > 0)
    return np.where(undefined, np.nan, gap)
