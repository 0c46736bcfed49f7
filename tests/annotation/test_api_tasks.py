"""The annotator HTTP API: next-task, judgment, skip (token and session auth)."""

import datetime as dt
import json

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.api import tasks as api
from annotation.models import Assignment, Choice, Judgment, Response
from annotation.services.judgments import LEASE_EXPIRED_TARGET_MET
from tests.annotation.queue_factories import MODEL_NAMES, make_comparisons
from tests.conftest import PASSWORD


def _next(client, project):
    return client.post(reverse("api-next-task", args=[project.slug]))


def _judge(client, assignment_id, body):
    return client.post(
        reverse("api-assignment-judgment", args=[assignment_id]), body, format="json"
    )


def _assert_blind(response):
    body = response.content.decode()
    for name in MODEL_NAMES:
        assert name not in body
    assert "temperature" not in body and "response_a" not in body


def test_next_task_returns_the_documented_payload(project, annotator, api_client_for):
    make_comparisons(project, 1)
    response = _next(api_client_for(annotator), project)

    assert response.status_code == 200
    data = response.json()
    assert set(data) == {
        "assignment",
        "prompt",
        "left",
        "right",
        "aspects",
        "allow_tie",
        "allow_both_bad",
        "lease_expires_at",
    }
    assignment = Assignment.objects.get()
    assert data["assignment"] == assignment.pk
    assert data["prompt"][1] == {"role": "user", "content": "Question 0?"}
    first, second = Response.objects.order_by("pk")
    left, right = (first, second) if assignment.left_is_first else (second, first)
    assert (data["left"], data["right"]) == ({"text": left.text}, {"text": right.text})
    assert data["aspects"] == ["helpfulness", "harmlessness"]
    assert data["allow_tie"] is True
    _assert_blind(response)


def test_next_task_is_204_when_nothing_is_left(project, annotator, api_client_for):
    response = _next(api_client_for(annotator), project)
    assert response.status_code == 204
    assert response.content == b""


def test_next_task_requires_authentication(project, api_client_for):
    make_comparisons(project, 1)
    assert _next(api_client_for(None), project).status_code in (401, 403)


@pytest.mark.parametrize("slug", ["demo", "no-such-project"])
def test_non_members_get_404(project, outsider, api_client_for, slug):
    make_comparisons(project, 1)
    project.slug = slug
    response = _next(api_client_for(outsider), project)
    assert response.status_code == 404
    assert response.json()["detail"] == api.PROJECT_NOT_FOUND.format(slug=slug)
    assert not Assignment.objects.exists()


def test_judgment_201_then_identical_retry_200_then_different_409(
    project, annotator, api_client_for
):
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    body = {"choice": "left", "strength": 3, "aspects": {"helpfulness": "left"}}

    created = _judge(client, task["assignment"], body)
    retried = _judge(client, task["assignment"], body)
    different = _judge(client, task["assignment"], body | {"choice": "right"})

    assert created.status_code == 201
    assert created.json()["choice"] == "left"
    assert created.json()["aspects"] == {"helpfulness": "left"}
    assert retried.status_code == 200 and retried.json() == created.json()
    assert different.status_code == 409
    assert "different answer" in different.json()["detail"]
    judgment = Judgment.objects.get()
    assignment = Assignment.objects.get()
    expected = Choice.FIRST if assignment.left_is_first else Choice.SECOND
    assert judgment.choice == expected
    _assert_blind(created)


def test_someone_elses_assignment_is_404(project, annotator, make_user, api_client_for):
    make_comparisons(project, 1)
    other = make_user("other", project=project, role="annotator")
    task = _next(api_client_for(annotator), project).json()
    response = _judge(api_client_for(other), task["assignment"], {"choice": "left"})
    assert response.status_code == 404
    skip = api_client_for(other).post(
        reverse("api-assignment-skip", args=[task["assignment"]])
    )
    assert skip.status_code == 404
    assert not Judgment.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "choice"),
        ({"choice": "first"}, "choice"),
        ({"choice": "left", "strength": 5}, "strength"),
        ({"choice": "left", "aspects": {"tone": "left"}}, "aspects"),
        ({"choice": "left", "aspects": {"helpfulness": "meh"}}, "aspects"),
    ],
)
def test_invalid_judgment_is_400_naming_the_field(
    project, annotator, api_client_for, body, field
):
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    response = _judge(client, task["assignment"], body)
    assert response.status_code == 400
    assert field in json.dumps(response.json())
    assert not Judgment.objects.exists()


def test_disallowed_tie_is_400(project, annotator, api_client_for):
    project.allow_tie = False
    project.save()
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    assert task["allow_tie"] is False
    response = _judge(client, task["assignment"], {"choice": "tie"})
    assert response.status_code == 400
    assert response.json() == {"choice": ["This project does not allow 'tie'."]}


def test_skip_is_204_and_the_next_task_differs(project, annotator, api_client_for):
    make_comparisons(project, 2)
    client = api_client_for(annotator)
    first = _next(client, project).json()
    response = client.post(reverse("api-assignment-skip", args=[first["assignment"]]))
    assert response.status_code == 204
    second = _next(client, project).json()
    assert second["assignment"] != first["assignment"]
    judged = _judge(client, second["assignment"], {"choice": "right"})
    assert judged.status_code == 201
    skip_judged = client.post(
        reverse("api-assignment-skip", args=[second["assignment"]])
    )
    assert skip_judged.status_code == 409
    assert _next(client, project).status_code == 204


def test_session_authentication_works_with_csrf(project, annotator):
    """The browser path: session login; DRF requires the CSRF token for writes."""
    make_comparisons(project, 1)
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=annotator.username, password=PASSWORD)
    url = reverse("api-next-task", args=[project.slug])
    assert client.post(url).status_code == 403  # no CSRF token
    client.get(reverse("login"))
    token = client.cookies["csrftoken"].value
    response = client.post(url, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


@pytest.fixture
def reclaim_not_due(monkeypatch):
    """The periodic reclaim just ran in this process (it runs at most every 5 s)."""
    from annotation.services import queue

    monkeypatch.setattr(
        queue, "_next_reclaim_at", timezone.now() + queue.RECLAIM_EVERY / 2
    )


def test_the_whole_http_calls_take_a_fixed_number_of_queries(
    project, annotator, api_client_for, reclaim_not_due, django_assert_num_queries
):
    """Every query of the request, authentication included. The test's transaction
    turns each call's own into a savepoint (2 queries, where a server has BEGIN and
    COMMIT); SQLite runs the writes that PostgreSQL sends as one statement apart."""
    make_comparisons(project, 30)
    client = api_client_for(annotator)
    sqlite = connection.vendor == "sqlite"
    # token, savepoint, membership + project, held lease, pick, lease writes
    with django_assert_num_queries(7 + sqlite):
        task = _next(client, project)
    assert task.status_code == 200
    # token, savepoint, lock, judgment + assignment + comparison writes
    with django_assert_num_queries(5 + 2 * sqlite):
        judged = _judge(client, task.json()["assignment"], {"choice": "left"})
    assert judged.status_code == 201


def test_answers_are_json_whatever_the_accept_header_says(
    project, annotator, api_client_for
):
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    response = client.post(
        reverse("api-next-task", args=[project.slug]), HTTP_ACCEPT="text/html"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["assignment"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"choice": "left", "started_at": "yesterday"}, "started_at"),
        ({"choice": "left", "started_at": 12}, "started_at"),
        (["left"], "non_field_errors"),
        ({"choice": "left", "rationale": 5}, "rationale"),
    ],
)
def test_malformed_judgment_bodies_are_400_naming_the_field(
    project, annotator, api_client_for, body, field
):
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    response = _judge(client, task["assignment"], body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Judgment.objects.exists()


def test_strength_may_come_as_digits_and_started_at_sets_the_duration(
    project, annotator, api_client_for
):
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    started = Assignment.objects.get().leased_at - dt.timedelta(seconds=5)
    naive = started.replace(tzinfo=None).isoformat()  # read as UTC
    response = _judge(
        client,
        task["assignment"],
        {"choice": "right", "strength": "3", "started_at": naive},
    )
    assert response.status_code == 201
    judgment = Judgment.objects.get()
    assert judgment.strength == 3 and response.json()["strength"] == 3
    assert judgment.started_at == started


def test_late_submission_is_409_once_others_cover_the_target(
    project, annotator, make_user, api_client_for
):
    """Target 2: the lease runs out, two others take both slots, the answer is lost."""
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    Assignment.objects.filter(pk=task["assignment"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    for name in ("b", "c"):
        other = make_user(name, project=project, role="annotator")
        assert _next(api_client_for(other), project).status_code == 200

    response = _judge(client, task["assignment"], {"choice": "left"})

    assert response.status_code == 409
    assert response.json() == {"detail": LEASE_EXPIRED_TARGET_MET}
    assert not Judgment.objects.exists()


def test_late_submission_is_accepted_while_a_slot_is_free(
    project, annotator, api_client_for
):
    make_comparisons(project, 1)
    client = api_client_for(annotator)
    task = _next(client, project).json()
    Assignment.objects.filter(pk=task["assignment"]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    response = _judge(client, task["assignment"], {"choice": "left"})
    assert response.status_code == 201
