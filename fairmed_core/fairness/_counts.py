"""Lay out the strata of an encoded table and count confusion cells per stratum and per reporting unit.

A *stratum* is one combination of (source, value of every sensitive attribute) that occurs in the data.
A *unit* is one reported group: (scope, attribute, group), where the scope is a source or the pooled "ALL",
and the attribute is "overall", a sensitive attribute or the intersection of all of them. Every unit is a
union of strata, so unit counts are a sparse 0/1 matrix times stratum counts. This holds for resampled
counts as well: one stratified resample of the strata gives a coherent resample of every unit, which keeps
differences between groups, to the overall value and across attributes and sources correctly correlated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from fairmed_core.fairness._encode import EncodedTable

POOLED_SCOPE = "ALL"
OVERALL_ATTRIBUTE = "overall"
OVERALL_GROUP = "ALL"


@dataclass(frozen=True)
class Block:
    """The units of one (scope, attribute): one unit per group, at ``units`` in the unit arrays."""

    scope: str
    attribute: str
    groups: tuple[str, ...]
    units: slice
    attribute_index: int | None  # index into EncodedTable.attributes; None for "overall"
    scope_index: int | None  # index into EncodedTable.sources; None for the pooled scope


@dataclass(frozen=True, eq=False)
class Layout:
    """Strata of the table and the sparse map from strata to units."""

    stratum_of_row: np.ndarray
    n_strata: int
    blocks: tuple[Block, ...]
    membership: scipy.sparse.csr_matrix  # (n_units, n_strata), 0/1

    @property
    def n_units(self) -> int:
        return int(self.membership.shape[0])

    def block(self, scope: str, attribute: str) -> Block:
        for block in self.blocks:
            if block.scope == scope and block.attribute == attribute:
                return block
        raise KeyError((scope, attribute))


def build_layout(table: EncodedTable) -> Layout:
    """Find the strata and map them onto the units of every (scope, attribute)."""
    singles = table.attributes[: table.n_single_attributes]
    key_columns = [table.source_codes] + [a.codes for a in singles]
    dims = [max(1, len(table.sources))] + [len(a.levels) for a in singles]
    if float(np.prod(np.asarray(dims, dtype=float))) < 2.0**62:
        key = np.ravel_multi_index(tuple(key_columns), tuple(dims))
        unique_keys, stratum_of_row = np.unique(key, return_inverse=True)
        stratum_keys = np.stack(np.unravel_index(unique_keys, tuple(dims)), axis=1)
    else:  # astronomically many combinations: fall back to row-wise uniqueness
        stratum_keys, stratum_of_row = np.unique(np.stack(key_columns, axis=1), axis=0, return_inverse=True)
    stratum_of_row = stratum_of_row.reshape(-1).astype(np.int64)
    n_strata = stratum_keys.shape[0]

    scopes: list[tuple[str, int | None]] = [(s, i) for i, s in enumerate(table.sources)]
    scopes.append((POOLED_SCOPE, None))
    blocks: list[Block] = []
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    start = 0
    single_dims = tuple(len(a.levels) for a in singles)
    for scope, scope_index in scopes:
        in_scope = np.ones(n_strata, dtype=bool) if scope_index is None else stratum_keys[:, 0] == scope_index
        strata = np.flatnonzero(in_scope)
        partitions: list[tuple[str, tuple[str, ...], np.ndarray, int | None]] = [
            (OVERALL_ATTRIBUTE, (OVERALL_GROUP,), np.zeros(strata.size, dtype=np.int64), None)
        ]
        for index, attribute in enumerate(table.attributes):
            if attribute.is_intersection:
                members = np.asarray(attribute.members, dtype=np.int64)
                group_of_stratum = np.ravel_multi_index(
                    tuple(stratum_keys[strata][:, 1 + members].T), tuple(single_dims[m] for m in members)
                )
            else:
                group_of_stratum = stratum_keys[strata, 1 + index]
            partitions.append((attribute.name, attribute.levels, group_of_stratum, index))
        for name, levels, group_of_stratum, attribute_index in partitions:
            blocks.append(
                Block(
                    scope=scope,
                    attribute=name,
                    groups=tuple(levels),
                    units=slice(start, start + len(levels)),
                    attribute_index=attribute_index,
                    scope_index=scope_index,
                )
            )
            rows.append(start + group_of_stratum)
            cols.append(strata)
            start += len(levels)
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    membership = scipy.sparse.csr_matrix((np.ones(row.size), (row, col)), shape=(start, n_strata))
    return Layout(
        stratum_of_row=stratum_of_row,
        n_strata=n_strata,
        blocks=tuple(blocks),
        membership=membership,
    )


def stratum_confusion_counts(table: EncodedTable, layout: Layout) -> np.ndarray:
    """Confusion counts per stratum, ``(n_strata, K * K)`` with cell ``true * K + predicted``."""
    k = table.n_classes
    cell = table.y_true * k + table.y_pred
    flat = np.bincount(layout.stratum_of_row * (k * k) + cell, minlength=layout.n_strata * k * k)
    return flat.reshape(layout.n_strata, k * k)


def unit_counts(layout: Layout, stratum_counts: np.ndarray) -> np.ndarray:
    """Sum stratum counts ``(..., n_strata, cells)`` into unit counts ``(..., n_units, cells)``."""
    stratum_counts = np.asarray(stratum_counts, dtype=float)
    lead = stratum_counts.shape[:-2]
    s, c = stratum_counts.shape[-2:]
    moved = np.moveaxis(stratum_counts.reshape(-1, s, c), 1, 0).reshape(s, -1)
    summed = layout.membership @ moved  # (n_units, lead * c)
    out = np.moveaxis(summed.reshape(layout.n_units, -1, c), 0, 1)
    return out.reshape(*lead, layout.n_units, c)
