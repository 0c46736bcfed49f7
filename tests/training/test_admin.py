"""The admin shows the run registry read-only and cancels through the service."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.training.webdata import HUB_MODEL, make_snapshot
from training import services
from training.models import RunStatus


@pytest.fixture
def admin_client_logged_in(db):
    get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    client = Client()
    assert client.login(username="root", password="pw")
    return client


def test_admin_lists_runs_and_cancels_the_selected_ones(
    admin_client_logged_in, project, researcher, tmp_path
):
    snapshot = make_snapshot(project, researcher, tmp_path)
    run = services.run_queue(
        snapshot=snapshot, recipe="sft-lora-tiny", base_model=HUB_MODEL, user=researcher
    )
    client = admin_client_logged_in
    listing = client.get("/admin/training/trainingrun/")
    assert listing.status_code == 200
    assert HUB_MODEL in listing.content.decode()
    assert (
        client.get(f"/admin/training/trainingrun/{run.pk}/change/").status_code == 200
    )
    assert client.get("/admin/training/trainingrun/add/").status_code == 403
    response = client.post(
        "/admin/training/trainingrun/",
        {"action": "cancel_runs", "_selected_action": [run.pk]},
        follow=True,
    )
    assert f"Run {run.pk}: cancel requested." in response.content.decode()
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert "Cancelled by root" in run.error
