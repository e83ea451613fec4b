"""Stratified count bootstrap and percentile intervals.

A row bootstrap that keeps each stratum's size fixed (a stratified bootstrap) draws, per stratum, ``n_s``
rows with replacement; for any statistic of the stratum's confusion counts this is exactly one multinomial
draw of ``n_s`` over the stratum's cells with the observed cell shares as probabilities. So a resample
costs ``O(strata x cells)`` instead of ``O(rows)``, and all resamples come from a single call that returns
an array ``(n_boot, strata, cells)``. Which strata to keep fixed is the caller's choice: the audit uses the
partition it reports (each source x the groups of one attribute), never the cross of every attribute, where
a stratum of one case would be redrawn unchanged and its group's interval would collapse.
"""

from __future__ import annotations

import numpy as np

def multinomial_rows(cells: np.ndarray, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """A resample ``(n_boot, rows, cells)`` of every row of ``cells``: one multinomial draw of the row's size
    over its cells with the observed shares (a row bootstrap of that stratum). Empty rows stay 0."""
    cells = np.asarray(cells, dtype=float)
    out = np.zeros((n_boot, *cells.shape))
    sizes = cells.sum(axis=1)
    full = sizes > 0
    if full.any():
        out[:, full] = rng.multinomial(
            sizes[full].astype(np.int64), cells[full] / sizes[full, None], size=(n_boot, int(full.sum()))
        )
    return out


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
