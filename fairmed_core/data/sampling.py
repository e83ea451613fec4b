"""A fixed stratified sample of a split: which cases a held-out evaluation answers when it does not answer all.

A split is stored in source order (every chest X-ray, then every dermoscopy image, ...), so "the first 300
cases" of a 600-case split is two sources out of three. :func:`stratified_sample` draws instead by source, then
by group within each source (the cross of the recorded attributes, a missing value being a group of its own),
with proportional allocation and a floor per stratum where the size allows. Which cases of a stratum are taken
is decided by a hash of ``(seed, case_id)``: the same cases at every step of a run and for every run given the
same data, size and seed, whatever the row order. Pure: no model, no torch.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from fairmed_core.data.labels import attribute_label, group_label, source_label
from fairmed_core.data.schema import UNKNOWN
from fairmed_core.errors import FairMedInputError

__all__ = ["DEFAULT_SAMPLE_SEED", "MIN_PER_GROUP", "MIN_PER_SOURCE", "STRATIFIED", "WHOLE_SPLIT",
           "SampleComposition", "stratified_sample"]

# One seed for every held-out sample unless told otherwise: runs trained with different seeds are then scored on
# the same cases, so their curves differ by the training only.
DEFAULT_SAMPLE_SEED = 0
# A per-source curve drawn from 30 cases moves by 0.033 per flipped answer (binomial standard error about 0.09 at
# accuracy 0.5); fewer would make one source's curve mostly noise. One case per group keeps every group seen.
MIN_PER_SOURCE = 30
MIN_PER_GROUP = 1
WHOLE_SPLIT = "whole split"
STRATIFIED = "stratified by source and group"
_SOURCE = "dataset"  # the data contract's source column


@dataclass(frozen=True)
class SampleComposition:
    """What a held-out sample holds: cases per source and per group (sampled, and in the split), the seed and the
    rule that drew it. ``groups`` keys are value tuples in the order of ``attributes`` (``UNKNOWN`` where the
    value is missing); ``case_ids_sha256`` fingerprints the sampled ids (sorted, so row order does not matter), so
    a resumed run can check it draws the same cases."""

    split: str | None  # None: every case of the dataset
    n_split: int
    n_sample: int
    requested: int | None  # the size asked for; None: the whole split
    seed: int
    rule: str  # WHOLE_SPLIT or STRATIFIED
    attributes: tuple[str, ...]
    sources: tuple[tuple[str, int, int], ...]  # (source, sampled, in split), in split order
    groups: tuple[tuple[str, tuple[str, ...], int, int], ...]  # (source, values, sampled, in split)
    min_per_source: int = MIN_PER_SOURCE
    min_per_group: int = MIN_PER_GROUP
    case_ids_sha256: str = ""

    @property
    def whole(self) -> bool:
        return self.rule == WHOLE_SPLIT

    def describe(self, what: str = "held-out sample") -> str:
        """One line for a page or a card: "held-out sample: 300 of 600 val cases, stratified by source and group:
        chest X-ray 100, dermoscopy 100, mammography 100; seed 0"."""
        split = "" if self.split is None else f"{self.split} "
        per_source = ", ".join(f"{source_label(s)} {k:,}" for s, k, _ in self.sources)
        if self.whole:
            short = (f" ({self.requested:,} were asked; the split has fewer)"
                     if self.requested is not None and self.requested > self.n_split else "")
            scope = "the whole dataset" if self.split is None else f"the whole {self.split} split"
            return f"{what}: {scope}, {self.n_split:,} cases{short}: {per_source}"
        return (f"{what}: {self.n_sample:,} of {self.n_split:,} {split}cases, {STRATIFIED}: {per_source}; "
                f"seed {self.seed}")

    def groups_table(self) -> pd.DataFrame:
        """Cases per group and source, in words: source, group, cases in the sample, cases in the split. An
        attribute that no case of a source records (skin tone in chest X-rays) is left out of its groups' names."""
        recorded = {source: [any(values[i] != UNKNOWN for s, values, _, _ in self.groups if s == source)
                             for i in range(len(self.attributes))] for source, _, _ in self.sources}
        rows = []
        for source, values, sampled, in_split in self.groups:
            words = [f"{attribute_label(a)} not recorded" if v == UNKNOWN else group_label(v)
                     for a, v, keep in zip(self.attributes, values, recorded[source]) if keep]
            rows.append({"Source": source_label(source), "Group": ", ".join(words) or "no attribute recorded",
                         "Cases in the sample": sampled, "Cases in the split": in_split})
        return pd.DataFrame(rows, columns=["Source", "Group", "Cases in the sample", "Cases in the split"])

    def to_json(self) -> dict:
        return {"split": self.split, "n_split": self.n_split, "n_sample": self.n_sample,
                "requested": self.requested, "seed": self.seed, "rule": self.rule,
                "attributes": list(self.attributes), "sources": [list(s) for s in self.sources],
                "groups": [[s, list(v), k, n] for s, v, k, n in self.groups],
                "min_per_source": self.min_per_source, "min_per_group": self.min_per_group,
                "case_ids_sha256": self.case_ids_sha256}

    @classmethod
    def from_json(cls, data: object, *, source: str | None = None) -> SampleComposition:
        """The composition a run record holds; an error naming the file when it is not one."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not an object")
            return cls(
                split=None if data["split"] is None else str(data["split"]), n_split=int(data["n_split"]),
                n_sample=int(data["n_sample"]),
                requested=None if data.get("requested") is None else int(data["requested"]),
                seed=int(data["seed"]), rule=str(data["rule"]),
                attributes=tuple(str(a) for a in data["attributes"]),
                sources=tuple((str(s), int(k), int(n)) for s, k, n in data["sources"]),
                groups=tuple((str(s), tuple(str(v) for v in values), int(k), int(n))
                             for s, values, k, n in data["groups"]),
                min_per_source=int(data.get("min_per_source", MIN_PER_SOURCE)),
                min_per_group=int(data.get("min_per_group", MIN_PER_GROUP)),
                case_ids_sha256=str(data.get("case_ids_sha256", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise FairMedInputError(f"unreadable held-out sample composition ({error})", source=source) from None


def _count(value: object, name: str, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise FairMedInputError(f"{name} must be a whole number >= 0{' (0 or empty: every case)' if allow_none else ''}"
                                f", got {value!r}", column=name, hint="e.g. 300")
    return int(value)


def _allocate(sizes: Sequence[int], n: int, minimum: int) -> list[int]:
    """Cases per stratum: proportional to ``sizes``, summing to ``n`` (< sum of sizes), each at least
    ``minimum`` (or its size) where all floors fit in ``n``, else the largest floor that fits for all.

    Strata whose proportional share falls below their floor get the floor, and the rest is shared again among
    the others until no share falls below; shares are then rounded by largest remainder (ties: the earlier
    stratum), so every stratum gets the floor or the ceiling of its share and none more than its size."""
    floor = minimum
    while floor > 0 and sum(min(size, floor) for size in sizes) > n:
        floor -= 1
    fixed: dict[int, int] = {}
    while True:
        free = [i for i in range(len(sizes)) if i not in fixed]
        remaining = n - sum(fixed.values())
        total = sum(sizes[i] for i in free)
        quota = {i: remaining * sizes[i] / total for i in free}
        below = [i for i in free if quota[i] < min(sizes[i], floor)]
        if not below:
            break
        fixed.update({i: min(sizes[i], floor) for i in below})
    counts = dict(fixed) | {i: math.floor(quota[i]) for i in free}
    left = n - sum(counts.values())
    for i in sorted(free, key=lambda i: (-(quota[i] - math.floor(quota[i])), i))[:left]:
        counts[i] += 1
    return [counts[i] for i in range(len(sizes))]


def _rank(seed: int, case_id: object) -> int:
    """A case's place in its stratum's draw: a hash of (seed, id), independent of where the row sits (56 bits:
    a pandas int64 column holds it)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{case_id}".encode(), digest_size=7).digest(), "big")


def _group_order(values: tuple[str, ...]) -> tuple:
    return tuple((v == UNKNOWN, v) for v in values)  # the missing value last


def stratified_sample(cases: pd.DataFrame, n: int | None, *, split: str | None, attributes: Sequence[str],
                      seed: int = DEFAULT_SAMPLE_SEED, min_per_source: int = MIN_PER_SOURCE,
                      min_per_group: int = MIN_PER_GROUP) -> tuple[tuple[str, ...], SampleComposition]:
    """The case ids of a fixed stratified sample of ``n`` cases of ``split`` (None: all cases) of ``cases`` (a
    ``Dataset.cases`` frame: ``case_id``, ``dataset`` (the source), ``split`` and the ``attributes`` columns),
    in the split's order, with the sample's composition.

    ``n`` None or 0, or at least the split's size: the whole split. Otherwise the sources share ``n``
    proportionally (each at least ``min_per_source`` where possible), and each source's groups (the cross of
    ``attributes``, missing values a group of their own) share the source's cases the same way (each at least
    ``min_per_group``); within a group the cases with the smallest hash of ``(seed, case_id)`` are taken."""
    size = _count(n, "n", allow_none=True) or None
    seed = _count(seed, "seed", allow_none=False)
    attributes = tuple(attributes)
    missing = [c for c in ("case_id", _SOURCE, "split", *attributes) if c not in cases.columns]
    if missing:
        raise FairMedInputError(f"the cases have no column {missing[0]!r}", column=missing[0],
                                hint="pass a Dataset.cases frame and attributes it has")
    chosen = cases if split is None else cases[cases["split"].astype(str) == split]
    if chosen.empty:
        present = ", ".join(sorted(cases["split"].astype(str).unique())) or "none"
        raise FairMedInputError(f"there are no {split!r} cases to sample", column="split",
                                hint=f"splits present: {present}")
    frame = pd.DataFrame({"case_id": chosen["case_id"].astype(str).to_numpy(),
                          "source": chosen[_SOURCE].astype(str).to_numpy()})
    for attribute in attributes:
        frame[attribute] = chosen[attribute].fillna(UNKNOWN).astype(str).to_numpy()
    frame["_rank"] = [_rank(seed, case_id) for case_id in frame["case_id"]]
    whole = size is None or size >= len(frame)
    sources = list(dict.fromkeys(frame["source"]))
    by_source = {s: frame[frame["source"] == s] for s in sources}
    per_source = ([len(by_source[s]) for s in sources] if whole else
                  _allocate([len(by_source[s]) for s in sources], size, min_per_source))
    keep: list[int] = []
    group_rows = []
    for source, quota in zip(sources, per_source):
        block = by_source[source]
        members = ({(key if isinstance(key, tuple) else (key,)): rows
                    for key, rows in block.groupby(list(attributes), sort=False)} if attributes else {(): block})
        groups = sorted(members, key=_group_order)
        shares = ([len(members[g]) for g in groups] if quota >= len(block) else
                  _allocate([len(members[g]) for g in groups], quota, min_per_group))
        for group, share in zip(groups, shares):
            rows = members[group]
            keep += list(rows.sort_values(["_rank", "case_id"], kind="stable").index[:share])
            group_rows.append((source, group, share, len(rows)))
    ids = tuple(frame.loc[sorted(keep), "case_id"])
    composition = SampleComposition(
        split=split, n_split=len(frame), n_sample=len(ids), requested=size, seed=seed,
        rule=WHOLE_SPLIT if whole else STRATIFIED, attributes=attributes,
        sources=tuple((s, k, len(by_source[s])) for s, k in zip(sources, per_source)), groups=tuple(group_rows),
        min_per_source=min_per_source, min_per_group=min_per_group,
        case_ids_sha256=hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest())
    return ids, composition
