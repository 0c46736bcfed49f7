"""JSON Lines from Arrow tables in bulk: the bytes `json.dumps` would give per row.

Each row becomes `json.JSONEncoder(ensure_ascii=False).encode(row)` plus a newline,
with the keys in schema order, built column by column with `pyarrow.compute`:

- strings are escaped as the json module does with `ensure_ascii=False` (backslash,
  double quote, and control characters: `\\n \\r \\t \\b \\f` by name, the others as
  `\\u00XX`), replacing only the characters a batch actually contains;
- integers are cast to decimal strings; booleans become `true` / `false`;
- floats are formatted by Python's `float.__repr__` once per distinct value (the json
  module's format), then taken per row;
- message lists become `[{"role": ..., "content": ...}, ...]`.

No Django, no I/O; the tests compare the output with `json.dumps` row by row.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NAMED = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
_QUOTE, _BACKSLASH = 0x22, 0x5C


def utf8_bytes(strings: pa.Array) -> np.ndarray:
    """The UTF-8 bytes of a (possibly sliced) string array, without copying."""
    if len(strings) == 0:
        return np.zeros(0, dtype=np.uint8)
    offsets_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(strings.buffers()[1], dtype=offsets_type)
    start = offsets[strings.offset]
    end = offsets[strings.offset + len(strings)]
    data = strings.buffers()[2]
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)[start:end]


def escape(strings: pa.Array) -> pa.Array:
    """JSON string literals (quotes included) of every string, as the json module."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    data = utf8_bytes(strings)
    if (data == _BACKSLASH).any():
        strings = pc.replace_substring(strings, "\\", "\\\\")
    if (data == _QUOTE).any():
        strings = pc.replace_substring(strings, '"', '\\"')
    controls = data[data < 0x20]
    for code in np.unique(controls).tolist():
        strings = pc.replace_substring(
            strings, chr(code), _NAMED.get(code, f"\\u{code:04x}")
        )
    return pc.binary_join_element_wise('"', strings, '"', "")


def _floats(values: pa.Array) -> pa.Array:
    # Distinct bit patterns, so that 0.0 and -0.0 keep their own spelling.
    bits = values.to_numpy(zero_copy_only=False).astype(np.float64).view(np.int64)
    unique, inverse = np.unique(bits, return_inverse=True)
    text = pa.array(
        [_float_repr(float(v)) for v in unique.view(np.float64)], pa.string()
    )
    return text.take(pa.array(inverse.reshape(-1)))


def _float_repr(value: float) -> str:
    # json.encoder's floatstr: repr for finite values, JavaScript names otherwise.
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _messages(values: pa.Array) -> pa.Array:
    from exports.columns import list_parts

    offsets, flat = list_parts(values)
    items = pc.binary_join_element_wise(
        '{"role": ',
        escape(flat.field("role")),
        ', "content": ',
        escape(flat.field("content")),
        "}",
        "",
    )
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), items), ", ")
    return pc.binary_join_element_wise("[", joined, "]", "")


def json_values(values, type_) -> pa.Array:
    """The JSON text of every value of one column."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return escape(values)
    if pa.types.is_boolean(type_):
        return pc.if_else(values, "true", "false")
    if pa.types.is_integer(type_):
        return pc.cast(values, pa.string())
    if pa.types.is_floating(type_):
        return _floats(values)
    if pa.types.is_list(type_):
        return _messages(values)
    raise TypeError(f"no JSON encoding for {type_}")


def encode(table: pa.Table) -> pa.Array:
    """One JSON line (newline included) per row of `table`, keys in schema order."""
    parts: list = []
    for i, field in enumerate(table.schema):
        parts.append(("{" if i == 0 else ", ") + json.dumps(field.name) + ": ")
        parts.append(json_values(table.column(i), field.type))
    parts.append("}\n")
    return pc.binary_join_element_wise(*parts, "")


def encode_bytes(table: pa.Table) -> memoryview:
    """The JSON Lines bytes of `table` (a view of the Arrow buffer, not a copy)."""
    if table.num_rows == 0:
        return memoryview(b"")
    lines = encode(table)
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    return memoryview(utf8_bytes(lines))
