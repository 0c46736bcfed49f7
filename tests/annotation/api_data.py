"""Rows for API and permission tests, written directly (no import service needed).

Two prompts with responses from named models, three comparisons (one gold, one
complete), human judgments from two annotators and one imported prior label.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from annotation.models import (
    Choice,
    Comparison,
    Judgment,
    Project,
    Prompt,
    Response,
    Split,
)

MODEL_NAMES = ("alpha-7b", "beta-13b", "gamma-70b")


@dataclass
class ApiData:
    prompts: list[Prompt]
    responses: list[Response]
    comparisons: list[Comparison]
    judgments: list[Judgment]
    prior: Judgment


def make_prompt(project: Project, text: str, *, split: str = Split.TRAIN) -> Prompt:
    return Prompt.objects.create(
        project=project,
        messages=[{"role": "user", "content": text}],
        split=split,
        content_hash=f"hash-{project.slug}-{text}",
        external_id=f"ext-{text}",
    )


def make_response(prompt: Prompt, model_name: str) -> Response:
    return Response.objects.create(
        prompt=prompt,
        text=f"{model_name} answers prompt {prompt.pk}",
        model_name=model_name,
        generation_params={"temperature": 0.7},
        content_hash=f"hash-{prompt.pk}-{model_name}",
    )


def make_comparison(project: Project, first: Response, second: Response, **fields):
    a, b = sorted([first, second], key=lambda r: r.pk)
    return Comparison.objects.create(
        project=project, prompt=a.prompt, response_a=a, response_b=b, **fields
    )


def make_judgment(comparison, annotator, choice=Choice.FIRST, **fields) -> Judgment:
    return Judgment.objects.create(
        comparison=comparison,
        annotator=annotator,
        origin=Judgment.Origin.HUMAN if annotator else Judgment.Origin.PRIOR,
        choice=choice,
        left_is_first=True if annotator else None,
        submitted_at=fields.pop("submitted_at", datetime(2026, 11, 20, 12, tzinfo=UTC)),
        **fields,
    )


def make_api_data(project: Project, annotator, other_annotator) -> ApiData:
    """Comparisons 0 (gold, 2 judgments = complete), 1 (heldout), 2 (prior label)."""
    train = make_prompt(project, "How do tides work?")
    heldout = make_prompt(project, "Name a prime.", split=Split.HELDOUT)
    responses = [make_response(train, name) for name in MODEL_NAMES]
    responses += [make_response(heldout, name) for name in MODEL_NAMES[:2]]
    comparisons = [
        make_comparison(
            project,
            responses[0],
            responses[1],
            gold_choice=Choice.FIRST,
            judgment_count=2,
            priority=5,
        ),
        make_comparison(project, responses[3], responses[4]),
        make_comparison(project, responses[0], responses[2]),
    ]
    judgments = [
        make_judgment(comparisons[0], annotator, Choice.FIRST, is_gold=True),
        make_judgment(
            comparisons[0],
            other_annotator,
            Choice.SECOND,
            is_gold=True,
            rationale="other annotator's secret reason",
            submitted_at=datetime(2026, 11, 22, 12, tzinfo=UTC),
        ),
    ]
    prior = make_judgment(comparisons[2], None, Choice.SECOND)
    return ApiData(
        prompts=[train, heldout],
        responses=responses,
        comparisons=comparisons,
        judgments=judgments,
        prior=prior,
    )
