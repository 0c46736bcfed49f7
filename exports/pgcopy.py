"""Parse PostgreSQL's binary COPY format into NumPy and Arrow: pure, no I/O.

The export reads PostgreSQL with `COPY (SELECT array_agg(...), string_agg(...) ...)
TO STDOUT (FORMAT binary)`: a few rows, each holding whole columns as one array or
one concatenated text, so the client parses a handful of messages instead of one per
database row. Layouts (PostgreSQL documentation, "COPY" and `array_send`):

- file: 11-byte signature, int32 flags, int32 header-extension length (+ extension),
  tuples, int16 -1;
- tuple: int16 field count, then per field an int32 byte length (-1 for NULL) and
  the bytes;
- one-dimensional array without NULLs: int32 ndim, int32 has-null flag, int32
  element type, int32 length, int32 lower bound, then per element an int32 length
  and the value (big-endian), so fixed-size elements sit at a fixed stride.
"""

from __future__ import annotations

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
BAD_LAYOUT = "Unexpected binary COPY data: {what}."


def tuples(data: bytes) -> list[list[memoryview | None]]:
    """Split binary COPY output into tuples of raw field values (None for NULL)."""
    if not data.startswith(SIGNATURE):
        raise ValueError(BAD_LAYOUT.format(what="no signature"))
    view = memoryview(data)
    pos = len(SIGNATURE) + 4
    pos += 4 + int.from_bytes(view[pos : pos + 4], "big")
    out = []
    while True:
        count = int.from_bytes(view[pos : pos + 2], "big", signed=True)
        pos += 2
        if count == -1:
            return out
        fields: list[memoryview | None] = []
        for _ in range(count):
            size = int.from_bytes(view[pos : pos + 4], "big", signed=True)
            pos += 4
            if size < 0:
                fields.append(None)
            else:
                fields.append(view[pos : pos + size])
                pos += size
        out.append(fields)


def int_array(value: memoryview | None, itemsize: int = 8) -> np.ndarray:
    """The int64 values of a binary one-dimensional int8/int4 array (NULL: empty)."""
    if value is None:
        return np.zeros(0, dtype=np.int64)
    header = np.frombuffer(value, dtype=">i4", count=3)
    ndim, has_null = int(header[0]), int(header[1])
    if ndim == 0:
        return np.zeros(0, dtype=np.int64)
    if ndim != 1 or has_null:
        raise ValueError(BAD_LAYOUT.format(what="array with NULLs or dimensions"))
    n = int(np.frombuffer(value, dtype=">i4", count=1, offset=12)[0])
    dtype = np.dtype([("len", ">i4"), ("v", f">i{itemsize}")])
    items = np.frombuffer(value, dtype=dtype, count=n, offset=20)
    if n and not (items["len"] == itemsize).all():
        raise ValueError(BAD_LAYOUT.format(what="element size"))
    return items["v"].astype(np.int64)


# --- packed integer columns ---------------------------------------------------------

WORD_BITS = 63  # bits of a packed int8 word, so that every word stays non-negative


def pack_layout(spans: dict[str, int]) -> list[list[tuple[str, int, int]]] | None:
    """Place non-negative fields into as few int8 words as their spans allow.

    `spans` maps each field to its largest value (fields are placed in this order,
    from the low bits up, a new word when the current one is full); returns per
    word its (field, shift, bits), or None when a field needs more than
    `WORD_BITS` bits. Aggregating one array of packed words costs PostgreSQL far
    less than one array per field.
    """
    words, current, used = [], [], 0
    for name, span in spans.items():
        bits = max(1, int(span).bit_length())
        if bits > WORD_BITS:
            return None
        if used + bits > WORD_BITS:
            words.append(current)
            current, used = [], 0
        current.append((name, used, bits))
        used += bits
    return [*words, current] if current else words


def pack_sql(layout, expressions: dict[str, str]) -> list[str]:
    """SQL of each packed word: `(expression)::int8 << shift` of its fields, OR-ed
    (each expression must give a value from 0 to its span)."""
    return [
        " | ".join(f"(({expressions[name]})::int8 << {shift})" for name, shift, _ in w)
        for w in layout
    ]


def unpack(layout, words: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The int64 fields of packed words (the inverse of `pack_sql`)."""
    out = {}
    for fields, word in zip(layout, words, strict=True):
        for name, shift, bits in fields:
            out[name] = (word >> shift) & ((1 << bits) - 1)
    return out
