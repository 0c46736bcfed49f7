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
