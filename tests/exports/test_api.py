"""Snapshot API over real HTTP routing: permissions, preview, queue, read, download."""

import io
import zipfile

import pytest
from django_tasks_db.models import DBTaskResult

from exports.formats import ExportConfig
from exports.models import DatasetSnapshot, SnapshotStatus
from exports.services import snapshot_export
from exports.tasks import build_snapshot


def url(slug, tail=""):
    return f"/api/v1/projects/{slug}/snapshots/{tail}"


def exported(project, out, member, api_client_for):
    """A snapshot with default settings, and a researcher's API client."""
    snapshot = snapshot_export(
        project=project, user=None, config=ExportConfig(), out_dir=out
    )
    return snapshot, api_client_for(member("r", "researcher"))


@pytest.fixture
def member(labelled_project, make_user):
    def _member(name, role):
        return make_user(name, project=labelled_project, role=role)

    return _member


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 404), ("annotator", 403), ("researcher", 200), ("admin", 200)],
)
def test_only_researchers_and_admins_list_snapshots(
    labelled_project, member, make_user, api_client_for, role, status
):
    user = member("u", role) if role else make_user("stranger")
    response = api_client_for(user).get(url("prefs"))
    assert response.status_code == status, response.content
    if status == 403:
        assert "researcher" in response.json()["detail"]


def test_anonymous_gets_401(labelled_project, api_client_for):
    assert api_client_for().get(url("prefs")).status_code == 401


def test_preview_returns_counts_and_reasons(labelled_project, member, api_client_for):
    client = api_client_for(member("r", "researcher"))
    response = client.post(
        url("prefs", "preview/"),
        {"policy": "unanimous", "heldout_fraction": 0},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["counts"] == {"train": 4}
    assert body["dropped"] == {"both_bad": 1, "not_unanimous": 7}


def test_bad_settings_are_a_400_naming_the_field(
    labelled_project, member, api_client_for
):
    client = api_client_for(member("r", "researcher"))
    response = client.post(url("prefs"), {"heldout_fraction": 1.5}, format="json")
    assert response.status_code == 400
    assert "heldout_fraction" in response.json()
    response = client.post(url("prefs"), {"policy": "median"}, format="json")
    assert response.status_code == 400
    assert "policy" in response.json()


def test_unknown_fields_are_a_400_not_a_silent_default(
    labelled_project, member, api_client_for
):
    client = api_client_for(member("r", "researcher"))
    for tail in ("", "preview/"):
        body = {"polcy": "unanimous"}
        response = client.post(url("prefs", tail), body, format="json")
        assert response.status_code == 400, response.content
        assert "polcy" in response.json()["non_field_errors"][0]
    assert not DatasetSnapshot.objects.exists()


def test_files_and_the_tokenizer_settings_are_taken_and_checked(
    labelled_project, member, api_client_for, tmp_path
):
    client = api_client_for(member("r", "researcher"))
    response = client.post(
        url("prefs"),
        {"tokenizer_path": str(tmp_path / "none"), "max_tokens": 5},
        format="json",
    )
    assert response.status_code == 400
    assert "No tokenizer.json" in response.json()["tokenizer_path"][0]
    response = client.post(url("prefs"), {"files": ["jsonl"]}, format="json")
    assert response.status_code == 400
    assert "files" in response.json()
    assert not DatasetSnapshot.objects.exists()
    response = client.post(
        url("prefs"), {"tokenizer_path": "~nosuchuser/tok"}, format="json"
    )
    assert response.status_code == 400  # no home to expand: a field error, not a 500
    assert "tokenizer_path" in response.json()
    assert not DatasetSnapshot.objects.exists()
    response = client.post(url("prefs"), {"files": ["parquet"]}, format="json")
    assert response.status_code == 202, response.content
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.policy["files"] == ["parquet"]


def test_setting_errors_name_the_format_as_it_is_written(
    labelled_project, member, api_client_for
):
    client = api_client_for(member("r", "researcher"))
    body = {"both_bad_as_negatives": True}
    response = client.post(url("prefs", "preview/"), body, format="json")
    assert response.status_code == 400
    message = response.json()["both_bad_as_negatives"][0]
    assert "(got format 'preference')" in message


def test_a_relative_tokenizer_path_is_stored_absolute(
    labelled_project, member, api_client_for, tmp_path, monkeypatch
):
    """The worker opens the tokenizer from its own working directory."""
    from tokenizers import Tokenizer, models

    (tmp_path / "tok").mkdir()
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(
        str(tmp_path / "tok" / "tokenizer.json")
    )
    monkeypatch.chdir(tmp_path)
    client = api_client_for(member("r", "researcher"))
    response = client.post(
        url("prefs"), {"tokenizer_path": "tok", "max_tokens": 64}, format="json"
    )
    assert response.status_code == 202, response.content
    policy = DatasetSnapshot.objects.get().policy
    assert policy["tokenizer_path"] == str(tmp_path / "tok" / "tokenizer.json")
    assert policy["max_tokens"] == 64


def test_a_settings_error_past_the_serializer_is_a_400(
    labelled_project, member, api_client_for, monkeypatch
):
    """The tokenizer is checked again when the snapshot row is made (it may be
    gone since the serializer looked): that is a 400 too, never a 500."""
    from exports import services
    from exports.formats import SettingsError

    def gone(**kwargs):
        raise SettingsError({"tokenizer_path": "No tokenizer.json at /gone."})

    monkeypatch.setattr(services, "_snapshot_row", gone)
    client = api_client_for(member("r", "researcher"))
    response = client.post(url("prefs"), {}, format="json")
    assert response.status_code == 400
    assert response.json() == {"tokenizer_path": ["No tokenizer.json at /gone."]}


def test_create_queues_then_worker_builds_and_zip_downloads(
    labelled_project,
    member,
    api_client_for,
    settings,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    settings.DATA_DIR = tmp_path
    client = api_client_for(member("r", "researcher"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url("prefs"), {"name": "first", "format": "unpaired"}, format="json"
        )
    assert response.status_code == 202, response.content
    pk = response.json()["id"]
    assert response.json()["status"] == "pending"
    assert DBTaskResult.objects.count() == 1
    early = client.get(url("prefs", f"{pk}/download/"))
    assert early.status_code == 409
    assert "pending" in early.json()["detail"]
    build_snapshot.call(pk)
    detail = client.get(url("prefs", f"{pk}/")).json()
    assert detail["status"] == "succeeded"
    assert detail["format"] == "unpaired"
    assert sum(detail["counts"].values()) == 22
    assert detail["hygiene"]["contradictions"]["count"] == 0
    assert detail["judgment_count"] == 33
    assert "judgment_ids" not in detail
    ids = client.get(detail["judgment_ids_url"], {"page_size": 10}).json()
    assert ids["count"] == 33 and len(ids["results"]) == 10
    assert ids["sha256"] == detail["judgment_ids_sha256"]
    rest = client.get(ids["next"]).json()["results"]
    assert rest[0] > ids["results"][-1]
    listed = client.get(url("prefs")).json()["results"][0]
    assert listed["judgment_count"] == 33 and "hygiene" not in listed
    download = client.get(url("prefs", f"{pk}/download/"))
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    names = archive.namelist()
    assert f"prefs-snapshot-{pk}/README.md" in names
    assert f"prefs-snapshot-{pk}/parquet/train.parquet" in names
    assert f"prefs-snapshot-{pk}/dataset_dict.json" in names


def test_unknown_snapshot_is_404_with_message(labelled_project, member, api_client_for):
    client = api_client_for(member("r", "researcher"))
    response = client.get(url("prefs", "999/"))
    assert response.status_code == 404
    assert "999" in response.json()["detail"]


def test_other_projects_snapshots_are_not_visible(
    labelled_project, member, api_client_for, tmp_path
):
    from tests.exports.factories import make_project

    other = make_project("other")
    snapshot = DatasetSnapshot.objects.create(
        project=other, status=SnapshotStatus.SUCCEEDED, counts={"train": 3}
    )
    client = api_client_for(member("r", "researcher"))
    assert client.get(url("prefs", f"{snapshot.pk}/")).status_code == 404
    assert client.get(url("prefs")).json()["count"] == 0
    assert DatasetSnapshot.objects.get().status == SnapshotStatus.SUCCEEDED


def test_judgment_ids_pages_cover_the_snapshot_and_match_its_sha256(
    labelled_project, member, api_client_for, tmp_path
):
    from annotation.models import Judgment
    from exports.judgment_ids import ids_sha256

    snapshot, client = exported(
        labelled_project, tmp_path / "s", member, api_client_for
    )
    pages, page = [], url("prefs", f"{snapshot.pk}/judgment-ids/?page_size=7")
    while page:
        body = client.get(page).json()
        pages += body["results"]
        page = body["next"]
    # Every judgment but those on the both-bad comparison (question 11), ascending.
    used = sorted(
        pk
        for pk, messages in Judgment.objects.values_list(
            "id", "comparison__prompt__messages"
        )
        if not messages[0]["content"].startswith("Question #11:")
    )
    assert pages == used
    assert ids_sha256(pages) == snapshot.judgment_ids_sha256


def test_dawid_skene_that_does_not_converge_is_a_400_on_the_policy(
    labelled_project, member, api_client_for, monkeypatch
):
    from exports import aggregation

    monkeypatch.setattr(aggregation, "DAWID_SKENE_ITERATIONS", 1)
    client = api_client_for(member("r", "researcher"))
    response = client.post(
        url("prefs", "preview/"), {"policy": "dawid_skene"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "did not converge" in response.json()["policy"][0]


def test_counts_list_train_before_test_and_drops_by_name_on_every_database(
    labelled_project, member, api_client_for
):
    """jsonb sorts keys by length (`test` first); reads restore the written order."""
    snapshot = DatasetSnapshot.objects.create(
        project=labelled_project,
        status=SnapshotStatus.SUCCEEDED,
        counts={"train": 5, "test": 2},
        dropped={"tie": 1, "both_bad": 2, "not_unanimous": 3},
    )
    stored = DatasetSnapshot.objects.get(pk=snapshot.pk)
    assert list(stored.counts) == ["train", "test"]
    assert list(stored.dropped) == ["both_bad", "not_unanimous", "tie"]
    client = api_client_for(member("r", "researcher"))
    for body in (
        client.get(url("prefs", f"{snapshot.pk}/")).json(),
        client.get(url("prefs")).json()["results"][0],
    ):
        assert list(body["counts"]) == ["train", "test"]
        assert list(body["dropped"]) == ["both_bad", "not_unanimous", "tie"]
    deferred = DatasetSnapshot.objects.only("pk").get(pk=snapshot.pk)
    assert list(deferred.counts) == ["train", "test"]


def test_judgment_ids_refuse_a_page_size_they_cannot_use(
    labelled_project, member, api_client_for
):
    snapshot = DatasetSnapshot.objects.create(
        project=labelled_project, status=SnapshotStatus.SUCCEEDED
    )
    client = api_client_for(member("r", "researcher"))
    for value in ("0", "-1", "abc"):
        response = client.get(
            url("prefs", f"{snapshot.pk}/judgment-ids/"), {"page_size": value}
        )
        assert response.status_code == 400, response.content
        assert "page_size must be a positive integer" in response.json()["page_size"][0]


def test_download_checks_every_file_against_sha256sums(
    labelled_project, member, api_client_for, tmp_path
):
    """A download is the snapshot its checksum names: a file changed, or a folder
    written inside it (an --out nested in a snapshot), is a 409, not a zip."""
    snapshot, client = exported(
        labelled_project, tmp_path / "s", member, api_client_for
    )
    download = url("prefs", f"{snapshot.pk}/download/")
    assert client.get(download).status_code == 200
    (tmp_path / "s" / "train" / "extra").mkdir()
    (tmp_path / "s" / "train" / "extra" / "notes.txt").write_text("mine")
    response = client.get(download)
    assert response.status_code == 409
    assert "not in SHA256SUMS: train/extra/notes.txt" in response.json()["detail"]
    (tmp_path / "s" / "train" / "extra" / "notes.txt").unlink()
    with open(tmp_path / "s" / "parquet" / "train.parquet", "ab") as file:
        file.write(b"x")
    response = client.get(download)
    assert response.status_code == 409
    assert "parquet/train.parquet differs" in response.json()["detail"]
    (tmp_path / "s" / "SHA256SUMS").unlink()
    response = client.get(download)
    assert response.status_code == 409
    assert "missing: SHA256SUMS" in response.json()["detail"]
