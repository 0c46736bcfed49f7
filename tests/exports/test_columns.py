"""The columnar builders against the row-wise definitions they replace."""

import random

import numpy as np
import pyarrow as pa
import pytest

from exports import columns as cols
from tests.exports import reference as ref

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "  Spaced\tout \n text  "}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
    ],
    [{"role": "assistant", "content": "Only an assistant turn"}],
    [{"role": "user", "content": "ｆｕｌｌ ｗｉｄｔｈ ÉCOLE Straße ǅ"}],
    [{"role": "user", "content": "emoji 😀 and\u3000ideographic space\x1cand FS"}],
    [{"role": "user", "content": 'quotes " and \\ backslash\r\nCRLF'}],
    [{"role": "tool", "content": "a role of another name"}],
    [],
]


def python_columns(messages):
    ids = np.arange(len(messages), dtype=np.int64)
    return cols.prompt_columns_from_python(ids, messages)


def test_vectorised_prompt_columns_equal_the_row_wise_functions():
    ids = np.arange(len(CONVERSATIONS), dtype=np.int64)
    fast = cols.prompt_columns(ids, pa.array(CONVERSATIONS, cols.MESSAGES))
    assert fast.rendered.to_pylist() == [ref.render_prompt(m) for m in CONVERSATIONS]
    assert fast.text.to_pylist() == [ref.prompt_text(m) for m in CONVERSATIONS]
    assert fast.messages.to_pylist() == [ref.prompt_messages(m) for m in CONVERSATIONS]
    slow = python_columns(CONVERSATIONS)
    assert fast.rendered.equals(slow.rendered) and fast.text.equals(slow.text)


def test_a_message_without_content_takes_the_row_wise_path():
    with pytest.raises(cols.NotVectorisable):
        cols.prompt_columns(
            np.array([1]),
            pa.array([[{"role": "user", "content": None}]], cols.MESSAGES),
        )


def test_prompt_keys_and_splits_equal_the_row_wise_definitions():
    rng = random.Random(3)
    alphabet = ["a", "B", " ", "\t\n", "\x1c", "É", "ｗ", "ß", "\u2028", "?"]
    texts = ["".join(rng.choice(alphabet) for _ in range(8)) for _ in range(300)]
    keys = cols.prompt_keys(pa.array(texts))
    want = [ref.digest(ref.normalise_text(t)) for t in texts]
    assert [bytes(k).ljust(16, b"\0") for k in keys] == want
    for seed, fraction in [(0, 0.1), (7, 0.5), (1, 0.0)]:
        split = cols.in_test_split(keys, seed=seed, fraction=fraction)
        assert split.tolist() == [
            ref.in_test_split(k, seed=seed, fraction=fraction) for k in want
        ]
    assert 0 < cols.in_test_split(keys, seed=7, fraction=0.5).sum() < len(texts)
