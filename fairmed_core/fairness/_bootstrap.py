"""Stratified count bootstrap and percentile intervals.

A row bootstrap that keeps each stratum's size fixed (a stratified bootstrap) draws, per stratum, ``n_s``
rows with replacement; for any statistic of the stratum's confusion counts this is exactly one multinomial
draw of ``n_s`` over the stratum's cells with the observed cell shares as probabilities. So a resample
costs ``O(strata x cells)`` instead of ``O(rows)``, and all resamples come from a single call that returns
an array ``(n_boot, strata, cells)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_MAX_CHUNK_VALUES = 4_000_000
"""Upper bound on resample values held at once; resamples are drawn in chunks to bound memory."""


def stratified_count_draws(
    counts: np.ndarray, *, n_boot: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield resampled counts in chunks of shape ``(b, strata, cells)`` totalling ``n_boot`` resamples.

    Every stratum keeps its size (rows of ``counts`` must be non-empty).
    """
    counts = np.asarray(counts, dtype=np.int64)
    sizes = counts.sum(axis=1)
    if (sizes <= 0).any():
        raise ValueError("every stratum must hold at least one case")
    shares = counts / sizes[:, None]
    chunk = max(1, min(n_boot, _MAX_CHUNK_VALUES // max(1, counts.size)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        yield rng.multinomial(sizes, shares, size=(b, counts.shape[0]))
        done += b


def percentile_interval(samples: np.ndarray, *, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN resamples (where a statistic was undefined).

    Uses numpy's default 'linear' quantile rule, as fairlearn's ``MetricFrame`` does. Columns with no
    defined resample give NaN. Vectorised: ``np.nanquantile`` falls back to a Python loop per column.
    """
    samples = np.asarray(samples, dtype=float)
    tail = (1.0 - confidence) / 2.0
    if samples.shape[0] == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    if not np.isnan(samples).any():
        low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
        return low, high
    ordered = np.sort(samples, axis=0)  # NaN sorts last
    valid = (~np.isnan(samples)).sum(axis=0)

    def at(q: float) -> np.ndarray:
        position = q * np.maximum(valid - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(valid - 1, 0))
        lo = np.take_along_axis(ordered, below[None], axis=0)[0]
        hi = np.take_along_axis(ordered, above[None], axis=0)[0]
        value = lo + (hi - lo) * (position - below)
        return np.where(valid > 0, value, np.nan)

    return at(tail), at(1.0 - tail)


def bootstrap_standard_error(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(standard error with ddof=1, number of defined resamples) over axis 0, ignoring NaN."""
    samples = np.asarray(samples, dtype=float)
    valid = ~np.isnan(samples)
    count = valid.sum(axis=0)
    filled = np.where(valid, samples, 0.0)
    mean = np.divide(filled.sum(axis=0), count, out=np.zeros(count.shape), where=count > 0)
    squares = np.where(valid, (samples - mean) ** 2, 0.0).sum(axis=0)
    se = np.full(count.shape, np.nan)
    np.divide(squares, count - 1, out=se, where=count > 1)
    return np.sqrt(se), count
