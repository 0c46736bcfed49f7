"""Project, membership, user and token services: validation before any write."""

import pytest
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from annotation.models import Membership, Project, Role
from annotation.services import projects as services


def test_project_create_stores_every_field(db):
    project = services.project_create(
        slug="p", name="P", aspects=["helpfulness"], target_judgments=5, gold_rate=0.1
    )
    stored = Project.objects.get(pk=project.pk)
    assert (stored.aspects, stored.target_judgments, stored.gold_rate) == (
        ["helpfulness"],
        5,
        0.1,
    )


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"aspects": ["a", "a"]}, "aspects"),
        ({"aspects": [""]}, "aspects"),
        ({"lease_seconds": 5}, "lease_seconds"),
        ({"target_judgments": 0}, "target_judgments"),
        ({"slug": "not a slug"}, "slug"),
    ],
)
def test_project_create_rejects_bad_fields_without_writing(db, fields, bad_field):
    with pytest.raises(ValidationError) as caught:
        services.project_create(**({"slug": "p", "name": "P"} | fields))
    assert bad_field in caught.value.message_dict
    assert not Project.objects.exists()


def test_project_update_changes_settings(project):
    updated = services.project_update(
        project=project, guidelines="New", aspects=["honesty"], allow_both_bad=False
    )
    project.refresh_from_db()
    assert (project.guidelines, project.aspects, project.allow_both_bad) == (
        "New",
        ["honesty"],
        False,
    )
    assert updated.pk == project.pk


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"slug": "renamed"}, "slug", "Cannot change 'slug'"),
        ({"gold_rate": 1.5}, "gold_rate", services.GOLD_RATE_RANGE),
        ({"lease_seconds": 9}, "lease_seconds", services.LEASE_TOO_SHORT),
        ({"target_judgments": 0}, "target_judgments", services.TARGET_TOO_LOW),
        ({"aspects": ["x", "x"]}, "aspects", services.UNKNOWN_ASPECT_FORMAT),
    ],
)
def test_project_update_rejects_and_keeps_the_old_values(
    project, changes, field, message
):
    with pytest.raises(ValidationError) as caught:
        services.project_update(project=project, **changes)
    assert message in " ".join(caught.value.message_dict[field])
    project.refresh_from_db()
    assert (project.slug, project.gold_rate, project.lease_seconds) == (
        "demo",
        0.0,
        600,
    )
    assert (project.target_judgments, project.aspects) == (
        2,
        ["helpfulness", "harmlessness"],
    )


def test_membership_set_creates_then_changes_one_row(project, outsider):
    services.membership_set(project=project, user=outsider, role=Role.ANNOTATOR)
    services.membership_set(project=project, user=outsider, role=Role.ADMIN)
    assert list(Membership.objects.filter(user=outsider).values_list("role")) == [
        ("admin",)
    ]


def test_membership_set_rejects_an_unknown_role(project, outsider):
    with pytest.raises(ValidationError, match="choose one of"):
        services.membership_set(project=project, user=outsider, role="owner")
    assert not Membership.objects.filter(user=outsider).exists()


def test_membership_remove(project, annotator):
    assert services.membership_remove(project=project, user=annotator) is True
    assert services.membership_remove(project=project, user=annotator) is False
    assert not Membership.objects.filter(user=annotator).exists()


def test_token_issue_is_stable_until_rotated(annotator):
    first = services.token_issue(user=annotator)
    assert services.token_issue(user=annotator).key == first.key
    rotated = services.token_issue(user=annotator, rotate=True)
    assert rotated.key != first.key
    assert list(Token.objects.filter(user=annotator)) == [rotated]


def test_user_create_without_password_cannot_log_in(db, client):
    user = services.user_create(username="bot")
    assert not user.has_usable_password()


def test_user_create_rejects_a_taken_username(annotator):
    with pytest.raises(ValidationError):
        services.user_create(username="ann", password="x")
