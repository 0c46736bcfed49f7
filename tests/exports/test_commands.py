"""manage.py export_preferences: writes the folder and records a snapshot."""

import pytest
from django.core.management import CommandError, call_command

from exports.models import DatasetSnapshot


def test_export_preferences_writes_snapshot_and_records_it(
    labelled_project, tmp_path, capsys
):
    out = tmp_path / "out"
    call_command(
        "export_preferences",
        "prefs",
        "--out",
        str(out),
        "--format",
        "unpaired",
        "--policy",
        "dawid_skene",
        "--heldout-fraction",
        "0",
        "--seed",
        "5",
    )
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.format == "unpaired"
    assert snapshot.policy["policy"] == "dawid_skene"
    assert snapshot.policy["seed"] == 5
    assert snapshot.filters == {"include_prior": False, "min_votes": 1}
    assert (out / "dataset_dict.json").is_file()
    assert snapshot.content_sha256 in capsys.readouterr().out


def test_unknown_project_is_a_command_error(db, tmp_path):
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("export_preferences", "nope", "--out", str(tmp_path / "x"))


def test_bad_fraction_is_a_command_error(labelled_project, tmp_path):
    with pytest.raises(CommandError, match="heldout_fraction must be in"):
        call_command(
            "export_preferences",
            "prefs",
            "--out",
            str(tmp_path / "x"),
            "--heldout-fraction",
            "1",
        )
    assert not (tmp_path / "x").exists()


def test_missing_tokenizer_is_a_command_error_and_makes_no_snapshot(
    labelled_project, tmp_path
):
    from exports.models import DatasetSnapshot

    with pytest.raises(CommandError, match="No tokenizer.json at"):
        call_command(
            "export_preferences", "prefs", "--out", str(tmp_path / "x"),
            "--tokenizer", str(tmp_path / "none"), "--max-tokens", "10",
        )  # fmt: skip
    assert not DatasetSnapshot.objects.exists()
    assert not (tmp_path / "x").exists()


def test_out_must_be_a_new_or_empty_folder_not_a_file(labelled_project, tmp_path):
    file = tmp_path / "data.jsonl"
    file.write_text("mine")
    with pytest.raises(CommandError, match="is a file; choose a new folder"):
        call_command("export_preferences", "prefs", "--out", str(file))
    assert file.read_text() == "mine"


def test_out_under_a_file_is_refused_before_any_snapshot(labelled_project, tmp_path):
    from exports.models import DatasetSnapshot

    (tmp_path / "data.jsonl").write_text("mine")
    with pytest.raises(CommandError, match="cannot be made: .*data.jsonl is a file"):
        call_command(
            "export_preferences", "prefs", "--out", str(tmp_path / "data.jsonl" / "x")
        )
    assert not DatasetSnapshot.objects.exists()


def test_option_errors_name_the_option(labelled_project, tmp_path):
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "export_preferences", "prefs", "--out", str(tmp_path / "x"),
            "--min-votes", "0", "--max-tokens", "5",
        )  # fmt: skip
    message = str(excinfo.value)
    assert message.startswith("--min-votes: min_votes must be at least 1")
    assert "--max-tokens: max_tokens needs tokenizer_path" in message


def test_clean_stale_with_out_is_refused_rather_than_exporting_nothing(
    labelled_project, tmp_path
):
    with pytest.raises(CommandError, match="run it without --out"):
        call_command(
            "export_preferences", "prefs", "--clean-stale", "--out", str(tmp_path / "x")
        )


def test_user_option_records_the_creator(labelled_project, make_user, tmp_path):
    from annotation.models import Role

    make_user("rita", project=labelled_project, role=Role.RESEARCHER)
    call_command(
        "export_preferences", "prefs", "--out", str(tmp_path / "o"), "--user", "rita"
    )
    assert DatasetSnapshot.objects.get().created_by.username == "rita"


def test_user_must_exist_and_be_a_researcher(labelled_project, make_user, tmp_path):
    from annotation.models import Role

    make_user("annie", project=labelled_project, role=Role.ANNOTATOR)
    with pytest.raises(CommandError, match="No active user 'ghost'"):
        call_command(
            "export_preferences",
            "prefs",
            "--out",
            str(tmp_path / "a"),
            "--user",
            "ghost",
        )
    with pytest.raises(CommandError, match="not a researcher or admin"):
        call_command(
            "export_preferences",
            "prefs",
            "--out",
            str(tmp_path / "b"),
            "--user",
            "annie",
        )
    assert not DatasetSnapshot.objects.exists()


def test_files_option_and_clean_stale(labelled_project, tmp_path, capsys):
    from datetime import timedelta

    from django.utils import timezone

    from exports.models import SnapshotStatus

    call_command(
        "export_preferences",
        "prefs",
        "--out",
        str(tmp_path / "p"),
        "--files",
        "parquet",
    )
    assert not (tmp_path / "p" / "jsonl").exists()
    stale = DatasetSnapshot.objects.create(
        project=labelled_project,
        status=SnapshotStatus.RUNNING,
        worker="elsewhere:1:1",
        started_at=timezone.now() - timedelta(days=2),
        output_dir=str(tmp_path / "s"),
    )
    call_command("export_preferences", "prefs", "--clean-stale")
    stale.refresh_from_db()
    assert stale.status == SnapshotStatus.FAILED
    assert f"[{stale.pk}]" in capsys.readouterr().out


def test_dawid_skene_that_does_not_converge_is_a_command_error(
    labelled_project, tmp_path, monkeypatch
):
    from exports import aggregation

    monkeypatch.setattr(aggregation, "DAWID_SKENE_ITERATIONS", 1)
    with pytest.raises(CommandError, match="did not converge on these votes"):
        call_command(
            "export_preferences", "prefs", "--out", str(tmp_path / "x"),
            "--policy", "dawid_skene",
        )  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_a_file_that_is_no_tokenizer_is_an_option_error_and_makes_no_snapshot(
    labelled_project, tmp_path
):
    from exports.models import DatasetSnapshot

    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(
        CommandError, match=r"^--tokenizer-path: .* is not a tokenizers file"
    ):
        call_command(
            "export_preferences", "prefs", "--out", str(tmp_path / "x"),
            "--tokenizer", str(tmp_path), "--max-tokens", "10",
        )  # fmt: skip
    assert not DatasetSnapshot.objects.exists()
    assert not (tmp_path / "x").exists()


def test_out_inside_another_snapshot_folder_is_refused(labelled_project, tmp_path):
    from exports.models import DatasetSnapshot

    call_command("export_preferences", "prefs", "--out", str(tmp_path / "v1"))
    before = sorted(p for p in (tmp_path / "v1").rglob("*"))
    with pytest.raises(CommandError, match=r"lies inside snapshot folder .*v1"):
        call_command(
            "export_preferences", "prefs", "--out", str(tmp_path / "v1" / "train" / "x")
        )
    assert sorted(p for p in (tmp_path / "v1").rglob("*")) == before
    assert DatasetSnapshot.objects.count() == 1
