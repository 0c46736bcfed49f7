"""Every constraint of the annotation models is enforced by the database itself.

Rows are written with `objects.create` (no `full_clean`), as a buggy or racing code
path would, and each violation must raise IntegrityError. Check constraints are
matched by name in the database's message (PostgreSQL and SQLite both name them);
PostgreSQL names unique constraints too. `test_every_constraint_has_a_case` fails when
a constraint is added to the models without a case here.
"""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, models, transaction

from annotation.models import (
    Assignment,
    Choice,
    Comparison,
    ImportBatch,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
)
from tests.annotation.api_data import make_comparison, make_prompt, make_response

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture
def rows(project, annotator):
    prompt = make_prompt(project, "p")
    first, second, third = (make_response(prompt, m) for m in ("m1", "m2", "m3"))
    comparison = make_comparison(project, first, second)
    return {
        "project": project,
        "user": annotator,
        "prompt": prompt,
        "responses": (first, second, third),
        "comparison": comparison,
    }


def judgment(r, **fields):
    values = {
        "comparison": r["comparison"],
        "annotator": r["user"],
        "origin": Judgment.Origin.HUMAN,
        "choice": Choice.FIRST,
        "submitted_at": NOW,
    } | fields
    return Judgment.objects.create(**values)


def assignment(r, **fields):
    values = {
        "comparison": r["comparison"],
        "annotator": r["user"],
        "left_is_first": True,
        "leased_at": NOW,
        "expires_at": NOW,
    } | fields
    return Assignment.objects.create(**values)


def project_row(**fields):
    return Project.objects.create(**({"slug": "x", "name": "x"} | fields))


def import_batch(r, **fields):
    values = {
        "project": r["project"],
        "file_name": "pairs.jsonl",
        "sha256": "0" * 64,
        "format": "trl_standard",
        "status": ImportBatch.Status.SUCCEEDED,
    } | fields
    return ImportBatch.objects.create(**values)


def comparison_pair(r, low, high, **fields):
    """A comparison stored with `response_a`=low, `response_b`=high as given."""
    return Comparison.objects.create(
        project=r["project"],
        prompt=r["prompt"],
        response_a=low,
        response_b=high,
        **fields,
    )


# constraint name -> writes that violate it (given the valid `rows`)
VIOLATIONS: dict[str, list[Callable[[dict], object]]] = {
    "project_target_at_least_one": [lambda r: project_row(target_judgments=0)],
    "project_lease_at_least_10s": [lambda r: project_row(lease_seconds=9)],
    "project_gold_rate_in_unit_interval": [
        lambda r: project_row(gold_rate=1.01),
        lambda r: project_row(gold_rate=-0.1),
    ],
    "membership_one_role_per_project": [
        lambda r: Membership.objects.create(
            user=r["user"], project=r["project"], role="researcher"
        )
    ],
    "membership_role_valid": [
        lambda r: Membership.objects.create(
            user=r["user"], project=project_row(), role="owner"
        )
    ],
    "prompt_unique_per_project": [
        lambda r: Prompt.objects.create(
            project=r["project"],
            messages=[],
            content_hash=r["prompt"].content_hash,
        )
    ],
    "prompt_split_valid": [
        lambda r: Prompt.objects.create(
            project=r["project"], messages=[], content_hash="new", split="test"
        )
    ],
    "response_unique_per_prompt": [
        lambda r: Response.objects.create(
            prompt=r["prompt"],
            text="dup",
            content_hash=r["responses"][0].content_hash,
        )
    ],
    "comparison_unique_pair_per_project": [
        lambda r: comparison_pair(r, *r["responses"][:2])
    ],
    "comparison_pair_canonical_order": [
        lambda r: comparison_pair(r, r["responses"][2], r["responses"][0]),
        lambda r: comparison_pair(r, r["responses"][2], r["responses"][2]),
    ],
    "comparison_gold_choice_valid": [
        lambda r: comparison_pair(
            r, r["responses"][0], r["responses"][2], gold_choice="left"
        )
    ],
    "comparison_origin_valid": [
        lambda r: comparison_pair(
            r, r["responses"][0], r["responses"][2], origin="scraped"
        )
    ],
    "import_batch_status_valid": [lambda r: import_batch(r, status="running")],
    "import_batch_split_valid": [lambda r: import_batch(r, split="test")],
    "assignment_one_per_comparison_annotator": [
        lambda r: (assignment(r), assignment(r))
    ],
    "assignment_status_valid": [lambda r: assignment(r, status="lost")],
    "judgment_one_per_comparison_annotator": [lambda r: (judgment(r), judgment(r))],
    "judgment_one_prior_per_comparison": [
        lambda r: (
            judgment(r, annotator=None, origin="prior"),
            judgment(r, annotator=None, origin="prior"),
        )
    ],
    "judgment_choice_valid": [lambda r: judgment(r, choice="left")],
    "judgment_strength_1_to_3": [
        lambda r: judgment(r, strength=0),
        lambda r: judgment(r, strength=4),
    ],
    "judgment_origin_matches_annotator": [
        lambda r: judgment(r, annotator=None, origin="human"),
        lambda r: judgment(r, origin="prior"),
    ],
}

CASES = [
    (name, index, write)
    for name, writes in VIOLATIONS.items()
    for index, write in enumerate(writes)
]


def declared_constraints() -> dict[str, models.BaseConstraint]:
    return {
        constraint.name: constraint
        for model in apps.get_app_config("annotation").get_models()
        for constraint in model._meta.constraints
    }


def test_every_constraint_has_a_case():
    assert set(declared_constraints()) == set(VIOLATIONS)


def test_valid_rows_are_accepted(rows):
    """The fixture itself, a judgment, an assignment and a prior label all save."""
    judgment(rows, strength=3, aspect_choices={"helpfulness": "first"})
    assignment(rows)
    judgment(rows, annotator=None, origin="prior", choice=Choice.TIE)
    assert Judgment.objects.count() == 2
    import_batch(rows, split="heldout", status=ImportBatch.Status.FAILED)
    comparison_pair(
        rows, rows["responses"][0], rows["responses"][2], origin="evaluation"
    )


@pytest.mark.parametrize(
    ("name", "write"),
    [(name, write) for name, _, write in CASES],
    ids=[f"{name}-{index}" for name, index, _ in CASES],
)
def test_database_rejects_the_violation(rows, name, write):
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        write(rows)
    constraint = declared_constraints()[name]
    names_constraint = isinstance(constraint, models.CheckConstraint) or (
        connection.vendor == "postgresql"
    )
    if names_constraint:
        assert name in str(caught.value)
