"""The annotator's task page and its fragment endpoints, over Django's test client."""

import html

import pytest
from django.urls import reverse

from annotation.models import Assignment, Choice, Judgment, Role
from annotation.services.judgments import (
    ASSIGNMENT_NOT_FOUND,
    INVALID_CHOICE,
    INVALID_STRENGTH,
    JUDGMENT_CONFLICT,
    LEASE_EXPIRED_TARGET_MET,
    TIE_NOT_ALLOWED,
)
from annotation.services.projects import project_create
from annotation.services.queue import leases_reclaim, next_assignment
from annotation.views.access import NOT_A_MEMBER
from annotation.views.tasks import SAVED, SKIPPED
from tests.annotation.ui_data import make_task_data

FRAGMENT = {"HTTP_X_REQUESTED_WITH": "fetch"}


def text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def logged_in(client, annotator):
    client.force_login(annotator)
    return client


def current_assignment(user) -> Assignment:
    return Assignment.objects.get(annotator=user, status=Assignment.Status.LEASED)


def test_task_page_shows_prompt_both_responses_and_controls(
    logged_in, project, annotator
):
    make_task_data(project, 2)
    response = logged_in.get(reverse("annotate", args=[project.slug]))
    assert response.status_code == 200
    body = response.content.decode()
    assignment = current_assignment(annotator)
    assert "Question number" in body and "Do you mean the number?" in body
    assert body.count('class="message"') == 4  # the whole multi-turn prompt
    assert "Left response" in body and "Right response" in body
    for key in ("1", "2", "3", "4", "s"):
        assert f'data-key="{key}"' in body
    assert 'id="help"' in body and "Keyboard shortcuts" in body
    assert "<strong>more helpful</strong>" in body  # guidelines through markdown
    assert "Helpfulness" in body and 'name="aspect:harmlessness"' in body
    # Texts set their own direction (Arabic or Hebrew answers read right to left).
    assert body.count('class="md" dir="auto"') >= 3  # prompt, left, right
    assert f"/annotate/{assignment.pk}/judge/" in body


def test_reloading_the_page_serves_the_same_task(logged_in, project, annotator):
    make_task_data(project, 3)
    logged_in.get(reverse("annotate", args=[project.slug]))
    first = current_assignment(annotator).pk
    logged_in.get(reverse("annotate", args=[project.slug]))
    assert current_assignment(annotator).pk == first
    assert Assignment.objects.filter(annotator=annotator).count() == 1


@pytest.mark.parametrize(
    ("choice", "left_is_first", "canonical"),
    [
        ("left", True, Choice.FIRST),
        ("left", False, Choice.SECOND),
        ("right", True, Choice.SECOND),
        ("right", False, Choice.FIRST),
        ("tie", False, Choice.TIE),
        ("both_bad", True, Choice.BOTH_BAD),
    ],
)
def test_judging_stores_canonical_choice_and_returns_next_task_fragment(
    logged_in, project, annotator, choice, left_is_first, canonical
):
    make_task_data(project, 2)
    logged_in.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    Assignment.objects.filter(pk=assignment.pk).update(left_is_first=left_is_first)
    response = logged_in.post(
        reverse("task-judge", args=[project.slug, assignment.pk]),
        {
            "choice": choice,
            "strength": "2",
            "aspect:helpfulness": "left",
            "rationale": " ok ",
        },
        **FRAGMENT,
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert SAVED in body
    assert "<html" not in body  # a fragment, not a page
    judgment = Judgment.objects.get(assignment=assignment)
    assert judgment.choice == canonical
    assert judgment.left_is_first is left_is_first
    # A strength left selected means nothing for a tie or both-bad answer.
    assert judgment.strength == (2 if choice in ("left", "right") else None)
    assert judgment.aspect_choices == {
        "helpfulness": Choice.FIRST if left_is_first else Choice.SECOND
    }
    assert judgment.rationale == "ok"
    following = current_assignment(annotator)
    assert following.pk != assignment.pk
    assert f"/annotate/{following.pk}/judge/" in body
    assert 'data-counter="session">1<' in body


def test_without_javascript_the_form_post_redirects_back(logged_in, project, annotator):
    make_task_data(project, 2)
    logged_in.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    response = logged_in.post(
        reverse("task-judge", args=[project.slug, assignment.pk]), {"choice": "left"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("annotate", args=[project.slug])
    assert Judgment.objects.filter(assignment=assignment).exists()


def test_skip_returns_the_next_task_and_never_the_skipped_one(
    logged_in, project, annotator
):
    make_task_data(project, 2)
    logged_in.get(reverse("annotate", args=[project.slug]))
    skipped = current_assignment(annotator)
    response = logged_in.post(
        reverse("task-skip", args=[project.slug, skipped.pk]), **FRAGMENT
    )
    assert response.status_code == 200
    assert SKIPPED in response.content.decode()
    skipped.refresh_from_db()
    assert skipped.status == Assignment.Status.SKIPPED
    assert current_assignment(annotator).comparison_id != skipped.comparison_id


def test_done_fragment_when_nothing_is_left(logged_in, project, annotator):
    make_task_data(project, 1)
    logged_in.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    response = logged_in.post(
        reverse("task-judge", args=[project.slug, assignment.pk]),
        {"choice": "right"},
        **FRAGMENT,
    )
    assert "Nothing left for you right now" in response.content.decode()
    assert reverse("task-next", args=[project.slug]) in response.content.decode()


def open_task(client, project, annotator, *, tasks: int) -> str:
    """Make `tasks` comparisons, open the task page; the leased task's judge URL."""
    make_task_data(project, tasks)
    client.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    return reverse("task-judge", args=[project.slug, assignment.pk])


def test_invalid_choice_is_400_with_message_and_keeps_the_task(
    logged_in, project, annotator
):
    url = open_task(logged_in, project, annotator, tasks=2)
    assignment = current_assignment(annotator)
    response = logged_in.post(url, {"choice": "middle"}, **FRAGMENT)
    assert response.status_code == 400
    assert INVALID_CHOICE.format(allowed="left, right, tie, both_bad") in text(response)
    response = logged_in.post(url, {"choice": "left", "strength": "9"}, **FRAGMENT)
    assert response.status_code == 400
    assert INVALID_STRENGTH in text(response)
    assert not Judgment.objects.exists()
    assert current_assignment(annotator).pk == assignment.pk


def test_disallowed_tie_and_both_bad_are_not_offered_and_refused(client, make_user):
    project = project_create(
        slug="strict", name="Strict", allow_tie=False, allow_both_bad=False
    )
    user = make_user("strict-ann", project=project, role=Role.ANNOTATOR)
    make_task_data(project, 2)
    client.force_login(user)
    body = client.get(reverse("annotate", args=[project.slug])).content.decode()
    assert 'data-key="3"' not in body and 'data-key="4"' not in body
    assert "Tie: equally good" not in body
    assignment = current_assignment(user)
    response = client.post(
        reverse("task-judge", args=[project.slug, assignment.pk]),
        {"choice": "tie"},
        **FRAGMENT,
    )
    assert response.status_code == 400
    assert TIE_NOT_ALLOWED in text(response)


def test_second_different_answer_is_409(logged_in, project, annotator):
    make_task_data(project, 3)
    logged_in.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    url = reverse("task-judge", args=[project.slug, assignment.pk])
    assert logged_in.post(url, {"choice": "left"}, **FRAGMENT).status_code == 200
    again = logged_in.post(url, {"choice": "left"}, **FRAGMENT)
    assert again.status_code == 200  # identical retry is fine
    different = logged_in.post(url, {"choice": "right"}, **FRAGMENT)
    assert different.status_code == 409
    assert JUDGMENT_CONFLICT in text(different)
    assert Judgment.objects.filter(assignment=assignment).count() == 1
    assert logged_in.session[f"prefline:judged:{project.pk}"] == 1


def test_someone_elses_assignment_is_404(logged_in, project, make_user):
    make_task_data(project, 2)
    other = make_user("other", project=project, role=Role.ANNOTATOR)
    theirs = next_assignment(annotator=other, project=project)
    for name in ("task-judge", "task-skip"):
        response = logged_in.post(
            reverse(name, args=[project.slug, theirs.pk]),
            {"choice": "left"},
            **FRAGMENT,
        )
        assert response.status_code == 404
        assert ASSIGNMENT_NOT_FOUND in text(response)
    assert not Judgment.objects.exists()


def test_outsiders_get_404_and_anonymous_users_the_login(client, project, outsider):
    response = client.get(reverse("annotate", args=[project.slug]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(outsider)
    response = client.get(reverse("annotate", args=[project.slug]))
    assert response.status_code == 404
    assert NOT_A_MEMBER in response.content.decode()


def test_fragment_endpoints_refuse_get(logged_in, project):
    response = logged_in.get(reverse("task-next", args=[project.slug]))
    assert response.status_code == 405


def test_project_list_shows_own_progress(logged_in, project, annotator):
    make_task_data(project, 3)
    logged_in.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    logged_in.post(
        reverse("task-judge", args=[project.slug, assignment.pk]), {"choice": "left"}
    )
    body = logged_in.get(reverse("project-list")).content.decode()
    assert "Demo project" in body
    assert "You judged <strong>1</strong>, skipped 0" in body
    assert "Continue annotating" in body
    assert "Dashboard" not in body  # annotators get no researcher links


def test_late_answer_after_others_filled_the_task_is_409_with_reason(
    logged_in, project, annotator, make_user
):
    make_task_data(project, 3)
    logged_in.get(reverse("annotate", args=[project.slug]))
    mine = current_assignment(annotator)
    Assignment.objects.filter(pk=mine.pk).update(expires_at=mine.leased_at)
    assert leases_reclaim() == 1
    for name in ("late-1", "late-2"):
        other = make_user(name, project=project, role=Role.ANNOTATOR)
        theirs = next_assignment(annotator=other, project=project)
        assert theirs.comparison_id == mine.comparison_id
    response = logged_in.post(
        reverse("task-judge", args=[project.slug, mine.pk]),
        {"choice": "left"},
        **FRAGMENT,
    )
    assert response.status_code == 409
    assert LEASE_EXPIRED_TARGET_MET in text(response)
    assert not Judgment.objects.filter(annotator=annotator).exists()


def test_aspects_are_posted_by_name_so_a_reordered_project_files_them_right(
    logged_in, project, annotator
):
    """The annotator's page was rendered with the old order; the answer is still
    filed under the aspect it was given for, and a removed aspect is refused."""
    make_task_data(project, 2)
    logged_in.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    Assignment.objects.filter(pk=assignment.pk).update(left_is_first=True)
    project.aspects = ["harmlessness", "helpfulness"]
    project.save(update_fields=["aspects"])
    judge = reverse("task-judge", args=[project.slug, assignment.pk])
    answer = {"aspect:helpfulness": "left", "aspect:harmlessness": "right"}
    project.aspects = ["helpfulness"]
    project.save(update_fields=["aspects"])
    refused = logged_in.post(judge, {"choice": "left", **answer}, **FRAGMENT)
    assert refused.status_code == 400
    assert "Unknown aspect &#x27;harmlessness&#x27;" in refused.content.decode()
    project.aspects = ["harmlessness", "helpfulness"]
    project.save(update_fields=["aspects"])
    response = logged_in.post(judge, {"choice": "left", **answer}, **FRAGMENT)
    assert response.status_code == 200
    assert Judgment.objects.get(assignment=assignment).aspect_choices == {
        "helpfulness": Choice.FIRST,
        "harmlessness": Choice.SECOND,
    }


def test_logged_out_fragment_requests_get_a_401_not_the_login_page(
    client, project, annotator
):
    """The script would paste a login page into the task; and the login page would
    come back to a POST-only URL (a 405)."""
    make_task_data(project, 1)
    client.force_login(annotator)
    client.get(reverse("annotate", args=[project.slug]))
    assignment = current_assignment(annotator)
    client.logout()
    judge = reverse("task-judge", args=[project.slug, assignment.pk])
    response = client.post(judge, {"choice": "left"}, **FRAGMENT)
    assert response.status_code == 401
    assert "You are logged out" in response.content.decode()
    assert "<form" not in response.content.decode()
    page = client.post(judge, {"choice": "left"})  # without the script
    annotate = reverse("annotate", args=[project.slug])
    assert page.status_code == 302
    assert page["Location"] == f"{reverse('login')}?next={annotate}"
    assert not Judgment.objects.exists()
    dashboard = reverse("dashboard", args=[project.slug])
    assert client.get(dashboard)["Location"] == f"{reverse('login')}?next={dashboard}"


def test_without_the_script_the_next_page_says_saved_and_errors_link_back(
    logged_in, project, annotator
):
    judge = open_task(logged_in, project, annotator, tasks=3)
    page = logged_in.post(judge, {"choice": "left"}, follow=True)
    assert SAVED in page.content.decode()
    conflict = logged_in.post(judge, {"choice": "right"})  # a second tab's answer
    assert conflict.status_code == 409
    annotate = reverse("annotate", args=[project.slug])
    assert f'<a href="{annotate}">Back to annotating</a>' in conflict.content.decode()
