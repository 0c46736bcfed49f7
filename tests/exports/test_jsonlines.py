"""JSON Lines built from Arrow columns are the bytes `json.dumps` gives per row."""

import json
import random

import pyarrow as pa

from exports import jsonlines
from exports.columns import MESSAGES

CHARS = ["a", '"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x01", "\x1b", "\x1f"]
CHARS += ["\x7f", "é", "\u2028", "😀", " ", "/", "</script>"]
FLOATS = [0.0, -0.0, 1.0, 2 / 3, 0.1, 1e-5, 1e17, 123456789.123, 0.25, 5e-324]
ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def random_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    text = lambda: "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 9)))  # noqa: E731
    return [
        {
            "prompt": text(),
            "id": rng.randint(-(2**62), 2**62),
            "label": rng.random() < 0.5,
            "agreement": rng.choice(FLOATS),
            "messages": [
                {"role": rng.choice(["user", 'as"st']), "content": text()}
                for _ in range(rng.randint(0, 3))
            ],
            "votes": rng.randint(0, 9),
        }
        for _ in range(n)
    ]


SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("id", pa.int64()),
        ("label", pa.bool_()),
        ("agreement", pa.float64()),
        ("messages", MESSAGES),
        ("votes", pa.int32()),
    ]
)


def test_jsonl_bytes_equal_json_dumps_of_each_row():
    rows = random_rows(2000)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    want = "".join(ENCODE(row) + "\n" for row in rows).encode()
    assert bytes(jsonlines.encode_bytes(table)) == want


def test_a_slice_encodes_only_its_rows():
    rows = random_rows(300, seed=1)
    table = pa.Table.from_pylist(rows, schema=SCHEMA).slice(17, 100)
    want = "".join(ENCODE(row) + "\n" for row in rows[17:117]).encode()
    assert bytes(jsonlines.encode_bytes(table)) == want


def test_an_empty_table_is_no_bytes():
    assert bytes(jsonlines.encode_bytes(SCHEMA.empty_table())) == b""
