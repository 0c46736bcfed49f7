"""The ids of the judgments behind a snapshot, stored compactly: pure NumPy.

A snapshot can rest on millions of judgments. Their ids are kept ascending, as the
differences between neighbours (small numbers: ids of one project come in runs)
in little-endian int64, zlib-compressed: a few bytes per thousand judgments where
they are consecutive, at most about 8 bytes each. `ids_sha256` is the sha256 of the
plain ascending int64 little-endian bytes, whatever the encoding, so anyone can check a
list of ids against a snapshot.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from exports.arrays import distinct

ZLIB_LEVEL = 6


def canonical(ids) -> np.ndarray:
    """Distinct ids, ascending, as int64."""
    return distinct(np.asarray(ids, dtype=np.int64))


def encode(ids) -> bytes:
    """Compress ascending ids (deltas, zlib)."""
    ids = canonical(ids)
    deltas = np.diff(ids, prepend=np.int64(0)).astype("<i8")
    return zlib.compress(deltas.tobytes(), ZLIB_LEVEL)


def decode(blob: bytes) -> np.ndarray:
    """The ascending int64 ids of an `encode` blob."""
    deltas = np.frombuffer(zlib.decompress(bytes(blob)), dtype="<i8")
    return np.cumsum(deltas, dtype=np.int64)


def ids_sha256(ids) -> str:
    """sha256 of the ascending ids as int64 little-endian bytes."""
    return hashlib.sha256(canonical(ids).astype("<i8").tobytes()).hexdigest()
