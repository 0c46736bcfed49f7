"""Researcher import page: access per role, upload, rejection shown with its lines."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import Comparison, ImportBatch, Prompt
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

URL = "/projects/demo/import/"


def logged_in(client, user):
    if user is not None:
        assert client.login(username=user.username, password=PASSWORD)
    return client


def upload(rows, name="rows.jsonl") -> SimpleUploadedFile:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return SimpleUploadedFile(name, body)


ROWS = [
    {
        "prompt": f"Q{i}",
        "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}],
    }
    for i in range(3)
]


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (None, 302),
        ("outsider", 404),
        ("annotator", 403),
        ("researcher", 200),
        ("project_admin", 200),
    ],
)
def test_page_access_per_role(request, client, project, who, expected):
    user = request.getfixturevalue(who) if who else None
    response = logged_in(client, user).get(URL)
    assert response.status_code == expected
    if expected == 302:
        assert "/accounts/login/" in response["Location"]
    if expected == 200:
        assert b"Import data" in response.content
        assert b"No imports yet." in response.content


@pytest.mark.parametrize(("who", "expected"), [("annotator", 403), ("outsider", 404)])
def test_upload_by_non_researchers_is_refused_and_writes_nothing(
    request, client, project, who, expected
):
    client = logged_in(client, request.getfixturevalue(who))
    response = client.post(URL, {"file": upload(ROWS), "split": "train"})
    assert response.status_code == expected
    assert ImportBatch.objects.count() == 0


def test_upload_imports_redirects_and_lists_the_batch(client, project, researcher):
    client = logged_in(client, researcher)
    response = client.post(URL, {"file": upload(ROWS), "split": "train", "seed": 0})
    assert response.status_code == 302
    assert Comparison.objects.count() == 3
    page = client.get(response["Location"]).content.decode()
    assert "Imported rows.jsonl as batch #" in page
    assert (
        "3 rows: 3 prompts, 6 responses, 3 comparisons, 0 prior labels created" in page
    )
    again = client.post(URL, {"file": upload(ROWS), "split": "train"}, follow=True)
    assert "already imported into demo" in again.content.decode()
    assert ImportBatch.objects.count() == 1


def test_rejected_upload_shows_each_error_with_its_line(client, project, project_admin):
    client = logged_in(client, project_admin)
    rows = [*ROWS, {"prompt": "Q9", "responses": [{"model": "a", "text": ""}]}]
    page = client.post(URL, {"file": upload(rows), "split": "train"}, follow=True)
    text = page.content.decode()
    assert "rows.jsonl was rejected (1 error); nothing was written." in text
    assert "line 4, <code>responses[0].text</code>: must be a non-empty string" in text
    assert Prompt.objects.count() == 0
    assert ImportBatch.objects.get().status == "failed"


def test_missing_file_re_renders_the_form_with_an_error(client, project, researcher):
    response = logged_in(client, researcher).post(URL, {"split": "train"})
    assert response.status_code == 400
    assert b"This field is required." in response.content
