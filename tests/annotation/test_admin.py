"""The Django admin: every annotation model is registered, lists, searches, edits."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from annotation.models import Assignment, Comparison, ImportBatch, Role
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
    assert superuser_client.get(admin_url(model, "add")).status_code == 200


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
