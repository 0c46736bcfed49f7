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


RICH_PROMPTS = [
    "Tell me a joke.",
    "tell me a  joke.",  # equal after normalisation: contradictions across the two
    "Ｗｈａｔ is NFKC?  ",
    'Quote " and back\\slash\nnew line',
    "Emoji 😀 and Straße",
    "Question #3: explain topic 3.",  # an evaluation prompt equals it (below)
]
RICH_RESPONSES = [
    "Knock knock.",
    "Why did the chicken?",
    'A "quoted"\tanswer\r\nwith\x1bcontrol',
    "Knock knock.",
]


def rich_decide(username: str, prompt: str, first: str, second: str):
    """Deterministic, varied votes: agreement, ties, both bad, flips by prompt."""
    if first == second:
        return first  # two responses with one text: chosen equals rejected
    if prompt.startswith("Emoji"):
        return "both_bad"
    if prompt.startswith("Quote"):
        return "tie" if username != "c" else first
    low, high = sorted((first, second))
    if prompt.startswith("tell"):  # the lower-case twin prefers the other way
        return high
    if username == "c" and sum(map(ord, prompt + first)) % 3 == 0:
        return high  # some disagreement
    return low


@pytest.fixture
def rich_project(db, tmp_path):
    """Three responses per prompt (three comparisons each), multi-turn, Unicode,
    JSON-hostile characters, an evaluation twin of a training prompt, prior labels."""
    project = make_project("rich", target=3)
    rows = [
        {
            "prompt": text,
            "responses": [
                {"model": f"m{j}", "text": f"{response} ({i // 2})"}
                for j, response in enumerate(RICH_RESPONSES[:3])
            ],
        }
        for i, text in enumerate(RICH_PROMPTS)
    ]
    rows.append(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Capital of France?"},
            ],
            "responses": [
                {"model": "x", "text": "Paris."},
                {"model": "y", "text": "Lyon."},
                {"model": "z", "text": "Paris."},
            ],
        }
    )
    import_prompt_responses(project, tmp_path / "rich.jsonl", rows)
    import_prompt_responses(
        project,
        tmp_path / "eval.jsonl",
        [
            {
                "prompt": "QUESTION #3:  explain topic 3.",
                "responses": [
                    {"model": "m0", "text": "Yes."},
                    {"model": "m1", "text": "No."},
                ],
            }
        ],
        split="heldout",
    )
    from tests.exports.factories import import_pairs

    import_pairs(
        project,
        tmp_path / "pairs.jsonl",
        [
            {"prompt": f"Prior {i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for i in range(3)
        ],
    )
    annotate(project, make_annotators(project, ["a", "b", "c"]), rich_decide)
    return project
