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
