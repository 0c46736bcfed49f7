"""Researcher pages: configure, preview, create, read and download snapshots."""

import io
import zipfile

import pytest

from annotation.models import Role
from exports.models import DatasetSnapshot
from exports.tasks import build_snapshot
from tests.conftest import PASSWORD


@pytest.fixture
def browser(client, labelled_project, make_user):
    def _login(role):
        user = make_user(f"user-{role}", project=labelled_project, role=role)
        client.login(username=user.username, password=PASSWORD)
        return client

    return _login


def test_annotators_cannot_open_the_export_page(browser):
    response = browser(Role.ANNOTATOR).get("/projects/prefs/exports/")
    assert response.status_code == 403


PREVIEW = {
    "format": "preference",
    "policy": "unanimous",
    "min_agreement": 0.5,
    "min_votes": 1,
    "sft_style": "messages",
    "heldout_fraction": 0,
    "seed": 0,
    "max_chars": 20000,
}


@pytest.mark.parametrize("method", ["post", "get"])  # the button; a link with settings
def test_preview_shows_counts_without_creating_anything(browser, method):
    client = browser(Role.RESEARCHER)
    send = client.post if method == "post" else client.get
    response = send("/projects/prefs/exports/", {**PREVIEW, "preview": 1})
    assert response.status_code == 200
    html = response.content.decode()
    assert "4 of 12 comparisons kept" in html
    assert "not_unanimous" in html
    assert DatasetSnapshot.objects.count() == 0


def test_the_form_posts_so_its_csrf_token_never_enters_an_address(browser):
    """Both buttons submit one POST form: pressing *Preview counts* must not put
    `csrfmiddlewaretoken` into the URL (history, logs, Referer)."""
    html = browser(Role.RESEARCHER).get("/projects/prefs/exports/").content.decode()
    form = html.split('id="snapshot-form"')[0].rsplit("<form", 1)[1]
    assert 'method="post"' in form
    assert "formmethod" not in html


def test_invalid_settings_show_the_field_error(browser):
    response = browser(Role.RESEARCHER).get(
        "/projects/prefs/exports/", {"format": "csv", "preview": 1}
    )
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_create_then_snapshot_page_shows_hygiene_and_card_and_zip(
    browser, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.DATA_DIR = tmp_path
    client = browser(Role.RESEARCHER)
    form = {
        "name": "v1",
        "format": "preference",
        "policy": "majority",
        "min_agreement": 0.5,
        "min_votes": 1,
        "sft_style": "messages",
        "heldout_fraction": 0.2,
        "seed": 0,
        "max_chars": 20000,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/projects/prefs/exports/", form)
    snapshot = DatasetSnapshot.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/projects/prefs/exports/{snapshot.pk}/"
    pending = client.get(response["Location"]).content.decode()
    assert "pending" in pending and 'http-equiv="refresh"' in pending
    build_snapshot.call(snapshot.pk)
    page = client.get(response["Location"]).content.decode()
    assert "Length bias" in page and "Contradictions" in page
    assert "human preference data" in page  # the card, rendered
    assert "<script" not in page.split('id="dataset-card"')[1]
    download = client.get(f"/projects/prefs/exports/{snapshot.pk}/download.zip")
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    assert any(name.endswith("hygiene.json") for name in archive.namelist())


def test_settings_in_the_address_run_no_preview_until_the_button_is_pressed(browser):
    client = browser(Role.RESEARCHER)
    settings = {"format": "preference", "policy": "unanimous", "heldout_fraction": 0}
    response = client.get("/projects/prefs/exports/", settings)
    assert response.status_code == 200
    assert 'id="preview"' not in response.content.decode()
    assert DatasetSnapshot.objects.count() == 0


@pytest.mark.parametrize(
    ("interval", "warned"), [([0.62, 0.71], True), ([0.45, 0.58], False)]
)
def test_length_bias_above_one_half_is_flagged(
    browser, labelled_project, interval, warned
):
    chars = {"share_chosen_longer": 0.6, "ci95": interval}
    snapshot = DatasetSnapshot.objects.create(
        project=labelled_project,
        status="succeeded",
        hygiene={"length_bias": {"chars": chars}},
    )
    page = browser(Role.RESEARCHER).get(f"/projects/prefs/exports/{snapshot.pk}/")
    row = page.content.decode().split('id="length-bias"')[1].split("</tr>")[0]
    assert ("The interval is above 50%" in row) is warned


def test_dawid_skene_that_does_not_converge_is_a_form_error(browser, monkeypatch):
    from exports import aggregation

    monkeypatch.setattr(aggregation, "DAWID_SKENE_ITERATIONS", 1)
    response = browser(Role.RESEARCHER).post(
        "/projects/prefs/exports/",
        {**PREVIEW, "policy": "dawid_skene", "preview": 1},
    )
    assert response.status_code == 400
    assert "did not converge" in response.content.decode()
    assert DatasetSnapshot.objects.count() == 0


def test_a_link_with_some_settings_previews_with_the_rest_at_their_defaults(browser):
    response = browser(Role.RESEARCHER).get(
        "/projects/prefs/exports/", {"preview": 1, "policy": "unanimous"}
    )
    assert response.status_code == 200, response.content
    html = response.content.decode()
    assert "not_unanimous" in html
    assert 'name="heldout_fraction" value="0.1"' in html


def test_a_preview_without_training_rows_says_create_would_fail(browser):
    client = browser(Role.RESEARCHER)
    response = client.post(
        "/projects/prefs/exports/", {**PREVIEW, "min_votes": 1000, "preview": 1}
    )
    assert 'id="no-training-rows"' in response.content.decode()
    response = client.post("/projects/prefs/exports/", {**PREVIEW, "preview": 1})
    assert 'id="no-training-rows"' not in response.content.decode()


def test_snapshot_page_shows_settings_plainly_and_says_when_the_files_are_gone(
    browser, labelled_project, tmp_path
):
    snapshot = DatasetSnapshot.objects.create(
        project=labelled_project,
        status="succeeded",
        output_dir=str(tmp_path / "gone"),
        policy={"files": ["parquet", "jsonl"], "max_tokens": None, "seed": 0},
        filters={"include_prior": False},
        counts={"train": 3, "test": 0},
        hygiene={"length_bias": {"chars": {"ci95": [0.4, 0.6]}}},
    )
    client = browser(Role.RESEARCHER)
    html = client.get(f"/projects/prefs/exports/{snapshot.pk}/").content.decode()
    assert "<code>files=parquet, jsonl</code>" in html
    assert "<code>max_tokens=none</code>" in html
    assert "<code>include_prior=false</code>" in html
    assert f"The files of snapshot {snapshot.pk} are no longer on disk." in html
    assert "download.zip" not in html and 'id="dataset-card"' not in html
    assert "0 (no rows, so no files)" in html
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "README.md").write_text("# Card\n")
    html = client.get(f"/projects/prefs/exports/{snapshot.pk}/").content.decode()
    assert "download.zip" in html and 'id="dataset-card"' in html
    assert 'id="files-gone"' not in html
