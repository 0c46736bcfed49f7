"""Hygiene checks on crafted rows: each finding appears exactly where it should, and
the batched checks agree with the row-by-row reference on random data."""

import random
import sys

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import binomtest

from exports.hygiene import (
    PY_SPACE,
    HygieneAccumulator,
    digest,
    hash_strings,
    label_distribution,
    leakage,
    normalise_text,
    wilson_interval,
)
from tests.exports.reference import ReferenceHygiene

CI_TOL = 1e-9


def key(text: str) -> bytes:
    return digest(normalise_text(text))


def keys(*texts: str) -> np.ndarray:
    return np.array([key(t) for t in texts], dtype="S16")


def strings(*values: str) -> pa.Array:
    return pa.array(list(values), pa.string())


def add_rows(h, ids, **texts):
    h.add_rows(row_ids=np.array(ids), texts={k: strings(*v) for k, v in texts.items()})


def add_pairs(h, ids, prompts, chosen, rejected):
    c, r = strings(*chosen), strings(*rejected)
    h.add_pairs(
        comparison_ids=np.array(ids),
        prompt_keys=keys(*prompts),
        chosen=c,
        rejected=r,
        chosen_digests=hash_strings(c),
        rejected_digests=hash_strings(r),
    )


def no_leak():
    empty = np.zeros(0, dtype="S16")
    return leakage(
        prompt_keys=empty,
        in_test=np.zeros(0, bool),
        prompt_ids=np.zeros(0, np.int64),
        evaluation_keys=empty,
    )


def test_normalise_text_ignores_case_width_and_whitespace():
    assert normalise_text("  What IS\t2+2?\n") == normalise_text("what is 2+2?")
    assert normalise_text("ｗｈａｔ") == "what"  # full-width (NFKC)
    assert normalise_text("what is 2+3?") != normalise_text("what is 2+2?")


def test_py_space_is_every_character_str_isspace_accepts():
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1))
    assert "".join(c for c in everything if c.isspace()) == PY_SPACE


def test_wilson_interval_matches_scipy():
    for k, n in [(0, 10), (7, 10), (55, 100), (100, 100)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = wilson_interval(k, n)
        assert low == pytest.approx(ci.low, abs=CI_TOL)
        assert high == pytest.approx(ci.high, abs=CI_TOL)


def test_duplicates_same_texts_empty_and_over_long_rows_are_reported():
    h = HygieneAccumulator(max_chars=10)
    add_rows(
        h,
        [1, 2, 3, 4],
        prompt=["p", "p", "p", "p"],
        chosen=["a", "a", " \u3000\x1c", "x" * 11],
        rejected=["b", "b", "b", "b"],
    )
    add_pairs(h, [5], ["p"], ["same"], ["same"])
    report = h.report(leakage=no_leak())
    assert report["exact_duplicates"] == {"count": 1, "examples": [2]}
    assert report["empty_texts"]["examples"] == [{"row": 3, "field": "chosen"}]
    assert report["over_long_texts"]["count"] == 1
    assert report["over_long_texts"]["examples"][0]["field"] == "chosen"
    assert report["chosen_equals_rejected"] == {"count": 1, "examples": [5]}


def test_a_duplicate_in_a_later_batch_is_found():
    h = HygieneAccumulator(max_chars=10)
    add_rows(h, [1], prompt=["p"], completion=["a"])
    add_rows(h, [7, 8], prompt=["q", "p"], completion=["a", "a"])
    assert h.report(leakage=no_leak())["exact_duplicates"] == {
        "count": 1,
        "examples": [8],
    }


def test_field_boundaries_count_for_duplicates():
    h = HygieneAccumulator(max_chars=10)
    add_rows(h, [1, 2], prompt=["ab", "a"], completion=["c", "bc"])
    assert h.report(leakage=no_leak())["exact_duplicates"]["count"] == 0


def test_over_long_by_tokens_uses_the_counter():
    h = HygieneAccumulator(
        max_chars=1000,
        max_tokens=3,
        count_tokens=lambda texts: [len(t.split()) for t in texts],
    )
    add_rows(h, [1, 2], chosen=["one two three", "one two three four"])
    report = h.report(leakage=no_leak())
    assert report["over_long_texts"]["count"] == 1
    assert report["over_long_texts"]["examples"][0]["tokens"] == 4


def test_contradiction_is_the_same_pair_preferred_both_ways():
    h = HygieneAccumulator(max_chars=100)
    # Comparisons 1 and 2: same prompt (up to case), same two texts, opposite winners.
    # Comparison 3 agrees with 1; comparison 4 is another prompt.
    add_pairs(
        h,
        [1, 2, 3, 4],
        ["Tell a joke", "tell a  joke", "Tell a joke", "Other"],
        ["A", "B", "A", "B"],
        ["B", "A", "B", "A"],
    )
    report = h.report(leakage=no_leak())
    assert report["contradictions"] == {"count": 1, "examples": [[1, 2]]}


def test_leakage_between_train_and_test_or_evaluation_prompts():
    leak = leakage(
        prompt_keys=keys("What is 2+2?", "Name a colour", "Unique", "name a COLOUR "),
        in_test=np.array([False, False, False, True]),
        prompt_ids=np.array([1, 2, 3, 4]),
        evaluation_keys=keys("what is 2+2?"),
    )
    assert leak["train_vs_test"] == {"count": 1, "examples": [2]}
    assert leak["train_vs_evaluation"] == {"count": 1, "examples": [1]}


def test_length_bias_counts_and_interval():
    h = HygieneAccumulator(max_chars=100)
    add_pairs(
        h,
        [0, 1, 2, 3],
        ["0", "1", "2", "3"],
        ["long one", "longer", "a", "q"],
        ["s", "x", "bb", "q"],
    )
    bias = h.report(leakage=no_leak())["length_bias"]["chars"]
    assert (bias["chosen_longer"], bias["chosen_shorter"], bias["equal_length"]) == (
        2,
        1,
        1,
    )
    assert bias["share_chosen_longer"] == pytest.approx(2 / 3)
    assert bias["ci95"] == pytest.approx(list(wilson_interval(2, 3)))


ALPHABET = ["a", "b", "A", " ", "\t", "\u3000", "\x1c", "é", "\u2028", "x" * 7]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))


def test_batched_checks_equal_the_row_by_row_reference():
    rng = random.Random(7)
    texts = [random_text(rng) for _ in range(12)]
    prompts = ["Tell", "tell ", "Other"]
    rows, pairs = [], []
    for i in range(400):
        chosen, rejected = rng.choice(texts), rng.choice(texts)
        prompt = rng.choice(prompts)
        rows.append(
            (i // 2, {"prompt": prompt, "chosen": chosen, "rejected": rejected})
        )
        pairs.append((i, prompt, chosen, rejected))
    count = lambda values: [len(v.split()) for v in values]  # noqa: E731
    batched = HygieneAccumulator(max_chars=12, max_tokens=1, count_tokens=count)
    reference = ReferenceHygiene(
        max_chars=12, max_tokens=1, count_tokens=lambda t: len(t.split())
    )
    start = 0
    while start < len(rows):
        size = rng.randint(1, 60)
        chunk, chunk_pairs = rows[start : start + size], pairs[start : start + size]
        add_rows(
            batched,
            [r for r, _ in chunk],
            **{f: [t[f] for _, t in chunk] for f in ("prompt", "chosen", "rejected")},
        )
        add_pairs(batched, *map(list, zip(*chunk_pairs, strict=True)))
        start += size
    for row_id, fields in rows:
        reference.add_row(row_id=row_id, texts=fields)
    for cid, prompt, chosen, rejected in pairs:
        reference.add_pair(
            comparison_id=cid, key=key(prompt), chosen=chosen, rejected=rejected
        )
    want = reference.report(evaluation_keys=set(), annotators={})
    got = batched.report(leakage=want["leakage"], annotators={})
    assert got == want
    assert want["exact_duplicates"]["count"] > 0
    assert want["contradictions"]["count"] > 0
    assert want["empty_texts"]["count"] > 0


def test_label_distribution_per_annotator_with_position_share():
    worker = np.array([0, 0, 0, 1, 1])
    label = np.array([0, 1, 2, 0, 0])
    left = np.array([1, 1, 0, 0, -1])  # worker 0 picked left then right; 1: right
    final = np.array([0, 1, 2])
    item = np.array([0, 1, 2, 0, 1])
    out = label_distribution(worker, label, left, final, item, ["ann", "prior"])
    assert (
        out["ann"]["first"] == 1
        and out["ann"]["second"] == 1
        and out["ann"]["tie"] == 1
    )
    assert out["ann"]["share_left"] == pytest.approx(0.5)
    assert out["ann"]["agreement_with_result"] == 1.0
    assert out["prior"]["share_left"] == 0.0  # only the positioned vote counts
    assert out["prior"]["agreement_with_result"] == pytest.approx(0.5)
