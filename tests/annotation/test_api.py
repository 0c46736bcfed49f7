"""The annotation REST API over real HTTP handling: roles, filters, errors, writes."""

import json

import pytest
import requests
from rest_framework.test import APIClient

from annotation.api import serializers as api_serializers
from annotation.api import views as api_views
from annotation.models import Choice, Comparison, Membership, Project, Role
from annotation.services.projects import project_create
from tests.annotation.api_data import MODEL_NAMES, make_api_data, make_prompt
from tests.conftest import PASSWORD

API = "/api/v1"


@pytest.fixture
def other_annotator(project, make_user):
    return make_user("ann2", project=project, role=Role.ANNOTATOR)


@pytest.fixture
def data(project, annotator, other_annotator):
    return make_api_data(project, annotator, other_annotator)


@pytest.fixture
def superuser(make_user):
    user = make_user("root")
    user.is_superuser = True
    user.is_staff = True
    user.save()
    return user


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


# --- projects -------------------------------------------------------------------


def test_project_list_shows_only_the_users_projects(
    project, annotator, outsider, api_client_for
):
    project_create(slug="other", name="Other")
    assert [
        p["slug"] for p in results(api_client_for(annotator).get(f"{API}/projects/"))
    ] == ["demo"]
    assert results(api_client_for(outsider).get(f"{API}/projects/")) == []


def test_superuser_lists_every_project(project, superuser, api_client_for):
    project_create(slug="other", name="Other")
    rows = results(api_client_for(superuser).get(f"{API}/projects/"))
    assert [(p["slug"], p["role"]) for p in rows] == [
        ("demo", "admin"),
        ("other", "admin"),
    ]


def test_annotator_sees_only_guidelines_level_fields(
    project, annotator, researcher, api_client_for
):
    seen = api_client_for(annotator).get(f"{API}/projects/demo/").json()
    assert set(seen) == {*api_serializers.GUIDELINES_FIELDS, "role"}
    assert seen["role"] == "annotator"
    assert seen["guidelines"] == "Pick the **more helpful** answer."
    full = api_client_for(researcher).get(f"{API}/projects/demo/").json()
    assert full["target_judgments"] == 2 and full["lease_seconds"] == 600
    listed = results(api_client_for(annotator).get(f"{API}/projects/"))[0]
    assert "target_judgments" not in listed


def test_project_of_someone_else_reads_as_not_found(project, outsider, api_client_for):
    response = api_client_for(outsider).get(f"{API}/projects/demo/")
    assert response.status_code == 404
    assert response.json()["detail"] == api_views.PROJECT_NOT_FOUND.format(slug="demo")


def test_anonymous_gets_401_with_a_token_challenge(project):
    response = APIClient().get(f"{API}/projects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_only_superusers_create_projects(researcher, superuser, api_client_for):
    body = {"slug": "new", "name": "New", "aspects": ["honesty"], "target_judgments": 4}
    denied = api_client_for(researcher).post(f"{API}/projects/", body, format="json")
    assert denied.status_code == 403
    assert denied.json()["detail"] == api_views.SUPERUSER_NEEDED
    created = api_client_for(superuser).post(f"{API}/projects/", body, format="json")
    assert created.status_code == 201, created.content
    project = Project.objects.get(slug="new")
    assert project.aspects == ["honesty"] and project.target_judgments == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "demo", "name": "Again"}, "slug"),
        ({"slug": "has space", "name": "x"}, "slug"),
        ({"slug": "ok", "name": "x", "lease_seconds": 3}, "lease_seconds"),
        ({"slug": "ok", "name": "x", "aspects": ["a", "a"]}, "aspects"),
        ({"slug": "ok", "name": "x", "gold_rate": 2}, "gold_rate"),
    ],
)
def test_invalid_project_is_rejected_naming_the_field(
    project, superuser, api_client_for, body, field
):
    response = api_client_for(superuser).post(f"{API}/projects/", body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert Project.objects.count() == 1


def test_project_admin_changes_settings_and_others_cannot(
    project, project_admin, researcher, api_client_for
):
    url = f"{API}/projects/demo/"
    denied = api_client_for(researcher).patch(
        url, {"target_judgments": 5}, format="json"
    )
    assert denied.status_code == 403
    assert "admin role" in denied.json()["detail"]
    changed = api_client_for(project_admin).patch(
        url, {"target_judgments": 5, "allow_tie": False}, format="json"
    )
    assert changed.status_code == 200, changed.content
    project.refresh_from_db()
    assert (project.target_judgments, project.allow_tie) == (5, False)


def test_project_slug_cannot_be_changed(project, project_admin, api_client_for):
    response = api_client_for(project_admin).patch(
        f"{API}/projects/demo/", {"slug": "renamed"}, format="json"
    )
    assert response.status_code == 400
    assert "Unknown field(s): slug" in json.dumps(response.json())
    assert Project.objects.filter(slug="demo").exists()


# --- members --------------------------------------------------------------------


def test_researchers_read_members_and_annotators_cannot(
    project, annotator, researcher, api_client_for
):
    url = f"{API}/projects/demo/members/"
    rows = results(api_client_for(researcher).get(url))
    assert {(m["username"], m["role"]) for m in rows} == {
        ("ann", "annotator"),
        ("res", "researcher"),
    }
    denied = api_client_for(annotator).get(url)
    assert denied.status_code == 403
    assert denied.json()["detail"] == api_views.ROLE_NEEDED.format(
        needed="researcher", slug="demo", role="annotator"
    )


def test_project_admin_adds_changes_and_removes_members(
    project, project_admin, make_user, api_client_for
):
    make_user("newbie")
    client = api_client_for(project_admin)
    url = f"{API}/projects/demo/members/"
    added = client.post(url, {"username": "newbie", "role": "annotator"}, format="json")
    assert added.status_code == 201, added.content
    again = client.post(url, {"username": "newbie", "role": "admin"}, format="json")
    assert again.status_code == 400
    assert "already a member" in again.json()["username"][0]
    changed = client.patch(f"{url}newbie/", {"role": "researcher"}, format="json")
    assert changed.json()["role"] == "researcher"
    assert client.delete(f"{url}newbie/").status_code == 204
    assert not Membership.objects.filter(user__username="newbie").exists()
    missing = client.delete(f"{url}newbie/")
    assert missing.status_code == 404
    assert "No member 'newbie'" in missing.json()["detail"]


def test_adding_an_unknown_user_says_how_to_create_it(
    project, project_admin, api_client_for
):
    response = api_client_for(project_admin).post(
        f"{API}/projects/demo/members/",
        {"username": "ghost", "role": "annotator"},
        format="json",
    )
    assert response.status_code == 400
    assert (
        "add_member demo ghost --role annotator --create"
        in (response.json()["username"][0])
    )


def test_researcher_cannot_manage_members(
    project, researcher, annotator, api_client_for
):
    response = api_client_for(researcher).patch(
        f"{API}/projects/demo/members/ann/", {"role": "admin"}, format="json"
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=annotator).role == "annotator"


def test_bad_role_is_a_400_listing_the_choices(project, project_admin, api_client_for):
    response = api_client_for(project_admin).patch(
        f"{API}/projects/demo/members/padmin/", {"role": "owner"}, format="json"
    )
    assert response.status_code == 400
    assert "owner" in response.json()["role"][0]


# --- prompts and responses ------------------------------------------------------


def test_prompts_filter_by_split_and_count_responses(data, researcher, api_client_for):
    client = api_client_for(researcher)
    rows = results(client.get(f"{API}/projects/demo/prompts/", {"split": "heldout"}))
    assert [(p["id"], p["response_count"]) for p in rows] == [(data.prompts[1].pk, 2)]
    bad = client.get(f"{API}/projects/demo/prompts/", {"split": "test"})
    assert bad.status_code == 400
    assert "split" in bad.json()


def test_responses_filter_by_model_and_show_generation_params(
    data, researcher, api_client_for
):
    rows = results(
        api_client_for(researcher).get(
            f"{API}/projects/demo/responses/", {"model_name": "gamma-70b"}
        )
    )
    assert [r["id"] for r in rows] == [data.responses[2].pk]
    assert rows[0]["generation_params"] == {"temperature": 0.7}


def test_annotators_cannot_read_prompts_responses_or_comparisons(
    data, annotator, api_client_for
):
    client = api_client_for(annotator)
    for kind in ("prompts", "responses", "comparisons"):
        response = client.get(f"{API}/projects/demo/{kind}/")
        assert response.status_code == 403, kind
        assert "researcher role" in response.json()["detail"]


def test_rows_of_another_project_are_not_reachable(data, researcher, api_client_for):
    other = project_create(slug="other", name="Other")
    foreign = make_prompt(other, "foreign")
    response = api_client_for(researcher).get(
        f"{API}/projects/demo/prompts/{foreign.pk}/"
    )
    assert response.status_code == 404
    assert response.json()["detail"] == api_views.OBJECT_NOT_FOUND.format(
        noun="prompt", key=str(foreign.pk), slug="demo"
    )


# --- comparisons ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [0, 1, 2]),
        ({"gold": "true"}, [0]),
        ({"gold": "false"}, [1, 2]),
        ({"complete": "true"}, [0]),
        ({"complete": "false"}, [1, 2]),
        ({"split": "heldout"}, [1]),
        ({"origin": "import"}, [0, 1, 2]),
        ({"origin": "evaluation"}, []),
        ({"model_name": "gamma-70b"}, [2]),
    ],
)
def test_comparison_filters(data, researcher, api_client_for, query, expected):
    rows = results(
        api_client_for(researcher).get(f"{API}/projects/demo/comparisons/", query)
    )
    assert [r["id"] for r in rows] == [data.comparisons[i].pk for i in expected]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("comparisons", {"gold": "maybe"}),
        ("comparisons", {"complete": "2"}),
        ("judgments", {"is_gold": "xx"}),
    ],
)
def test_bad_yes_no_filter_is_a_400_naming_it(
    data, researcher, api_client_for, path, query
):
    response = api_client_for(researcher).get(f"{API}/projects/demo/{path}/", query)
    assert response.status_code == 400
    [name] = query
    assert "true or false" in response.json()[name][0]


def test_comparison_filter_by_prompt(data, researcher, api_client_for):
    rows = results(
        api_client_for(researcher).get(
            f"{API}/projects/demo/comparisons/", {"prompt": data.prompts[0].pk}
        )
    )
    assert [r["id"] for r in rows] == [data.comparisons[0].pk, data.comparisons[2].pk]


def test_comparison_shows_both_responses_with_model_names(
    data, researcher, api_client_for
):
    row = (
        api_client_for(researcher)
        .get(f"{API}/projects/demo/comparisons/{data.comparisons[0].pk}/")
        .json()
    )
    assert (row["response_a"]["model_name"], row["response_b"]["model_name"]) == (
        "alpha-7b",
        "beta-13b",
    )
    assert row["is_gold"] and row["is_complete"] and row["gold_choice"] == "first"


def test_researcher_sets_priority_and_unmarks_gold(data, researcher, api_client_for):
    url = f"{API}/projects/demo/comparisons/{data.comparisons[0].pk}/"
    client = api_client_for(researcher)
    response = client.patch(url, {"priority": 9, "gold_choice": None}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["priority"], response.json()["gold_choice"]) == (9, None)
    comparison = Comparison.objects.get(pk=data.comparisons[0].pk)
    assert (comparison.priority, comparison.gold_choice) == (9, None)
    assert not comparison.judgments.filter(is_gold=True).exists()


def test_marking_gold_reaches_the_judgments(data, researcher, api_client_for):
    comparison = data.comparisons[2]
    response = api_client_for(researcher).patch(
        f"{API}/projects/demo/comparisons/{comparison.pk}/",
        {"gold_choice": "second"},
        format="json",
    )
    assert response.json()["gold_choice"] == "second"
    assert Comparison.objects.get(pk=comparison.pk).gold_choice == Choice.SECOND


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"gold_choice": "left"}, "gold_choice"),
        ({"priority": "high"}, "priority"),
        ({}, "Send at least one of"),
        ({"judgment_count": 0}, "Unknown field(s): judgment_count"),
    ],
)
def test_bad_comparison_update_is_a_400_and_changes_nothing(
    data, researcher, api_client_for, body, needle
):
    comparison = data.comparisons[1]
    response = api_client_for(researcher).patch(
        f"{API}/projects/demo/comparisons/{comparison.pk}/", body, format="json"
    )
    assert response.status_code == 400
    assert needle in json.dumps(response.json())
    comparison.refresh_from_db()
    assert (comparison.priority, comparison.gold_choice) == (0, None)


def test_gold_tie_is_refused_where_the_project_forbids_ties(
    data, project, researcher, api_client_for
):
    project.allow_tie = False
    project.save()
    response = api_client_for(researcher).patch(
        f"{API}/projects/demo/comparisons/{data.comparisons[1].pk}/",
        {"gold_choice": "tie"},
        format="json",
    )
    assert response.status_code == 400
    assert "does not allow ties" in response.json()["gold_choice"][0]


# --- judgments ------------------------------------------------------------------


def test_researcher_sees_human_and_prior_judgments_with_filters(
    data, researcher, api_client_for
):
    client = api_client_for(researcher)
    url = f"{API}/projects/demo/judgments/"
    assert len(results(client.get(url))) == 3
    ids = [r["id"] for r in results(client.get(url, {"annotator": "ann"}))]
    assert ids == [str(data.judgments[0].public_id)]
    prior = results(client.get(url, {"origin": "prior"}))
    assert [(r["id"], r["annotator"]) for r in prior] == [
        (str(data.prior.public_id), None)
    ]
    recent = results(client.get(url, {"submitted_after": "2026-11-21"}))
    assert [r["id"] for r in recent] == [str(data.judgments[1].public_id)]
    older = results(client.get(url, {"submitted_before": "2026-11-21T00:00:00Z"}))
    assert len(older) == 2
    bad = client.get(url, {"submitted_after": "last week"})
    assert bad.status_code == 400 and "submitted_after" in bad.json()


def test_annotator_sees_only_own_judgments_without_names_or_models(
    data, annotator, api_client_for
):
    client = api_client_for(annotator)
    response = client.get(f"{API}/projects/demo/judgments/")
    rows = results(response)
    assert [r["id"] for r in rows] == [str(data.judgments[0].public_id)]
    assert rows[0]["picked_side"] == "left"
    assert "annotator" not in rows[0] and "is_gold" not in rows[0]
    body = response.content.decode()
    assert not any(name in body for name in MODEL_NAMES)
    assert "secret reason" not in body
    # Filters that would reveal others' votes are refused, never widen the view.
    widened = client.get(f"{API}/projects/demo/judgments/?annotator=ann2")
    assert widened.status_code == 400
    assert "ann2" not in widened.content.decode()
    other = client.get(f"{API}/projects/demo/judgments/{data.judgments[1].public_id}/")
    assert other.status_code == 404


def test_outsider_cannot_read_judgments(data, outsider, api_client_for):
    response = api_client_for(outsider).get(f"{API}/projects/demo/judgments/")
    assert response.status_code == 404


# --- auth and pagination --------------------------------------------------------


def test_token_endpoint_exchanges_a_password_for_a_working_token(annotator):
    client = APIClient()
    wrong = client.post(
        f"{API}/auth/token/", {"username": "ann", "password": "nope"}, format="json"
    )
    assert wrong.status_code == 400
    assert api_serializers.INVALID_CREDENTIALS in json.dumps(wrong.json())
    issued = client.post(
        f"{API}/auth/token/", {"username": "ann", "password": PASSWORD}, format="json"
    )
    assert issued.status_code == 200
    token = issued.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(f"{API}/projects/").status_code == 200
    again = APIClient().post(
        f"{API}/auth/token/", {"username": "ann", "password": PASSWORD}, format="json"
    )
    assert again.json()["token"] == token


def test_session_login_authenticates_the_api(project, researcher):
    client = APIClient()
    assert client.login(username="res", password=PASSWORD)
    assert client.get(f"{API}/projects/demo/members/").status_code == 200


def test_session_writes_need_the_csrf_token(project, project_admin):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="padmin", password=PASSWORD)
    response = client.patch(f"{API}/projects/demo/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", ""])
def test_a_page_size_it_cannot_use_is_a_400_naming_it(
    data, researcher, api_client_for, value
):
    """DRF would fall back to its default size and answer another page."""
    response = api_client_for(researcher).get(
        f"{API}/projects/demo/responses/", {"page_size": value}
    )
    assert response.status_code == 400, response.content
    assert response.json() == {
        "page_size": [f"page_size must be a positive integer, got {value!r}."]
    }


def test_lists_are_paginated(data, researcher, api_client_for):
    page = (
        api_client_for(researcher)
        .get(f"{API}/projects/demo/responses/", {"page_size": 2})
        .json()
    )
    assert page["count"] == 5 and len(page["results"]) == 2
    assert "page=2" in page["next"]
    beyond = api_client_for(researcher).get(
        f"{API}/projects/demo/responses/", {"page": 9}
    )
    assert beyond.status_code == 404 and beyond.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_token_flow_over_a_real_socket(live_server, project, researcher):
    """A client outside the process: token from a password, then a filtered list."""
    issued = requests.post(
        f"{live_server.url}{API}/auth/token/",
        json={"username": "res", "password": PASSWORD},
        timeout=10,
    )
    assert issued.status_code == 200, issued.text
    headers = {"Authorization": f"Token {issued.json()['token']}"}
    listed = requests.get(
        f"{live_server.url}{API}/projects/demo/members/",
        params={"page_size": 1},
        headers=headers,
        timeout=10,
    )
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    refused = requests.get(
        f"{live_server.url}{API}/projects/demo/members/",
        headers={"Authorization": "Token not-a-real-token"},
        timeout=10,
    )
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Invalid token."


def test_id_filters_take_whole_numbers(data, researcher, api_client_for):
    response = api_client_for(researcher).get(
        f"{API}/projects/demo/comparisons/", {"prompt": "1.5"}
    )
    assert response.status_code == 400
    assert "whole number" in response.json()["prompt"][0]
