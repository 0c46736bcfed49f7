"""Import API over HTTP: upload per role, rejection body, re-upload, list and detail."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import Comparison, ImportBatch, Judgment, Prompt, Role
from annotation.services.projects import membership_set, project_create

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/demo/imports/"


def jsonl_upload(rows, name="data.jsonl") -> SimpleUploadedFile:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return SimpleUploadedFile(name, body, content_type="application/octet-stream")


def pairs(tag: str) -> list[dict]:
    return [
        {"prompt": f"{tag} question {i}?", "chosen": "good answer", "rejected": "bad"}
        for i in range(3)
    ]


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (None, 401),
        ("outsider", 404),
        ("annotator", 403),
        ("researcher", 201),
        ("project_admin", 201),
    ],
)
def test_upload_is_for_researchers_and_admins(
    request, project, api_client_for, who, expected
):
    user = request.getfixturevalue(who) if who else None
    response = api_client_for(user).post(
        URL, {"file": jsonl_upload(pairs(str(who)))}, format="multipart"
    )
    assert response.status_code == expected, response.content
    if expected == 201:
        body = response.json()
        assert body["status"] == "succeeded"
        assert body["format"] == "trl_standard"
        assert body["created_by"] == user.username
        assert body["counts"]["prior_labels_created"] == 3
        assert body["already_imported"] is False
        assert Judgment.objects.filter(origin="prior").count() == 3
    else:
        assert "detail" in response.json()
        assert Prompt.objects.count() == 0


def test_rejected_upload_lists_errors_and_writes_nothing(
    project, researcher, api_client_for
):
    rows = pairs("r")
    rows[1]["chosen"] = ""
    rows.append({"prompt": "x", "chosen": "a"})
    client = api_client_for(researcher)
    response = client.post(URL, {"file": jsonl_upload(rows)}, format="multipart")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "data.jsonl was rejected (2 errors); nothing was written."
    assert body["errors"] == [
        {
            "file": "data.jsonl",
            "line": 2,
            "unit": "line",
            "field": "chosen",
            "reason": "must be a non-empty string",
        },
        {
            "file": "data.jsonl",
            "line": 4,
            "unit": "line",
            "field": "rejected",
            "reason": "required field is missing",
        },
    ]
    assert body["more_errors"] == 0
    assert (Prompt.objects.count(), Comparison.objects.count()) == (0, 0)
    listed = client.get(URL).json()["results"]
    assert [(b["id"], b["status"]) for b in listed] == [(body["batch"], "failed")]
    assert listed[0]["errors"][0]["line"] == 2


def test_same_file_again_answers_200_with_the_earlier_batch(
    project, researcher, api_client_for
):
    client = api_client_for(researcher)
    first = client.post(URL, {"file": jsonl_upload(pairs("a"))}, format="multipart")
    again = client.post(
        URL, {"file": jsonl_upload(pairs("a"), "copy.jsonl")}, format="multipart"
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["already_imported"] is True
    assert "nothing changed" in again.json()["summary"]
    assert ImportBatch.objects.count() == 1


def test_upload_options_and_parquet_files(project, researcher, api_client_for):
    rows = [
        {
            "prompt": f"q{i}",
            "responses": [{"model": f"m{k}", "text": f"a{i}{k}"} for k in range(4)],
        }
        for i in range(2)
    ]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    upload = SimpleUploadedFile("rows.parquet", buffer.getvalue())
    response = api_client_for(researcher).post(
        URL,
        {"file": upload, "split": "heldout", "pairs_per_prompt": 2, "seed": 1},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["counts"]["comparisons_created"] == 4
    assert response.json()["counts"]["file_type"] == "parquet"
    assert set(Prompt.objects.values_list("split", flat=True)) == {"heldout"}


def test_bad_options_are_400_with_the_field(project, researcher, api_client_for):
    client = api_client_for(researcher)
    response = client.post(
        URL, {"file": jsonl_upload(pairs("a")), "format": "yaml"}, format="multipart"
    )
    assert response.status_code == 400
    assert "Unknown format 'yaml'" in response.json()["format"][0]
    response = client.post(URL, {"split": "train"}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (None, 401),
        ("outsider", 404),
        ("annotator", 403),
        ("researcher", 200),
        ("project_admin", 200),
    ],
)
def test_list_and_detail_per_role(
    request, project, researcher, api_client_for, who, expected
):
    created = api_client_for(researcher).post(
        URL, {"file": jsonl_upload(pairs("x"))}, format="multipart"
    )
    batch_id = created.json()["id"]
    user = request.getfixturevalue(who) if who else None
    client = api_client_for(user)
    assert client.get(URL).status_code == expected
    detail = client.get(f"{URL}{batch_id}/")
    assert detail.status_code == expected
    if expected == 200:
        assert detail.json()["file_name"] == "data.jsonl"
        assert client.get(URL).json()["count"] == 1


def test_batch_of_another_project_is_not_found(
    project, researcher, make_user, api_client_for
):
    other = project_create(slug="other", name="Other")
    make_user("res2", project=other, role=Role.RESEARCHER)
    created = api_client_for(researcher).post(
        URL, {"file": jsonl_upload(pairs("x"))}, format="multipart"
    )
    membership_set(project=other, user=researcher, role=Role.RESEARCHER)
    response = api_client_for(researcher).get(
        f"/api/v1/projects/other/imports/{created.json()['id']}/"
    )
    assert response.status_code == 404
    assert "No import batch" in response.json()["detail"]


def test_list_filters_by_status(project, researcher, api_client_for):
    client = api_client_for(researcher)
    client.post(URL, {"file": jsonl_upload(pairs("ok"))}, format="multipart")
    client.post(URL, {"file": jsonl_upload([{"prompt": ""}])}, format="multipart")
    failed = client.get(URL, {"status": "failed"}).json()
    assert [b["status"] for b in failed["results"]] == ["failed"]
    assert failed["results"][0]["summary"] == "Rejected: 1 error; nothing was written."
