"""Shared data for the export tests, built through the real annotation services."""

import pytest

from tests.exports.factories import (
    annotate,
    import_prompt_responses,
    make_annotators,
    make_project,
)

N_PROMPTS = 12


def good(i: int) -> str:
    return f"A careful, complete and correct answer number {i}."


def bad(i: int) -> str:
    return f"Wrong {i}."


def decide_standard(username: str, prompt: str, first: str, second: str):
    """Two annotators prefer the good answer; the third disagrees on a few prompts."""
    i = int(prompt.split("#")[1].split(":")[0])
    good_text = first if first.startswith("A careful") else second
    bad_text = second if good_text == first else first
    if username == "c":
        if i % 4 == 0:
            return bad_text
        if i % 4 == 1:
            return "tie"
    if i == 11:
        return "both_bad"
    if i == 10 and username == "b":
        return bad_text
    return good_text


@pytest.fixture
def labelled_project(db, tmp_path):
    """12 prompts x 1 comparison, 3 votes each, with known aggregation outcomes."""
    project = make_project("prefs", target=3)
    rows = [
        {
            "prompt": f"Question #{i}: explain topic {i}.",
            "responses": [
                {"model": "m-good", "text": good(i)},
                {"model": "m-bad", "text": bad(i)},
            ],
        }
        for i in range(N_PROMPTS)
    ]
    import_prompt_responses(project, tmp_path / "prompts.jsonl", rows)
    annotators = make_annotators(project, ["a", "b", "c"])
    annotate(project, annotators, decide_standard)
    return project
