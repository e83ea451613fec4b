"""How well latent groups (FairGRPO's clusters of reward vectors) recover the demographic groups they stand in for.

The paper's v2 claims that the groups EQPO discovers without demographics align with the masked attributes. On
the benchmark the attributes are known, so the claim can be measured: within one step and one data source (the
clustering's scope), every pair of prompts either shares a true group or not, and shares a cluster or not.
Cluster labels are not comparable across steps, so pairs are only formed within a step; the counts of the four
kinds of pair add up over steps, and the adjusted Rand index is computed from the pooled pair-confusion counts
(the same formula as ``sklearn.metrics.adjusted_rand_score`` on one partition: ARI is Cohen's kappa on pairs).
0 is chance agreement, 1 perfect recovery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairCounts", "pair_counts"]


@dataclass(frozen=True)
class PairCounts:
    """Pairs of prompts (same step, same source): both same group and cluster (``both``), same group only
    (``group_only``), same cluster only (``cluster_only``), neither (``neither``)."""

    both: int = 0
    group_only: int = 0
    cluster_only: int = 0
    neither: int = 0

    def __add__(self, other: PairCounts) -> PairCounts:
        return PairCounts(self.both + other.both, self.group_only + other.group_only,
                          self.cluster_only + other.cluster_only, self.neither + other.neither)

    @property
    def pairs(self) -> int:
        return self.both + self.group_only + self.cluster_only + self.neither

    def adjusted_rand_index(self) -> float | None:
        """ARI from the pooled pair counts; None when it is undefined (no pairs, or one of the two partitions
        puts every pair alike)."""
        tp, fn, fp, tn = self.both, self.group_only, self.cluster_only, self.neither
        denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
        if not self.pairs or denominator == 0:
            return None
        return 2.0 * (tp * tn - fn * fp) / denominator

    def metrics(self, prefix: str = "latent_groups") -> dict[str, float]:
        return {f"{prefix}/pairs_both": float(self.both), f"{prefix}/pairs_group_only": float(self.group_only),
                f"{prefix}/pairs_cluster_only": float(self.cluster_only),
                f"{prefix}/pairs_neither": float(self.neither)}

    @classmethod
    def from_metrics(cls, record: Mapping[str, object], prefix: str = "latent_groups") -> PairCounts | None:
        keys = ("both", "group_only", "cluster_only", "neither")
        values = [record.get(f"{prefix}/pairs_{key}") for key in keys]
        if any(not isinstance(value, (int, float)) for value in values):
            return None
        return cls(*(int(value) for value in values))


def pair_counts(domains: Sequence[str], true_groups: Sequence[str], clusters: Sequence[str], *,
                unknown: str = "UNK") -> PairCounts:
    """The four kinds of pair among one step's prompts, within each source; prompts whose true group has an
    unknown part (``unknown`` in the key) take no part (their truth is not known)."""
    if not len(domains) == len(true_groups) == len(clusters):
        raise ValueError("domains, true_groups and clusters must have one entry per prompt")
    rows = [(d, g, c) for d, g, c in zip(domains, true_groups, clusters) if unknown not in str(g).split(",")]
    both = group_only = cluster_only = neither = 0
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if rows[i][0] != rows[j][0]:
                continue
            same_group, same_cluster = rows[i][1] == rows[j][1], rows[i][2] == rows[j][2]
            both += same_group and same_cluster
            group_only += same_group and not same_cluster
            cluster_only += same_cluster and not same_group
            neither += not same_group and not same_cluster
    return PairCounts(both, group_only, cluster_only, neither)
