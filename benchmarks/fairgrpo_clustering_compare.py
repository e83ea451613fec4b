"""How far the authors' clustering of prompts without demographics (``clustering="authors"``) is from FairMed's
default, on reward histories like those FairGRPO clusters.

Histories: binary rollout rewards, G = 4, 8 to 64 prompts in one domain, drawn from 1 to 3 latent difficulty
groups (each group a success probability, uniform on [0, 1]). Both clusterings see the same history: FairMed's
default on the distinct vectors weighted by their counts (10 K-means restarts, seed 0, its elbow rule), the
authors' on the raw list (one k-means++ start, random_state 0, their elbow rule). Printed: how often k differs,
how often each picks k = 1, and the share of prompts whose cluster size N_g (which enters T_g) differs. Quoted in
docs/FAIRGRPO_DEVIATIONS.md.

Run:  .venv/bin/python benchmarks/fairgrpo_clustering_compare.py [--trials 200]
"""

from __future__ import annotations

import argparse

import numpy as np

from fairmed_core.training.fairgrpo_weights import (
    FairGRPOStatistics,
    cluster_unknown_groups,
    cluster_unknown_groups_authors,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    k_fairmed, k_authors, size_differs = [], [], []
    for _ in range(args.trials):
        n = int(rng.integers(8, 65))
        success = rng.random(int(rng.integers(1, 4)))
        which = rng.integers(0, len(success), size=n)
        vectors = (rng.random((n, 4)) < success[which][:, None]).astype(np.float64)
        stats = FairGRPOStatistics().update(vectors, ["d"] * n, ["UNK"] * n)
        kept = stats.unknown_reward_vectors["d"]
        ours = cluster_unknown_groups({"d": kept.vectors}, counts_by_domain={"d": kept.counts})["d"]
        theirs = cluster_unknown_groups_authors({"d": vectors})["d"]
        k_fairmed.append(ours.n_clusters)
        k_authors.append(theirs.n_clusters)
        our_sizes = [ours.cluster_sizes[ours.keys.index(key)] for key in ours.assign(vectors)]
        their_sizes = [theirs.cluster_sizes[theirs.keys.index(key)] for key in theirs.labels]
        size_differs.append(float(np.mean(np.array(our_sizes) != np.array(their_sizes))))
    k_fairmed, k_authors = np.array(k_fairmed), np.array(k_authors)
    print(f"{args.trials} histories (G = 4, 8-64 prompts, 1-3 latent difficulty groups):")
    print(f"  k differs: {int((k_fairmed != k_authors).sum())} ({100 * np.mean(k_fairmed != k_authors):.0f}%)")
    print(f"  k = 1 chosen: FairMed {int((k_fairmed == 1).sum())}, authors {int((k_authors == 1).sum())}")
    print(f"  mean k: FairMed {k_fairmed.mean():.2f}, authors {k_authors.mean():.2f}")
    print(f"  prompts whose cluster size N_g differs: {100 * np.mean(size_differs):.0f}% on average")


if __name__ == "__main__":
    main()
