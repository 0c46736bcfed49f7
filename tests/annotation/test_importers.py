"""Record parsing, format detection, file readers and content hashes (no database)."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotation.hashing import file_sha256, prompt_hash, response_hash
from annotation.importers import readers, records
from annotation.importers.records import Limits, RecordInvalid, detect_format

LIMITS = Limits(max_text_chars=1000, max_messages=8)


def parse(record, record_format=None):
    return records.parse_record(record, record_format or detect_format(record), LIMITS)


def problems(record, record_format=None) -> list[tuple[str, str]]:
    with pytest.raises(RecordInvalid) as caught:
        parse(record, record_format)
    return caught.value.problems


HH_CHOSEN = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell a joke\n\nAssistant: Why did the chicken cross the road?"  # noqa: E501
HH_REJECTED = (
    "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell a joke\n\nAssistant: No."  # noqa: E501
)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"prompt": "Hi"}, records.PROMPTS),
        ({"messages": [{"role": "user", "content": "Hi"}]}, records.PROMPTS),
        ({"prompt": "Hi", "responses": []}, records.PROMPT_RESPONSES),
        ({"prompt": "Hi", "chosen": "a", "rejected": "b"}, records.TRL_STANDARD),
        ({"prompt": [], "chosen": [], "rejected": []}, records.TRL_CONVERSATIONAL),
        ({"chosen": [], "rejected": []}, records.TRL_IMPLICIT),
        ({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, records.HH_RLHF),
    ],
)
def test_detect_format_names_each_format_from_its_fields(record, expected):
    assert detect_format(record) == expected


def test_detect_format_rejects_records_it_cannot_place():
    with pytest.raises(RecordInvalid) as caught:
        detect_format({"question": "Hi"})
    assert caught.value.problems == [("", records.UNKNOWN_FORMAT)]
    with pytest.raises(RecordInvalid) as caught:
        detect_format({"prompt": "Hi", "chosen": "a"})
    assert caught.value.problems == [("rejected", records.CHOSEN_WITHOUT_REJECTED)]


def test_prompt_string_becomes_one_user_message_and_keeps_id_and_metadata():
    parsed = parse({"prompt": "Hi", "id": 7, "metadata": {"src": "x"}, "topic": "t"})
    assert parsed.messages == [{"role": "user", "content": "Hi"}]
    assert parsed.external_id == "7"
    assert parsed.metadata == {"src": "x", "topic": "t"}
    assert parsed.responses == []


def test_prompt_responses_keeps_model_params_and_ids():
    parsed = parse(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "responses": [
                {"model": "m1", "text": "Hello", "params": {"t": 0.7}, "id": "r1"},
                {"model": "m2", "text": "Hey"},
            ],
        }
    )
    assert [r.model_name for r in parsed.responses] == ["m1", "m2"]
    assert parsed.responses[0].params == {"t": 0.7}
    assert parsed.responses[0].external_id == "r1"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"prompt": ""}, ("prompt", records.NOT_TEXT)),
        (
            {"prompt": "x" * 1001},
            ("prompt", "text has 1001 characters; the limit is 1000"),
        ),
        ({"messages": []}, ("messages", records.NOT_MESSAGE_LIST)),
        (
            {"messages": [{"role": "user", "content": "a"}] * 9},
            ("messages", "has 9 messages; the limit is 8"),
        ),
        (
            {"messages": [{"role": "robot", "content": "a"}]},
            (
                "messages[0].role",
                "must be one of system, user, assistant (got 'robot')",
            ),
        ),
        (
            {"messages": [{"role": "user", "content": 3}]},
            ("messages[0].content", records.NOT_TEXT),
        ),
        (
            {"messages": [{"role": "user", "content": "a", "name": "n"}]},
            (
                "messages[0]",
                "unknown keys name; a message has only 'role' and 'content'",
            ),
        ),
        (
            {"messages": [{"role": "assistant", "content": "a"}]},
            ("messages", records.PROMPT_MUST_END_WITH_USER),
        ),
        ({"prompt": "a", "messages": []}, ("messages", records.PROMPT_AND_MESSAGES)),
        ({"prompt": "a", "metadata": [1]}, ("metadata", records.NOT_METADATA)),
        (
            {"prompt": "a", "id": 1, "external_id": 2},
            ("external_id", records.ID_AND_EXTERNAL_ID),
        ),
        ({"prompt": "a", "id": 1.5}, ("id", records.NOT_ID)),
        ({"prompt": "a", "responses": []}, ("responses", records.NOT_RESPONSE_LIST)),
        (
            {"prompt": "a", "responses": [{"model": "m", "text": ""}]},
            ("responses[0].text", records.NOT_TEXT),
        ),
        (
            {"prompt": "a", "responses": [{"text": "b"}]},
            ("responses[0].model", records.NOT_MODEL_NAME),
        ),
        (
            {"prompt": "a", "responses": [{"model": "m", "text": "b", "params": 1}]},
            ("responses[0].params", records.NOT_PARAMS),
        ),
        (
            {"prompt": "a", "responses": [{"model": "m", "text": "b"}] * 2},
            ("responses[1]", "repeats responses[0] (same model and text)"),
        ),
    ],
)
def test_bad_prompt_records_name_the_field_and_reason(record, expected):
    assert expected in problems(record)


def test_field_of_another_format_is_reported_not_ignored():
    found = problems(
        {"prompt": "a", "responses": [{"model": "m", "text": "b"}]}, "prompts"
    )
    assert ("responses", records.FIELD_NOT_IN_FORMAT.format(format="prompts")) in found


def test_trl_standard_gives_chosen_then_rejected():
    parsed = parse({"prompt": "Q?", "chosen": "good", "rejected": "bad"})
    assert parsed.is_preference
    assert parsed.messages == [{"role": "user", "content": "Q?"}]
    assert [r.text for r in parsed.responses] == ["good", "bad"]
    assert all(r.model_name == "" for r in parsed.responses)


def test_trl_conversational_reads_single_assistant_messages():
    parsed = parse(
        {
            "prompt": [{"role": "user", "content": "Q?"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
        }
    )
    assert [r.text for r in parsed.responses] == ["good", "bad"]


def test_trl_conversational_rejects_a_response_that_is_not_one_assistant_message():
    found = problems(
        {
            "prompt": [{"role": "user", "content": "Q?"}],
            "chosen": [
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "b"},
            ],
            "rejected": [{"role": "assistant", "content": "bad"}],
        }
    )
    assert found == [
        (
            "chosen",
            records.NOT_SINGLE_ASSISTANT.format(detail="2 message(s): assistant, user"),
        )
    ]


def test_trl_implicit_prompt_is_the_shared_prefix():
    shared = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Joke?"},
    ]
    parsed = parse(
        {
            "chosen": [*shared, {"role": "assistant", "content": "funny"}],
            "rejected": [*shared, {"role": "assistant", "content": "no"}],
        }
    )
    assert parsed.format == records.TRL_IMPLICIT
    assert parsed.messages == shared
    assert [r.text for r in parsed.responses] == ["funny", "no"]


def test_trl_implicit_without_shared_prefix_is_rejected():
    found = problems(
        {
            "chosen": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            "rejected": [
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
            ],
        }
    )
    assert found == [("chosen", records.NO_SHARED_PREFIX)]


def test_hh_rlhf_transcript_splits_into_turns_and_final_responses():
    parsed = parse({"chosen": HH_CHOSEN, "rejected": HH_REJECTED})
    assert parsed.format == records.HH_RLHF
    assert parsed.messages == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell a joke"},
    ]
    assert [r.text for r in parsed.responses] == [
        "Why did the chicken cross the road?",
        "No.",
    ]


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        ("just text", HH_REJECTED, ("chosen", records.HH_NOT_TRANSCRIPT)),
        ("\n\nHuman: hi", HH_REJECTED, ("chosen", records.HH_NO_FINAL_ASSISTANT)),
        (
            "\n\nHuman: other\n\nAssistant: x",
            HH_REJECTED,
            ("rejected", records.HH_PROMPTS_DIFFER.format(turn=1)),
        ),
        (
            HH_CHOSEN,
            HH_REJECTED.replace("No.", " "),
            ("rejected turn 4", records.NOT_TEXT),
        ),
    ],
)
def test_bad_hh_transcripts_are_rejected(chosen, rejected, expected):
    assert expected in problems({"chosen": chosen, "rejected": rejected}, "hh_rlhf")


def test_prompt_hash_is_the_same_for_a_string_and_its_message_list():
    from_string = parse({"prompt": "Hi"})
    from_messages = parse({"messages": [{"content": "Hi", "role": "user"}]})
    assert prompt_hash(from_string.messages) == prompt_hash(from_messages.messages)
    assert prompt_hash(from_string.messages) != prompt_hash(
        [{"role": "user", "content": "Hi "}]
    )


def test_response_hash_depends_on_model_and_text():
    assert response_hash("m1", "4") == response_hash("m1", "4")
    assert response_hash("m1", "4") != response_hash("m2", "4")
    assert response_hash("m1", "4") != response_hash("m1", "5")
    assert response_hash("a", "bc") != response_hash("ab", "c")


# -- readers ---------------------------------------------------------------------


def read(path, file_type=None):
    file_type = file_type or readers.detect_file_type(path)
    return list(readers.read_rows(path, file_type, max_record_bytes=1 << 20))


def test_jsonl_reader_reports_the_line_of_each_record_and_broken_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n\n{"prompt": \n[1]\n\xff\n{"prompt": "b"}\n')
    rows = read(path)
    assert [(r.position, r.error is None) for r in rows] == [
        (1, True),
        (3, False),
        (4, False),
        (5, False),
        (6, True),
    ]
    assert rows[1].error.startswith("is not valid JSON")
    assert rows[2].error == readers.NOT_OBJECT.format(kind="list")
    assert rows[3].error == readers.NOT_UTF8
    assert rows[4].record == {"prompt": "b"}


def test_json_array_reader_matches_json_load_across_chunk_boundaries(tmp_path):
    items = [
        {"prompt": "x" * (i * 37 % 900 + 1), "id": i, "metadata": {"n": 12345.5 + i}}
        for i in range(400)
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(items, indent=1))
    rows = read(path)
    assert readers.detect_file_type(path) == readers.JSON_ARRAY
    assert [r.record for r in rows] == json.loads(path.read_text())
    text = path.read_text().split("\n")
    # each record starts on the line holding its opening brace
    assert all(text[r.position - 1].strip() == "{" for r in rows)


def test_json_array_reader_reports_the_line_of_a_syntax_error(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n{"prompt": "a"},\n{"prompt": "b",\n "id": }\n]')
    rows = read(path)
    assert rows[0].record == {"prompt": "a"}
    assert rows[1].position == 4
    assert rows[1].error.startswith("is not valid JSON")


def test_json_file_that_is_not_an_array_is_unreadable(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('"hello"')
    with pytest.raises(readers.FileUnreadable, match="JSON array"):
        read(path, readers.JSON_ARRAY)


def test_csv_reader_decodes_nested_columns_and_counts_multiline_cells(tmp_path):
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "responses", "id"])
        writer.writerow(
            ["line one\nline two", json.dumps([{"model": "m", "text": "t"}]), ""]
        )
        writer.writerow(["third", "[not json", "x"])
        writer.writerow(
            [json.dumps([{"role": "user", "content": "as list"}]), "[]", "y"]
        )
    rows = read(path)
    assert rows[0].position == 2
    assert rows[0].record == {
        "prompt": "line one\nline two",
        "responses": [{"model": "m", "text": "t"}],
    }
    assert (rows[1].position, rows[1].field) == (4, "responses")
    assert rows[1].error.startswith("is not valid JSON")
    assert rows[2].record["prompt"] == [{"role": "user", "content": "as list"}]


def test_csv_row_with_wrong_cell_count_is_reported(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,id\na,1\nb,2,3\n")
    rows = read(path)
    assert rows[1].position == 3
    assert rows[1].error == readers.CSV_BAD_ROW.format(n=3, expected=2)


def test_parquet_reader_streams_rows_with_their_index(tmp_path):
    path = tmp_path / "data.parquet"
    table = pa.Table.from_pylist(
        [
            {
                "messages": [{"role": "user", "content": f"q{i}"}],
                "responses": [{"model": "m", "text": f"a{i}", "id": None}],
            }
            for i in range(2500)
        ]
    )
    pq.write_table(table, path, row_group_size=700)
    rows = read(path)
    assert readers.detect_file_type(path) == readers.PARQUET
    assert [r.position for r in rows] == list(range(2500))
    assert rows[2499].unit == "row"
    assert rows[2499].record["messages"] == [{"role": "user", "content": "q2499"}]
    parsed = parse(rows[3].record)
    assert parsed.responses[0].external_id == ""


def test_datasets_save_to_disk_directory_is_read_and_split_dicts_need_a_split(tmp_path):
    from datasets import Dataset, DatasetDict

    data = [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(5)]
    Dataset.from_list(data).save_to_disk(tmp_path / "one")
    rows = read(tmp_path / "one")
    assert [r.record for r in rows] == data
    assert rows[4].position == 4
    DatasetDict(
        {"train": Dataset.from_list(data), "test": Dataset.from_list(data)}
    ).save_to_disk(tmp_path / "two")
    with pytest.raises(readers.FileUnreadable, match="several splits"):
        read(tmp_path / "two")
    assert len(read(tmp_path / "two" / "train")) == 5


def test_directory_that_is_not_a_dataset_is_unreadable(tmp_path):
    with pytest.raises(readers.FileUnreadable, match="save_to_disk"):
        read(tmp_path)


def test_file_type_is_sniffed_from_content_when_the_suffix_says_nothing(tmp_path):
    jsonl = tmp_path / "upload"
    jsonl.write_text('{"prompt": "a"}\n')
    array = tmp_path / "upload2"
    array.write_text('  [{"prompt": "a"}]')
    table = tmp_path / "upload3"
    table.write_text("prompt,id\na,1\n")
    assert readers.detect_file_type(jsonl) == readers.JSONL
    assert readers.detect_file_type(array) == readers.JSON_ARRAY
    assert readers.detect_file_type(table) == readers.CSV


def test_directory_hash_covers_names_and_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    before = file_sha256(tmp_path / "a")
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    assert file_sha256(tmp_path / "a") != before


def test_prompt_record_without_prompt_or_messages_says_what_to_give():
    assert problems({"id": 1}, records.PROMPTS) == [("prompt", records.PROMPT_MISSING)]
    assert problems({"chosen": "a", "rejected": "b"}, records.TRL_STANDARD) == [
        ("prompt", records.MISSING)
    ]
