"""Binary COPY parsing on bytes laid out as PostgreSQL's documentation describes."""

import struct

import numpy as np
import pytest

from exports import pgcopy


def int8_array(values) -> bytes:
    body = b"".join(struct.pack(">iq", 8, v) for v in values)
    return struct.pack(">iiiii", 1, 0, 20, len(values), 1) + body


def copy_file(*tuples) -> bytes:
    out = pgcopy.SIGNATURE + struct.pack(">ii", 0, 0)
    for fields in tuples:
        out += struct.pack(">h", len(fields))
        for value in fields:
            out += (
                struct.pack(">i", -1)
                if value is None
                else struct.pack(">i", len(value)) + value
            )
    return out + struct.pack(">h", -1)


def test_tuples_and_int_arrays_round_trip():
    data = copy_file([int8_array([3, -1, 2**40]), b"text"], [None, b""])
    rows = pgcopy.tuples(data)
    assert pgcopy.int_array(rows[0][0]).tolist() == [3, -1, 2**40]
    assert bytes(rows[0][1]) == b"text"
    assert rows[1][0] is None and bytes(rows[1][1]) == b""
    assert pgcopy.int_array(None).dtype == np.int64


def test_an_array_with_nulls_is_refused():
    bad = struct.pack(">iiiii", 1, 1, 20, 1, 1) + struct.pack(">i", -1)
    with pytest.raises(ValueError, match="NULLs"):
        pgcopy.int_array(memoryview(bad))


def test_packed_fields_round_trip_and_split_into_words():
    spans = {"left": 2, "choice": 255, "id": 2**40, "comparison": 2**30}
    layout = pgcopy.pack_layout(spans)
    assert [[name for name, _, _ in word] for word in layout] == [
        ["left", "choice", "id"],
        ["comparison"],
    ]
    rng = np.random.default_rng(0)
    values = {name: rng.integers(0, span + 1, 1000) for name, span in spans.items()}
    words = [
        np.bitwise_or.reduce([values[name] << shift for name, shift, _ in word])
        for word in layout
    ]
    assert all((word >= 0).all() for word in words)
    unpacked = pgcopy.unpack(layout, words)
    assert all((unpacked[name] == values[name]).all() for name in spans)
    sql = pgcopy.pack_sql(layout, {name: name for name in spans})
    assert sql[1] == "((comparison)::int8 << 0)"
    assert pgcopy.pack_layout({"huge": 2**63}) is None
