"""The data card: who is in a dataset (counts and prevalence per source, attribute, group and split) and a few
sample images per group, shown before any metric so a reviewer knows how much each group's numbers rest on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .schema import ALL, SPLITS, UNKNOWN, Dataset

__all__ = ["DataCard", "SampleImage", "data_card", "ALL_SOURCES", "ALL_SPLITS"]

ALL_SOURCES = ALL  # the source value of rows that pool every source
ALL_SPLITS = "all"  # the split value of rows that pool every split


@dataclass(frozen=True)
class SampleImage:
    """One sample case of a group, for the data card's image grid."""

    source: str
    attribute: str
    group: str
    case_id: str
    image_path: str
    answer: str


@dataclass(frozen=True, eq=False)
class DataCard:
    """Counts per (source, attribute, group, split) and sample images per (source, attribute, group).

    ``group_counts`` columns: ``source, attribute, group, split, n, n_positive, prevalence``; rows with source
    ``"ALL"`` pool the sources and rows with split ``"all"`` pool the splits. An attribute that a source never
    records (e.g. skin tone in chest X-rays: every case ``"UNK"``) has no rows for that source, but does for
    ``"ALL"``. ``prevalence`` is NaN when the dataset has no positive label (non-binary answers)."""

    name: str
    n_cases: int
    group_counts: pd.DataFrame
    samples: tuple[SampleImage, ...]


def _group_sort_key(group: str) -> tuple[int, str]:
    return (1 if group == UNKNOWN else 0, group)


def _recorded(cases: pd.DataFrame, attribute: str) -> bool:
    return bool((cases[attribute] != UNKNOWN).any())


def data_card(dataset: Dataset, *, samples_per_group: int = 4, seed: int = 0) -> DataCard:
    """Build the data card of ``dataset``; samples are drawn deterministically from ``seed``, half positive and
    half negative where the group has both."""
    cases = dataset.cases
    positive = (
        (cases["answer"] == dataset.positive_label).to_numpy()
        if dataset.positive_label is not None
        else np.zeros(len(cases), dtype=bool)
    )
    sources = list(dataset.sources)
    long_parts = []
    for attribute in dataset.attributes:
        long_parts.append(
            pd.DataFrame(
                {
                    "source": cases["dataset"].astype(str).to_numpy(),
                    "attribute": attribute,
                    "group": cases[attribute].astype(str).to_numpy(),
                    "split": cases["split"].astype(str).to_numpy(),
                    "positive": positive,
                }
            )
        )
    long = pd.concat(long_parts, ignore_index=True)
    recorded = {(s, a) for s in sources for a in dataset.attributes if _recorded(cases[cases["dataset"] == s], a)}
    keep = [(s, a) in recorded for s, a in zip(long["source"], long["attribute"])]
    pooled_sources = pd.concat([long[keep], long.assign(source=ALL_SOURCES)], ignore_index=True)
    pooled = pd.concat([pooled_sources, pooled_sources.assign(split=ALL_SPLITS)], ignore_index=True)
    counts = (
        pooled.groupby(["source", "attribute", "group", "split"], sort=False)["positive"]
        .agg(n="size", n_positive="sum")
        .reset_index()
    )
    counts["n"] = counts["n"].astype(int)
    counts["n_positive"] = counts["n_positive"].astype(int)
    counts["prevalence"] = counts["n_positive"] / counts["n"] if dataset.positive_label is not None else np.nan
    split_order = [*SPLITS, *sorted(set(cases["split"]) - set(SPLITS)), ALL_SPLITS]
    counts = counts.assign(
        _source=counts["source"].map({s: i for i, s in enumerate([*sources, ALL_SOURCES])}),
        _attribute=counts["attribute"].map({a: i for i, a in enumerate(dataset.attributes)}),
        _group=counts["group"].map(_group_sort_key),
        _split=counts["split"].map({s: i for i, s in enumerate(split_order)}),
    )
    counts = (
        counts.sort_values(["_source", "_attribute", "_group", "_split"])
        .drop(columns=["_source", "_attribute", "_group", "_split"])
        .reset_index(drop=True)
    )
    return DataCard(
        name=dataset.name,
        n_cases=len(cases),
        group_counts=counts,
        samples=_samples(dataset, positive, recorded, samples_per_group, seed),
    )


def _samples(
    dataset: Dataset, positive: np.ndarray, recorded: set, per_group: int, seed: int
) -> tuple[SampleImage, ...]:
    if per_group <= 0:
        return ()
    rng = np.random.default_rng(seed)
    cases = dataset.cases
    samples = []
    for source in dataset.sources:
        in_source = (cases["dataset"] == source).to_numpy()
        for attribute in dataset.attributes:
            if (source, attribute) not in recorded:
                continue
            values = cases[attribute].to_numpy()
            for group in sorted(set(values[in_source]), key=_group_sort_key):
                rows = np.flatnonzero(in_source & (values == group))
                positives = rng.permutation(rows[positive[rows]])
                negatives = rng.permutation(rows[~positive[rows]])
                n_positive = min(len(positives), max(per_group - len(negatives), (per_group + 1) // 2))
                chosen = [*positives[:n_positive], *negatives[: per_group - n_positive]]
                for row in sorted(chosen):
                    samples.append(
                        SampleImage(
                            source=source,
                            attribute=attribute,
                            group=str(group),
                            case_id=str(cases["case_id"].iat[row]),
                            image_path=str(cases["image_path"].iat[row]),
                            answer=str(cases["answer"].iat[row]),
                        )
                    )
    return tuple(samples)
