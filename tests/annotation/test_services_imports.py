"""import_file: every format into the database, rejection, duplicates, re-import."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.importers import readers, records
from annotation.models import (
    Choice,
    Comparison,
    ImportBatch,
    Judgment,
    Prompt,
    Response,
    Split,
)
from annotation.services import imports
from annotation.services.imports import ImportRejected, RowError, import_file

pytestmark = pytest.mark.django_db

HH = "\n\nHuman: {q}\n\nAssistant: {a}"


def write_jsonl(path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def data_counts() -> dict[str, int]:
    return {
        "prompts": Prompt.objects.count(),
        "responses": Response.objects.count(),
        "comparisons": Comparison.objects.count(),
        "judgments": Judgment.objects.count(),
    }


EMPTY = {"prompts": 0, "responses": 0, "comparisons": 0, "judgments": 0}


def responses_row(i: int, n: int = 3) -> dict:
    return {
        "prompt": f"Question {i}?",
        "id": f"q{i}",
        "responses": [{"model": f"m{k}", "text": f"answer {i}.{k}"} for k in range(n)],
    }


def test_prompts_import_stores_messages_ids_metadata_and_split(
    project, researcher, tmp_path
):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "Hi", "id": "a", "metadata": {"topic": "greeting"}},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello"},
                ],
                "source": "web",
            },
        ],
    )
    batch = import_file(project=project, path=path, split="heldout", user=researcher)
    assert batch.status == ImportBatch.Status.SUCCEEDED
    assert batch.already_imported is False
    assert (batch.format, batch.split, batch.created_by) == (
        "prompts",
        "heldout",
        researcher,
    )
    assert batch.counts["rows"] == 2 and batch.counts["prompts_created"] == 2
    first, second = Prompt.objects.order_by("id")
    assert first.messages == [{"role": "user", "content": "Hi"}]
    assert (first.external_id, first.metadata) == ("a", {"topic": "greeting"})
    assert second.metadata == {"source": "web"}
    assert {p.split for p in (first, second)} == {Split.HELDOUT}
    assert {p.import_batch_id for p in (first, second)} == {batch.pk}


def test_prompt_responses_make_all_pairs_canonically(project, tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [responses_row(0, 4), responses_row(1, 2)])
    batch = import_file(project=project, path=path)
    assert batch.format == "prompt_responses"
    assert batch.counts["responses_created"] == 6
    assert batch.counts["comparisons_created"] == 6 + 1
    for comparison in Comparison.objects.all():
        assert comparison.response_a_id < comparison.response_b_id
        assert comparison.response_a.prompt_id == comparison.prompt_id
        assert comparison.response_b.prompt_id == comparison.prompt_id
        assert comparison.origin == Comparison.Origin.IMPORT
        assert comparison.import_batch_id == batch.pk
        assert 0 <= comparison.random_key < 1
        assert comparison.judgment_count == 0
    response = Response.objects.get(text="answer 0.2")
    assert response.model_name == "m2"
    assert Judgment.objects.count() == 0


def test_pairs_per_prompt_samples_deterministically_from_the_seed(
    project, make_user, tmp_path
):
    from annotation.services.projects import project_create

    rows = [responses_row(i, 5) for i in range(6)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    picked = []
    for slug, seed in (("s1", 3), ("s2", 3), ("s3", 4)):
        other = project_create(slug=slug, name=slug)
        batch = import_file(project=other, path=path, pairs_per_prompt=2, seed=seed)
        assert batch.counts["comparisons_created"] == 12
        picked.append(
            sorted(
                (c.response_a.text, c.response_b.text)
                for c in Comparison.objects.filter(project=other)
            )
        )
    assert picked[0] == picked[1]
    assert picked[0] != picked[2]


def test_trl_standard_pair_gets_a_prior_label_on_the_chosen_side(project, tmp_path):
    first = write_jsonl(
        tmp_path / "1.jsonl", [{"prompt": "Q?", "chosen": "B", "rejected": "A"}]
    )
    second = write_jsonl(
        tmp_path / "2.jsonl", [{"prompt": "Q?", "chosen": "C", "rejected": "B"}]
    )
    batch = import_file(project=project, path=first)
    assert batch.format == "trl_standard"
    assert batch.counts["prior_labels_created"] == 1
    batch2 = import_file(project=project, path=second)
    assert batch2.counts["prompts_duplicate"] == 1
    assert batch2.counts["responses_duplicate"] == 1
    for judgment in Judgment.objects.select_related(
        "comparison__response_a", "comparison__response_b"
    ):
        assert judgment.origin == Judgment.Origin.PRIOR
        assert judgment.annotator is None
        chosen = (
            judgment.comparison.response_a
            if judgment.choice == Choice.FIRST
            else judgment.comparison.response_b
        )
        rejected = (
            {judgment.comparison.response_a, judgment.comparison.response_b} - {chosen}
        ).pop()
        assert (chosen.text, rejected.text) in {("B", "A"), ("C", "B")}
        assert judgment.comparison.judgment_count == 0
    # "B" existed before "C", so the chosen "C" is the canonical second response
    assert Judgment.objects.get(import_batch=batch2).choice == Choice.SECOND


def test_trl_conversational_implicit_and_hh_rlhf_import(project, tmp_path):
    conversational = {
        "prompt": [{"role": "user", "content": "Capital of Spain?"}],
        "chosen": [{"role": "assistant", "content": "Madrid"}],
        "rejected": [{"role": "assistant", "content": "Seville"}],
    }
    implicit = {
        "chosen": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        "rejected": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "5"},
        ],
    }
    hh = {
        "chosen": HH.format(q="Hi", a="Hello! How can I help?"),
        "rejected": HH.format(q="Hi", a="What."),
    }
    for name, row, expected in (
        ("c", conversational, "trl_conversational"),
        ("i", implicit, "trl_implicit"),
        ("h", hh, "hh_rlhf"),
    ):
        batch = import_file(project=project, path=write_jsonl(tmp_path / name, [row]))
        assert batch.format == expected
        judgment = Judgment.objects.get(import_batch=batch)
        comparison = judgment.comparison
        chosen = (
            comparison.response_a
            if judgment.choice == Choice.FIRST
            else comparison.response_b
        )
        assert chosen.text in {"Madrid", "4", "Hello! How can I help?"}
    assert Prompt.objects.get(messages=[{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"prompt": "ok"}', '{"prompt": ""}'],
            RowError("bad.jsonl", 2, "prompt", "must be a non-empty string"),
        ),
        (
            [
                json.dumps(responses_row(0)),
                '{"prompt": "x", "responses": [{"model": "m"}]}',
            ],
            RowError("bad.jsonl", 2, "responses[0].text", "must be a non-empty string"),
        ),
        (
            [
                '{"prompt": "a", "chosen": "b", "rejected": "c"}',
                "",
                '{"prompt": "a", "chosen": "b"}',
            ],
            RowError(
                "bad.jsonl",
                3,
                "rejected",
                records.MISSING,
            ),
        ),
        (
            [json.dumps({"chosen": HH.format(q="a", a="b"), "rejected": "plain"})],
            RowError("bad.jsonl", 1, "rejected", records.HH_NOT_TRANSCRIPT),
        ),
        (
            ['{"prompt": "a"}', "{not json"],
            RowError(
                "bad.jsonl",
                2,
                "",
                "is not valid JSON: Expecting property name enclosed in double quotes",
            ),
        ),
    ],
)
def test_bad_row_rejects_the_whole_file_and_names_line_and_field(
    project, tmp_path, lines, expected
):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path)
    assert caught.value.errors == [expected]
    assert str(expected) in str(caught.value)
    assert data_counts() == EMPTY
    failed = ImportBatch.objects.get()
    assert failed.status == ImportBatch.Status.FAILED
    assert failed.errors == [expected.as_dict()]
    assert caught.value.batch == failed


def test_error_after_the_first_written_chunk_still_leaves_nothing(project, tmp_path):
    rows = [responses_row(i, 2) for i in range(readers.BATCH_ROWS + 50)]
    rows.append({"prompt": "last", "responses": [{"model": "m", "text": 5}]})
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path)
    assert [(e.line, e.field) for e in caught.value.errors] == [
        (len(rows), "responses[0].text")
    ]
    assert data_counts() == EMPTY
    assert ImportBatch.objects.get().counts == {"rows": len(rows), "errors": 1}


@pytest.mark.django_db(transaction=True)
def test_rejected_file_is_rolled_back_in_a_real_transaction(project, tmp_path):
    rows = [responses_row(i, 2) for i in range(readers.BATCH_ROWS + 10)]
    rows.append({"prompt": ""})
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    with pytest.raises(ImportRejected):
        import_file(project=project, path=path)
    assert data_counts() == EMPTY
    assert ImportBatch.objects.get().status == ImportBatch.Status.FAILED


def test_errors_are_capped_and_the_rest_counted(project, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join('{"prompt": ""}\n' for _ in range(7)))
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, max_errors=3)
    assert [e.line for e in caught.value.errors] == [1, 2, 3]
    assert caught.value.more == 4
    assert "... and 4 more" in str(caught.value)
    assert ImportBatch.objects.get().counts["errors"] == 7


def test_reimporting_the_same_file_changes_nothing_and_says_so(project, tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [responses_row(i) for i in range(3)])
    batch = import_file(project=project, path=path)
    before = data_counts()
    again = import_file(project=project, path=path, file_name="renamed.jsonl")
    assert again.pk == batch.pk
    assert again.already_imported is True
    assert data_counts() == before
    assert ImportBatch.objects.count() == 1
    summary = imports.batch_summary(again)
    assert summary.startswith(
        f"r.jsonl was already imported into demo as batch #{batch.pk} on "
    )
    assert summary.endswith("nothing changed.")


def test_overlapping_file_skips_and_counts_duplicates(project, tmp_path):
    import_file(
        project=project,
        path=write_jsonl(tmp_path / "a.jsonl", [responses_row(0), responses_row(1)]),
    )
    row = responses_row(1)
    row["responses"].append({"model": "m9", "text": "new answer"})
    batch = import_file(
        project=project,
        path=write_jsonl(
            tmp_path / "b.jsonl", [row, responses_row(2), responses_row(2)]
        ),
    )
    assert batch.counts == {
        "rows": 3,
        "prompts_created": 1,
        "prompts_duplicate": 2,
        "responses_created": 1 + 3,
        "responses_duplicate": 3 + 3,
        "comparisons_created": 3 + 3,
        "comparisons_duplicate": 3 + 3,
        "pairs_identical_skipped": 0,
        "prior_labels_created": 0,
        "prior_labels_duplicate": 0,
        "prior_labels_conflicting": 0,
        "file_type": "jsonl",
    }
    assert Comparison.objects.count() == 3 + 6 + 3


def test_repeated_and_contradicting_prior_labels_are_counted(project, tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": "b", "rejected": "a"},
        {"prompt": "Q", "chosen": "same", "rejected": "same"},
    ]
    batch = import_file(project=project, path=write_jsonl(tmp_path / "p.jsonl", rows))
    assert batch.counts["prior_labels_created"] == 1
    assert batch.counts["prior_labels_duplicate"] == 1
    assert batch.counts["prior_labels_conflicting"] == 1
    assert batch.counts["pairs_identical_skipped"] == 1
    assert Judgment.objects.get().choice == Choice.FIRST


def test_prompt_already_in_the_other_split_is_a_row_error(project, tmp_path):
    import_file(
        project=project, path=write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q1"}])
    )
    path = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q2"}, {"prompt": "Q1"}])
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, split="heldout")
    [error] = caught.value.errors
    assert (error.line, error.field) == (2, "prompt")
    assert error.reason.startswith(
        "this prompt is already in the project's train split"
    )
    assert Prompt.objects.get().split == Split.TRAIN
    assert Prompt.objects.count() == 1


def test_limits_can_be_overridden_per_call(project, tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"messages": [{"role": "user", "content": "x" * 50}] * 3}],
    )
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, max_messages=2)
    assert caught.value.errors[0].reason == "has 3 messages; the limit is 2"
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, max_text_chars=10)
    assert caught.value.errors[0].field == "messages[0].content"
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, max_file_bytes=10)
    assert caught.value.errors[0].reason.endswith("the limit is 10 bytes")
    assert caught.value.errors[0].line is None
    assert import_file(project=project, path=path).counts["prompts_created"] == 1


def test_explicit_format_is_enforced_and_unknown_arguments_raise(project, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [responses_row(0)])
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, format="prompts")
    assert caught.value.errors[0].field == "responses"
    with pytest.raises(ValueError, match="Unknown format"):
        import_file(project=project, path=path, format="yaml")
    with pytest.raises(ValueError, match="Unknown split"):
        import_file(project=project, path=path, split="test")
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        import_file(project=project, path=path, pairs_per_prompt=0)


def test_empty_missing_and_unreadable_files_are_rejected(project, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ImportRejected, match=imports.FILE_EMPTY):
        import_file(project=project, path=empty)
    with pytest.raises(ImportRejected, match=imports.FILE_NOT_FOUND):
        import_file(project=project, path=tmp_path / "nope.jsonl")
    not_array = tmp_path / "x.json"
    not_array.write_text('"text"')
    with pytest.raises(ImportRejected, match="JSON array"):
        import_file(project=project, path=not_array)
    assert ImportBatch.objects.filter(status="failed").count() == 3
    assert data_counts() == EMPTY


def test_csv_json_array_parquet_and_datasets_files_import_alike(project, tmp_path):
    from datasets import Dataset

    rows = [responses_row(i, 2) for i in range(4)]
    (tmp_path / "a.json").write_text(json.dumps(rows[:1]))
    with (tmp_path / "b.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "id", "responses"])
        writer.writerow([rows[1]["prompt"], "q1", json.dumps(rows[1]["responses"])])
    pq.write_table(pa.Table.from_pylist(rows[2:3]), tmp_path / "c.parquet")
    Dataset.from_list(rows[3:]).save_to_disk(tmp_path / "d")
    for name, file_type in (
        ("a.json", "json"),
        ("b.csv", "csv"),
        ("c.parquet", "parquet"),
        ("d", "datasets"),
    ):
        batch = import_file(project=project, path=tmp_path / name)
        assert batch.counts["comparisons_created"] == 1, name
        assert batch.counts["file_type"] == file_type
    assert sorted(Prompt.objects.values_list("external_id", flat=True)) == [
        "q0",
        "q1",
        "q2",
        "q3",
    ]


def test_parquet_errors_name_the_row_index(project, tmp_path):
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "a"}, {"prompt": ""}]), tmp_path / "x.parquet"
    )
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=tmp_path / "x.parquet")
    assert caught.value.errors == [
        RowError("x.parquet", 1, "prompt", "must be a non-empty string", "row")
    ]
    assert "x.parquet, row 1, field prompt" in str(caught.value)


def test_twenty_thousand_rows_import_with_exact_counts(project, tmp_path):
    rows = [responses_row(i, 2) for i in range(20_000)]
    batch = import_file(project=project, path=write_jsonl(tmp_path / "big.jsonl", rows))
    assert batch.counts["prompts_created"] == 20_000
    assert batch.counts["responses_created"] == 40_000
    assert batch.counts["comparisons_created"] == 20_000
    assert data_counts() == {
        "prompts": 20_000,
        "responses": 40_000,
        "comparisons": 20_000,
        "judgments": 0,
    }


@pytest.mark.parametrize(
    "content",
    [b"this is not parquet", b"PAR1" + b"\x00" * 64 + b"PAR1"],
    ids=["junk", "magic-but-corrupt"],
)
def test_corrupt_parquet_file_is_rejected_with_its_name(project, tmp_path, content):
    path = tmp_path / "broken.parquet"
    path.write_bytes(content)
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path)
    (error,) = caught.value.errors
    assert error.file == "broken.parquet"
    assert error.reason.startswith("is not a readable Parquet file")
    assert data_counts() == EMPTY
    assert ImportBatch.objects.get().status == ImportBatch.Status.FAILED


def test_broken_datasets_directories_are_rejected_not_crashed(project, tmp_path):
    from datasets import Dataset

    bad_dict = tmp_path / "bad_dict"
    bad_dict.mkdir()
    (bad_dict / "dataset_dict.json").write_text("{not json")
    missing_data = tmp_path / "missing_data"
    Dataset.from_list([responses_row(0, 2)]).save_to_disk(missing_data)
    for arrow in missing_data.glob("*.arrow"):
        arrow.unlink()
    for path in (bad_dict, missing_data):
        with pytest.raises(ImportRejected) as caught:
            import_file(project=project, path=path)
        (error,) = caught.value.errors
        assert error.file == path.name
        assert error.reason.startswith("cannot be read as a datasets directory"), path
    assert data_counts() == EMPTY
    assert ImportBatch.objects.filter(status="failed").count() == 2


@pytest.mark.parametrize(
    "record, field, reason",
    [
        ({"prompt": "a\x00b"}, "prompt", records.HAS_NUL),
        (
            {"prompt": "q", "responses": [{"model": "m", "text": "x\x00"}]},
            "responses[0].text",
            records.HAS_NUL,
        ),
        (
            {"prompt": "q", "metadata": {"note": "\x00"}},
            "metadata.note",
            records.HAS_NUL,
        ),
        (
            {"prompt": "q", "metadata": {"score": float("nan")}},
            "metadata",
            records.NOT_FINITE,
        ),
        ({"prompt": "q", "score": float("inf")}, "score", records.NOT_FINITE),
        ({"prompt": "bad \udc80 byte"}, "prompt", records.HAS_SURROGATE),
        (
            {"prompt": "q", "responses": [{"model": "m", "text": "\ud83d"}]},
            "responses[0].text",
            records.HAS_SURROGATE,
        ),
        ({"prompt": "q", "metadata": {"\udfff": 1}}, "metadata.\\udfff", None),
        ({"prompt": "q", "metadata": {"a\x00": 1}}, "metadata.a\\u0000", "nul"),
    ],
    ids=[
        "nul-prompt", "nul-response", "nul-metadata", "nan-metadata", "inf-extra",
        "surrogate-prompt", "surrogate-response", "surrogate-metadata-key",
        "nul-metadata-key",
    ],
)  # fmt: skip
def test_values_the_database_cannot_store_are_row_errors(
    project, tmp_path, record, field, reason
):
    """NUL and NaN parse as JSON but PostgreSQL's text and jsonb refuse them; a
    JSON escape of half a UTF-16 pair (`\\udc80`) decodes to a string no database
    driver can encode."""
    reason = {None: records.HAS_SURROGATE, "nul": records.HAS_NUL}.get(reason, reason)
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path)
    assert caught.value.errors == [RowError("odd.jsonl", 2, field, reason)]
    assert data_counts() == EMPTY


@pytest.mark.parametrize(
    "record, field",
    [
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen"),
        ({"prompt": "q", "chosen": "a", "rejected": 7}, "rejected"),
        ({"prompt": "  ", "chosen": "a", "rejected": "b"}, "prompt"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "responses": []}, "responses"),
    ],
    ids=["empty-chosen", "number-rejected", "blank-prompt", "foreign-field"],
)
def test_bad_trl_standard_values_reject_the_file(project, tmp_path, record, field):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": "ok?", "chosen": "yes", "rejected": "no"}, record],
    )
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=path, format=records.TRL_STANDARD)
    assert [(e.line, e.field) for e in caught.value.errors] == [(2, field)]
    assert data_counts() == EMPTY


def test_bad_csv_and_json_array_files_reject_with_lines_and_leave_nothing(
    project, tmp_path
):
    good = responses_row(0, 2)
    with (tmp_path / "pairs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "responses"])
        writer.writerow([good["prompt"], json.dumps(good["responses"])])
        writer.writerow(["multi\nline prompt", json.dumps([{"model": "m"}])])
        writer.writerow(["third", "{broken"])
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=tmp_path / "pairs.csv")
    assert [(e.line, e.field) for e in caught.value.errors] == [
        (3, "responses[0].text"),
        (5, "responses"),
    ]
    (tmp_path / "pairs.json").write_text(
        "[\n" + json.dumps(good) + ",\n" + json.dumps({**good, "prompt": ""}) + "\n]"
    )
    with pytest.raises(ImportRejected) as caught:
        import_file(project=project, path=tmp_path / "pairs.json")
    assert [(e.line, e.field) for e in caught.value.errors] == [(3, "prompt")]
    assert data_counts() == EMPTY
    assert ImportBatch.objects.filter(status="failed").count() == 2


@pytest.mark.parametrize("limit", ["max_errors", "max_text_chars", "max_file_bytes"])
def test_limits_must_be_positive(project, tmp_path, limit):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    with pytest.raises(ValueError, match=f"{limit} must be a positive integer"):
        import_file(project=project, path=path, **{limit: 0})
    assert ImportBatch.objects.count() == 0


def test_prior_labels_from_an_earlier_import_are_found_again(project, tmp_path):
    first = [{"prompt": "Q", "chosen": "a", "rejected": "b"}]
    import_file(project=project, path=write_jsonl(tmp_path / "1.jsonl", first))
    later = [
        {"prompt": "Q", "chosen": "a", "rejected": "b", "id": "again"},
        {"prompt": "Q", "chosen": "b", "rejected": "a"},
        {"prompt": "Q", "chosen": "c", "rejected": "a"},
    ]
    batch = import_file(project=project, path=write_jsonl(tmp_path / "2.jsonl", later))
    assert batch.counts["comparisons_duplicate"] == 2
    assert batch.counts["comparisons_created"] == 1
    assert batch.counts["prior_labels_duplicate"] == 1
    assert batch.counts["prior_labels_conflicting"] == 1
    assert batch.counts["prior_labels_created"] == 1
    assert Judgment.objects.count() == 2


def test_a_batch_of_new_prompts_reads_no_responses_or_comparisons(project, tmp_path):
    """New prompts have nothing to match; per batch only the prompt lookup reads.

    Matching responses across the whole batch once made PostgreSQL imports slow
    down batch by batch (quadratic in the file); this keeps the cost per batch flat.
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rows = [responses_row(i) for i in range(2500)]  # three batches of up to 1,000
    path = write_jsonl(tmp_path / "new.jsonl", rows)
    with CaptureQueriesContext(connection) as queries:
        batch = import_file(project=project, path=path)
    assert batch.counts["comparisons_created"] == 2500 * 3
    reads = [
        q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")
    ]
    tables = ("annotation_response", "annotation_comparison", "annotation_judgment")
    assert [sql for sql in reads if any(f'FROM "{t}"' in sql for t in tables)] == []
    prompt_reads = [sql for sql in reads if 'FROM "annotation_prompt"' in sql]
    assert len(prompt_reads) == 3
