"""manage.py import_data: output, rejection as CommandError, options."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotation.models import Comparison, ImportBatch, Prompt

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("import_data", *map(str, args), stdout=out)
    return out.getvalue()


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [
    {
        "prompt": f"Q{i}",
        "responses": [{"model": f"m{k}", "text": f"a{i}{k}"} for k in range(4)],
    }
    for i in range(3)
]


def test_import_prints_counts_then_says_a_repeat_changed_nothing(project, tmp_path):
    path = write_rows(tmp_path / "data.jsonl", ROWS)
    out = run("demo", path)
    batch = ImportBatch.objects.get()
    assert out.startswith(f"Imported data.jsonl as batch #{batch.pk} (prompt_responses")
    assert "created 3 prompts, 12 responses, 18 comparisons, 0 prior labels" in out
    again = run("demo", path)
    assert f"already imported into demo as batch #{batch.pk}" in again
    assert "nothing changed" in again
    assert Comparison.objects.count() == 18


def test_options_reach_the_import(project, tmp_path):
    path = write_rows(tmp_path / "data.jsonl", ROWS)
    out = run("demo", path, "--split", "heldout", "--pairs-per-prompt", 2, "--seed", 5)
    assert "6 comparisons" in out
    assert set(Prompt.objects.values_list("split", flat=True)) == {"heldout"}


def test_rejected_file_is_a_command_error_listing_lines(project, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": ""}\n{"prompt": "ok"}\n{"messages": "x"}\n' * 2)
    with pytest.raises(CommandError) as caught:
        run("demo", path, "--max-errors", 2)
    message = str(caught.value)
    assert "bad.jsonl was rejected (4 errors); nothing was written." in message
    assert "bad.jsonl, line 1, field prompt: must be a non-empty string" in message
    assert "bad.jsonl, line 3, field messages: must be a non-empty list" in message
    assert "... and 2 more" in message
    assert Prompt.objects.count() == 0


def test_unknown_project_and_bad_options_are_explained(project, tmp_path):
    path = write_rows(tmp_path / "data.jsonl", ROWS)
    with pytest.raises(CommandError, match="No project with slug 'nope'.*demo"):
        run("nope", path)
    with pytest.raises(CommandError, match="--pairs-per-prompt must be at least 1"):
        run("demo", path, "--pairs-per-prompt", 0)
    with pytest.raises(CommandError, match="invalid choice"):
        run("demo", path, "--format", "yaml")
