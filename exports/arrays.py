"""Small NumPy helpers shared by the export modules: pure, no Django, no I/O."""

from __future__ import annotations

import numpy as np


def distinct(values) -> np.ndarray:
    """The sorted distinct values of an array.

    The same result as `np.unique(values)`, by sorting: NumPy 2.3+ answers a plain
    `np.unique` with a hash table that is ten to a hundred times slower on the
    integer arrays an export handles (ids, already nearly sorted).
    """
    values = np.sort(np.asarray(values))
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def positions(keys: np.ndarray, values) -> np.ndarray:
    """The index in `keys` (distinct, ascending) of each of `values`, every one of
    which is in `keys`: `np.searchsorted(keys, values)`, by a lookup table where
    the keys fill most of their range (as ids imported together do)."""
    values = np.asarray(values)
    if len(keys) and len(values) > len(keys):
        low, span = int(keys[0]), int(keys[-1]) - int(keys[0]) + 1
        if span <= 4 * len(keys):
            table = np.zeros(span, dtype=np.int64)
            table[keys - low] = np.arange(len(keys))
            return table[values - low]
    return np.searchsorted(keys, values)


def factorise(values) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, index of each value among them): what
    `np.unique(values, return_inverse=True)` gives, without its hash table."""
    keys = distinct(values)
    return keys, positions(keys, values)
