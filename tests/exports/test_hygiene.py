"""Hygiene checks on crafted rows: each finding appears exactly where it should."""

import numpy as np
import pytest
from scipy.stats import binomtest

from exports.hygiene import (
    HygieneAccumulator,
    digest,
    label_distribution,
    normalise_text,
    wilson_interval,
)

CI_TOL = 1e-9


def key(text: str) -> bytes:
    return digest(normalise_text(text))


def test_normalise_text_ignores_case_width_and_whitespace():
    assert normalise_text("  What IS\t2+2?\n") == normalise_text("what is 2+2?")
    assert normalise_text("ｗｈａｔ") == "what"  # full-width (NFKC)
    assert normalise_text("what is 2+3?") != normalise_text("what is 2+2?")


def test_wilson_interval_matches_scipy():
    for k, n in [(0, 10), (7, 10), (55, 100), (100, 100)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = wilson_interval(k, n)
        assert low == pytest.approx(ci.low, abs=CI_TOL)
        assert high == pytest.approx(ci.high, abs=CI_TOL)


def test_duplicates_same_texts_empty_and_over_long_rows_are_reported():
    h = HygieneAccumulator(max_chars=10)
    h.add_row(row_id=1, texts={"prompt": "p", "chosen": "a", "rejected": "b"})
    h.add_row(row_id=2, texts={"prompt": "p", "chosen": "a", "rejected": "b"})
    h.add_row(row_id=3, texts={"prompt": "p", "chosen": "  ", "rejected": "b"})
    h.add_row(row_id=4, texts={"prompt": "p", "chosen": "x" * 11, "rejected": "b"})
    h.add_pair(comparison_id=5, prompt_key=key("p"), chosen="same", rejected="same")
    report = h.report(evaluation_keys=[])
    assert report["exact_duplicates"] == {"count": 1, "examples": [2]}
    assert report["empty_texts"]["examples"] == [{"row": 3, "field": "chosen"}]
    assert report["over_long_texts"]["count"] == 1
    assert report["over_long_texts"]["examples"][0]["field"] == "chosen"
    assert report["chosen_equals_rejected"] == {"count": 1, "examples": [5]}


def test_over_long_by_tokens_uses_the_counter():
    h = HygieneAccumulator(
        max_chars=1000, max_tokens=3, count_tokens=lambda t: len(t.split())
    )
    h.add_row(row_id=1, texts={"chosen": "one two three"})
    h.add_row(row_id=2, texts={"chosen": "one two three four"})
    report = h.report(evaluation_keys=[])
    assert report["over_long_texts"]["count"] == 1
    assert report["over_long_texts"]["examples"][0]["tokens"] == 4


def test_contradiction_is_the_same_pair_preferred_both_ways():
    h = HygieneAccumulator(max_chars=100)
    # Comparisons 1 and 2: same prompt (up to case), same two texts, opposite winners.
    h.add_pair(comparison_id=1, prompt_key=key("Tell a joke"), chosen="A", rejected="B")
    h.add_pair(
        comparison_id=2, prompt_key=key("tell a  joke"), chosen="B", rejected="A"
    )
    # Comparison 3 agrees with 1; comparison 4 is another prompt.
    h.add_pair(comparison_id=3, prompt_key=key("Tell a joke"), chosen="A", rejected="B")
    h.add_pair(comparison_id=4, prompt_key=key("Other"), chosen="B", rejected="A")
    report = h.report(evaluation_keys=[])
    assert report["contradictions"] == {"count": 1, "examples": [[1, 2]]}


def test_leakage_between_train_and_test_or_evaluation_prompts():
    h = HygieneAccumulator(max_chars=100)
    h.add_prompt(split="train", prompt_key=key("What is 2+2?"), prompt_id=1)
    h.add_prompt(split="train", prompt_key=key("Name a colour"), prompt_id=2)
    h.add_prompt(split="train", prompt_key=key("Unique"), prompt_id=3)
    h.add_prompt(split="test", prompt_key=key("name a COLOUR "), prompt_id=4)
    leak = h.leakage([key("what is 2+2?")])
    assert leak["train_vs_test"] == {"count": 1, "examples": [2]}
    assert leak["train_vs_evaluation"] == {"count": 1, "examples": [1]}


def test_length_bias_counts_and_interval():
    h = HygieneAccumulator(max_chars=100)
    for i, (c, r) in enumerate(
        [("long one", "s"), ("longer", "x"), ("a", "bb"), ("q", "q")]
    ):
        h.add_pair(comparison_id=i, prompt_key=key(str(i)), chosen=c, rejected=r)
    bias = h.report(evaluation_keys=[])["length_bias"]["chars"]
    assert (bias["chosen_longer"], bias["chosen_shorter"], bias["equal_length"]) == (
        2,
        1,
        1,
    )
    assert bias["share_chosen_longer"] == pytest.approx(2 / 3)
    assert bias["ci95"] == pytest.approx(list(wilson_interval(2, 3)))


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
