"""The Django admin: every annotation model is registered, lists, searches, edits."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from annotation.models import (
    Assignment,
    Comparison,
    ImportBatch,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
    Role,
)
from annotation.services.comparisons import GOLD_TIE_NOT_ALLOWED
from annotation.services.projects import LEASE_TOO_SHORT, UNKNOWN_ASPECT_FORMAT
from tests.annotation.api_data import make_api_data


@pytest.fixture
def superuser_client(client, make_user):
    root = make_user("root")
    root.is_superuser = root.is_staff = True
    root.save()
    client.force_login(root)
    return client


@pytest.fixture
def data(project, annotator, make_user):
    other = make_user("ann2", project=project, role=Role.ANNOTATOR)
    data = make_api_data(project, annotator, other)
    ImportBatch.objects.create(
        project=project,
        file_name="pairs.jsonl",
        sha256="ab" * 32,
        format="trl_preference",
        status=ImportBatch.Status.SUCCEEDED,
        counts={"comparisons": 3},
        created_by=annotator,
    )
    Assignment.objects.create(
        comparison=data.comparisons[1],
        annotator=annotator,
        left_is_first=False,
        leased_at=timezone.now(),
        expires_at=timezone.now(),
    )
    return data


def admin_url(model, view: str, *args) -> str:
    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


ANNOTATION_MODELS = list(apps.get_app_config("annotation").get_models())


def test_every_annotation_model_is_registered():
    unregistered = [
        m.__name__ for m in ANNOTATION_MODELS if not admin.site.is_registered(m)
    ]
    assert not unregistered


@pytest.mark.parametrize("model", ANNOTATION_MODELS, ids=lambda m: m.__name__)
def test_changelist_search_and_change_page_render(superuser_client, data, model):
    changelist = admin_url(model, "changelist")
    assert superuser_client.get(changelist).status_code == 200
    for term in ("ann", "1", "alpha-7b"):
        response = superuser_client.get(changelist, {"q": term})
        assert response.status_code == 200, (model.__name__, term)
    obj = model.objects.first()
    change = admin_url(model, "change", obj.pk)
    assert superuser_client.get(change).status_code == 200
    add_status = superuser_client.get(admin_url(model, "add")).status_code
    assert add_status == (200 if model in (Project, Membership) else 403)


READ_ONLY_MODELS = [Prompt, Response, ImportBatch, Assignment, Judgment]


@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_records_of_the_annotation_loop_cannot_be_edited_or_deleted(
    superuser_client, data, model
):
    """Hand edits would break the queue's counters and the duplicate hashes."""
    obj = model.objects.first()
    before = model.objects.count()
    change = superuser_client.post(admin_url(model, "change", obj.pk), {})
    assert change.status_code == 403
    delete = superuser_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"})
    assert delete.status_code == 403
    assert model.objects.count() == before


def comparison_form(comparison, **changes) -> dict:
    return {"priority": comparison.priority, "gold_choice": "", **changes}


def test_comparison_gold_edit_goes_through_the_service(superuser_client, data):
    """The service keeps the judgments' is_gold in step with the comparison."""
    comparison = data.comparisons[0]
    human = comparison.judgments.filter(origin=Judgment.Origin.HUMAN)
    assert human.count() == 2 and not human.filter(is_gold=False).exists()
    url = admin_url(Comparison, "change", comparison.pk)
    response = superuser_client.post(url, comparison_form(comparison, priority=7))
    assert response.status_code == 302
    comparison.refresh_from_db()
    assert (comparison.priority, comparison.gold_choice) == (7, None)
    assert not human.filter(is_gold=True).exists()
    response = superuser_client.post(
        url, comparison_form(comparison, gold_choice="second")
    )
    assert response.status_code == 302
    comparison.refresh_from_db()
    assert comparison.gold_choice == "second"
    assert not human.filter(is_gold=False).exists()


def test_comparison_gold_the_project_forbids_is_a_form_error(
    superuser_client, data, project
):
    project.allow_tie = False
    project.save()
    comparison = data.comparisons[1]
    response = superuser_client.post(
        admin_url(Comparison, "change", comparison.pk),
        comparison_form(comparison, gold_choice="tie"),
    )
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors == {"gold_choice": [GOLD_TIE_NOT_ALLOWED]}
    comparison.refresh_from_db()
    assert comparison.gold_choice is None


def test_comparisons_and_projects_cannot_be_deleted_from_the_admin(
    superuser_client, data, project
):
    comparison = data.comparisons[0]
    for url in (
        admin_url(Comparison, "delete", comparison.pk),
        admin_url(Project, "delete", project.pk),
    ):
        assert superuser_client.post(url, {"post": "yes"}).status_code == 403
    assert Comparison.objects.filter(pk=comparison.pk).exists()


def project_form(**fields) -> dict:
    form = {
        "slug": "new-project",
        "name": "New project",
        "guidelines": "",
        "aspects": "[]",
        "target_judgments": 2,
        "lease_seconds": 300,
        "allow_tie": "on",
        "allow_both_bad": "on",
        "gold_rate": 0.1,
        "memberships-TOTAL_FORMS": 0,
        "memberships-INITIAL_FORMS": 0,
    }
    return {**form, **fields}


def test_project_add_and_change_go_through_the_services(superuser_client, make_user):
    member = make_user("newbie")
    response = superuser_client.post(
        admin_url(Project, "add"),
        project_form(
            **{
                "memberships-TOTAL_FORMS": 1,
                "memberships-0-user": member.pk,
                "memberships-0-role": Role.ANNOTATOR,
            }
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    created = Project.objects.get(slug="new-project")
    assert (created.target_judgments, created.gold_rate) == (2, 0.1)
    assert created.memberships.get().user == member
    response = superuser_client.post(
        admin_url(Project, "change", created.pk),
        project_form(name="Renamed", aspects='["helpfulness"]'),
    )
    assert response.status_code == 302
    created.refresh_from_db()
    assert (created.name, created.aspects) == ("Renamed", ["helpfulness"])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"lease_seconds": 5}, LEASE_TOO_SHORT),
        ({"aspects": '["a", "a"]'}, UNKNOWN_ASPECT_FORMAT),
    ],
)
def test_project_settings_the_service_refuses_are_form_errors(
    superuser_client, fields, message
):
    response = superuser_client.post(admin_url(Project, "add"), project_form(**fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in [m for messages in errors.values() for m in messages]
    assert not Project.objects.filter(slug="new-project").exists()


def test_membership_admin_sets_and_removes_roles_through_the_services(
    superuser_client, project, make_user
):
    user = make_user("joiner")
    response = superuser_client.post(
        admin_url(Membership, "add"),
        {"user": user.pk, "project": project.pk, "role": Role.RESEARCHER},
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user=user, project=project)
    assert membership.role == Role.RESEARCHER
    response = superuser_client.post(
        admin_url(Membership, "delete", membership.pk), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(user=user, project=project).exists()


def test_hashes_and_queue_counters_are_read_only():
    comparison_admin = admin.site._registry[Comparison]
    assert {"judgment_count", "lease_count"} <= set(comparison_admin.readonly_fields)
    for model in ANNOTATION_MODELS:
        fields = {f.name for f in model._meta.fields}
        hashes = fields & {"content_hash", "sha256", "public_id"}
        readonly = set(admin.site._registry[model].readonly_fields)
        assert hashes <= readonly, model.__name__


def test_comparison_filters_by_gold(superuser_client, data):
    url = reverse("admin:annotation_comparison_changelist")
    response = superuser_client.get(url, {"gold_choice__isempty": "0"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_raise_priority_action_goes_through_the_service(superuser_client, data):
    url = reverse("admin:annotation_comparison_changelist")
    pks = [c.pk for c in data.comparisons[:2]]
    response = superuser_client.post(
        url, {"action": "raise_priority", "_selected_action": pks}, follow=True
    )
    assert response.status_code == 200
    priorities = dict(Comparison.objects.values_list("pk", "priority"))
    assert (priorities[pks[0]], priorities[pks[1]]) == (15, 10)


def test_clear_gold_action_unmarks_comparison_and_its_judgments(superuser_client, data):
    gold = data.comparisons[0]
    superuser_client.post(
        reverse("admin:annotation_comparison_changelist"),
        {"action": "clear_gold", "_selected_action": [gold.pk]},
    )
    gold.refresh_from_db()
    assert gold.gold_choice is None
    assert not gold.judgments.filter(is_gold=True).exists()


def test_staff_without_model_permissions_is_refused(client, make_user, data):
    staff = make_user("staffer")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    response = client.get(reverse("admin:annotation_comparison_changelist"))
    assert response.status_code == 403
