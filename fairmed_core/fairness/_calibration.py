"""Score-based metrics (AUROC, expected calibration error): exact estimates from rows, fast bootstrap from bins.

Point estimates are exact:

* AUROC is the Mann-Whitney statistic with average ranks for ties, which equals
  ``sklearn.metrics.roc_auc_score``; it is undefined (NaN) for a group with a single class.
* ECE uses 10 equal-width bins of the score (bin ``k`` holds ``[k/10, (k+1)/10)``, the last bin also holds
  1.0): ``sum_k (n_k / n) * |mean(y in k) - mean(score in k)|``. For a binary task ``y`` is the positive label
  and the score is P(positive); for a multi-class task the score is read as the confidence of the predicted
  class and ``y`` is "the prediction is correct" (top-label calibration).

Bootstrap approximation (documented here because it is one): a group's rows are summarised as cells
(label, fine score bin) with 1,000 equal-width fine bins nested in the 10 ECE bins (100 when AUROC is not
resampled), each cell keeping its count and its exact score sum. A stratified resample of the group is one multinomial draw over its non-empty
cells. From a resample,

* ECE is computed with each cell's mean score standing in for its rows' scores. At the observed counts this
  reproduces the exact ECE, and the only approximation is the spread of scores inside a 0.001-wide cell.
* AUROC is computed with pairs in the same fine bin counted as ties (1/2). The binned AUROC of the observed
  data differs from the exact one by the within-bin ordering only; the bootstrap distribution is shifted by
  that difference so the percentile interval is centred on the exact estimate (clipped to [0, 1]).

The cost is one multinomial draw per group over at most 2,000 cells per resample, independent of the number
of rows. Each partition of a scope (an attribute's groups, or the single "overall" group) is resampled
stratified by its own groups; a group-vs-overall difference uses the sum of the groups' draws as the overall
value so that the two stay correlated as they are in the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_ECE_BINS = 10
N_FINE_BINS = 1000
"""Fine score bins for the AUROC bootstrap (pairs inside one bin count as ties)."""
N_FINE_BINS_ECE_ONLY = 100
"""Fine bins when only ECE is resampled: ECE needs no score order inside an ECE bin, only score sums, so
cells 0.01 wide already make the within-cell approximation negligible, at a tenth of the cost."""


def fine_bins(score: np.ndarray, n_fine: int) -> np.ndarray:
    """Fine score bin in [0, n_fine); the ECE bin is ``fine // (n_fine // 10)``."""
    return np.minimum((np.asarray(score, dtype=float) * n_fine).astype(np.int64), n_fine - 1)


def exact_auroc_by_group(
    score: np.ndarray,
    positive: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    *,
    score_order: np.ndarray | None = None,
) -> np.ndarray:
    """AUROC per group from rows (average ranks within each group), NaN for single-class groups.

    One sort serves every group: ranks restart at each group boundary and tied scores share their
    average rank, so the rank-sum of positives gives Mann-Whitney's U = AUROC * P * N. Pass
    ``score_order`` (a stable argsort of ``score``) to reuse it across partitions of the same rows; the
    group sort on top of it is then a cheap stable radix sort of small integers.
    """
    if score_order is None:
        score_order = np.argsort(score, kind="stable")
    order = score_order[np.argsort(group[score_order], kind="stable")]
    s, g, y = score[order], group[order], positive[order].astype(float)
    n = s.size
    if n == 0:
        return np.full(n_groups, np.nan)
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = np.arange(n) - group_start + 1.0
    new_run = new_group | np.r_[True, s[1:] != s[:-1]]
    run = np.cumsum(new_run) - 1
    average_rank = np.bincount(run, weights=rank) / np.bincount(run)
    rank_sum_pos = np.bincount(g, weights=average_rank[run] * y, minlength=n_groups)
    n_pos = np.bincount(g, weights=y, minlength=n_groups)
    n_neg = np.bincount(g, minlength=n_groups) - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def calibration_cells(
    score: np.ndarray, positive: np.ndarray, group: np.ndarray, n_groups: int, *, n_fine: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group cell counts and exact score sums, both ``(n_groups, 2 * n_fine)``.

    Cell ``label * n_fine + fine bin``: negatives first, then positives, each in score order.
    """
    n_cells = 2 * n_fine
    cell = group.astype(np.int64) * n_cells + positive.astype(np.int64) * n_fine + fine_bins(score, n_fine)
    size = n_groups * n_cells
    counts = np.bincount(cell, minlength=size).reshape(n_groups, n_cells).astype(float)
    sums = np.bincount(cell, weights=score, minlength=size).reshape(n_groups, n_cells)
    return counts, sums


def binned_auroc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> np.ndarray:
    """AUROC from histograms over ordered score bins (last axis); same-bin pairs count 1/2."""
    neg_below = np.cumsum(neg_hist, axis=-1) - neg_hist
    wins = (pos_hist * (neg_below + 0.5 * neg_hist)).sum(axis=-1)
    pairs = pos_hist.sum(axis=-1) * neg_hist.sum(axis=-1)
    out = np.full(pairs.shape, np.nan)
    np.divide(wins, pairs, out=out, where=pairs > 0)
    return out


def ece_from_bins(n_per_bin: np.ndarray, pos_per_bin: np.ndarray, score_per_bin: np.ndarray) -> np.ndarray:
    """ECE from per-ECE-bin case counts, positive counts and score sums (last axis = the 10 bins)."""
    n = n_per_bin.sum(axis=-1)
    gap = np.abs(pos_per_bin - score_per_bin).sum(axis=-1)
    out = np.full(n.shape, np.nan)
    np.divide(gap, n, out=out, where=n > 0)
    return out


def exact_ece(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Exact ECE from cell counts and score sums ``(..., 2 * n_fine)`` (score sums make it exact)."""
    shape = counts.shape[:-1] + (2, N_ECE_BINS, counts.shape[-1] // (2 * N_ECE_BINS))
    c = counts.reshape(shape).sum(axis=-1)
    s = sums.reshape(shape).sum(axis=-1)
    return ece_from_bins(c.sum(axis=-2), c[..., 1, :], s.sum(axis=-2))


@dataclass(frozen=True, eq=False)
class CalibrationBootstrap:
    """Bootstrap draws of a partition of one scope.

    ``groups`` is ``(n_boot, n_groups, 2)`` with AUROC and ECE per resample and group; ``pooled`` is
    ``(n_boot, 2)`` for the union of the groups in the same resamples (used for group-vs-overall gaps).
    """

    groups: np.ndarray
    pooled: np.ndarray


def _resampled_statistics(
    draws: np.ndarray, cells: np.ndarray, mean_score: np.ndarray, *, n_fine: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUROC, ECE, per-ECE-bin summaries) of draws ``(B, c)`` over the given non-empty cells."""
    fine = cells % n_fine
    is_pos = cells >= n_fine
    # Compress to the fine bins that occur, keeping their order: AUROC only needs the order of bins.
    bins_used, bin_index = np.unique(fine, return_inverse=True)
    n_used = bins_used.size
    b = draws.shape[0]
    pos_hist = np.zeros((b, n_used))
    neg_hist = np.zeros((b, n_used))
    pos_hist[:, bin_index[is_pos]] = draws[:, is_pos]
    neg_hist[:, bin_index[~is_pos]] = draws[:, ~is_pos]
    auroc = binned_auroc(pos_hist, neg_hist)
    ece_bin = fine // (n_fine // N_ECE_BINS)
    to_bins = np.zeros((cells.size, N_ECE_BINS))
    to_bins[np.arange(cells.size), ece_bin] = 1.0
    n_per_bin = draws @ to_bins
    pos_per_bin = draws[:, is_pos] @ to_bins[is_pos]
    score_per_bin = draws @ (to_bins * mean_score[:, None])
    ece = ece_from_bins(n_per_bin, pos_per_bin, score_per_bin)
    summaries = np.stack([n_per_bin, pos_per_bin, score_per_bin], axis=1)  # (B, 3, 10)
    return auroc, ece, summaries


def bootstrap_partition(
    counts: np.ndarray,
    sums: np.ndarray,
    exact_auroc: np.ndarray,
    exact_pooled_auroc: float,
    *,
    n_boot: int,
    rng: np.random.Generator,
) -> CalibrationBootstrap:
    """Stratified bootstrap of AUROC and ECE for each group of a partition and for their union.

    ``counts``/``sums`` are ``(n_groups, 2 * n_fine)`` from :func:`calibration_cells`. The union's resample is
    the sum of the groups' resamples, so group-vs-union differences keep their correlation.
    """
    n_groups = counts.shape[0]
    out = np.full((n_boot, n_groups, 2), np.nan)
    n_fine = counts.shape[1] // 2
    pooled_hist = np.zeros((n_boot, 2 * n_fine))
    pooled_bins = np.zeros((n_boot, 3, N_ECE_BINS))
    for g in range(n_groups):
        cells = np.flatnonzero(counts[g])
        if cells.size == 0:
            continue
        n = int(counts[g, cells].sum())
        draws = rng.multinomial(n, counts[g, cells] / n, size=n_boot).astype(float)
        mean_score = sums[g, cells] / counts[g, cells]
        auroc, ece, summaries = _resampled_statistics(draws, cells, mean_score, n_fine=n_fine)
        observed_auroc, _, _ = _resampled_statistics(
            counts[g, cells][None, :], cells, mean_score, n_fine=n_fine
        )
        shift = exact_auroc[g] - observed_auroc[0]
        out[:, g, 0] = np.clip(auroc + shift, 0.0, 1.0)
        out[:, g, 1] = ece
        pooled_hist[:, cells] += draws
        pooled_bins += summaries
    total = counts.sum(axis=0)
    pooled_auroc = binned_auroc(pooled_hist[:, n_fine:], pooled_hist[:, :n_fine])
    observed_pooled = binned_auroc(total[n_fine:], total[:n_fine])
    pooled = np.stack(
        [
            np.clip(pooled_auroc + (exact_pooled_auroc - observed_pooled), 0.0, 1.0),
            ece_from_bins(pooled_bins[:, 0], pooled_bins[:, 1], pooled_bins[:, 2]),
        ],
        axis=-1,
    )
    return CalibrationBootstrap(groups=out, pooled=pooled)
