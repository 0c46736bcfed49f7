"""--dataset resolution: snapshot ids and directories, column checks per stage."""

import json

import pytest

from annotation.services.projects import project_create
from exports.formats import ExportConfig
from exports.models import DatasetSnapshot, SnapshotStatus
from exports.services import snapshot_export
from tests.exports import conftest as export_fixtures
from tests.training.conftest import preference_rows, write_preference_dataset
from training import data
from training.data import DatasetError, load_stage_data

labelled_project = export_fixtures.labelled_project  # real judgments, exported


@pytest.fixture
def snapshot_project(db):
    return project_create(slug="data", name="Data")


def test_snapshot_id_loads_its_files(snapshot_project, tmp_path):
    path = write_preference_dataset(tmp_path / "snap")
    snapshot = DatasetSnapshot.objects.create(
        project=snapshot_project, status=SnapshotStatus.SUCCEEDED, output_dir=str(path)
    )
    loaded = load_stage_data(str(snapshot.pk), "dpo")
    assert loaded.snapshot == snapshot
    assert len(loaded.train) == 16
    assert len(loaded.eval) == 4
    assert loaded.train.column_names == ["prompt", "chosen", "rejected"]


def test_unknown_snapshot_id(db):
    with pytest.raises(DatasetError, match="snapshot 999 does not exist"):
        load_stage_data("999", "dpo")


def test_unfinished_snapshot_is_refused(snapshot_project, tmp_path):
    snapshot = DatasetSnapshot.objects.create(
        project=snapshot_project, status=SnapshotStatus.RUNNING
    )
    with pytest.raises(DatasetError) as excinfo:
        load_stage_data(str(snapshot.pk), "dpo")
    assert str(excinfo.value) == data.SNAPSHOT_NOT_READY.format(
        id=snapshot.pk, status="running"
    )


def test_missing_path_says_what_dataset_accepts(tmp_path):
    with pytest.raises(DatasetError, match="snapshot id or a path"):
        load_stage_data(str(tmp_path / "nope"), "dpo")


def test_parquet_files_named_by_split(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "parquet"
    folder.mkdir()
    rows = preference_rows()
    Dataset.from_list(rows).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    Dataset.from_list(rows[:2]).to_parquet(str(folder / "test.parquet"))
    loaded = load_stage_data(str(folder), "reward")
    assert (len(loaded.train), len(loaded.eval)) == (len(rows), 2)


def test_single_jsonl_file_is_the_train_split(tmp_path):
    file = tmp_path / "pairs.jsonl"
    file.write_text(
        "\n".join(
            json.dumps({"prompt": f"Q{i}?", "chosen": "yes", "rejected": "no"})
            for i in range(3)
        )
    )
    loaded = load_stage_data(str(file), "dpo")
    assert len(loaded.train) == 3
    assert loaded.eval is None


def test_columns_that_do_not_fit_the_stage_are_named(tmp_path):
    file = tmp_path / "sft.jsonl"
    file.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(DatasetError) as excinfo:
        load_stage_data(str(file), "dpo")
    message = str(excinfo.value)
    assert str(file) in message
    assert "'train'" in message and "'text'" in message
    assert "'chosen' and 'rejected'" in message


def test_missing_split_lists_the_splits(tmp_path):
    path = write_preference_dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match="no split 'validation'; splits found"):
        load_stage_data(str(path), "dpo", train_split="validation")


def test_sft_trains_on_chosen_responses_of_preference_data(preference_dir):
    loaded = load_stage_data(str(preference_dir), "sft")
    assert loaded.train.column_names == ["prompt", "completion"]
    assert loaded.train[0]["completion"] == preference_rows()[0]["chosen"]


def test_rl_keeps_each_prompt_once(preference_dir):
    loaded = load_stage_data(str(preference_dir), "rl")
    assert loaded.train.column_names == ["prompt"]
    assert len(loaded.train) == len(preference_rows())  # 2 repeats collapse to 1


def test_rl_takes_prompts_from_conversations(tmp_path):
    from datasets import Dataset

    rows = [
        {
            "messages": [
                {"role": "user", "content": "Hi?"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
    ]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "sft"))
    loaded = load_stage_data(str(tmp_path / "sft"), "rl")
    assert loaded.train[0]["prompt"] == [{"role": "user", "content": "Hi?"}]


def test_empty_split_is_refused(tmp_path):
    file = tmp_path / "empty.jsonl"
    file.write_text("")
    with pytest.raises(DatasetError):
        load_stage_data(str(file), "dpo")


@pytest.mark.parametrize("files", [("parquet",), ("parquet", "jsonl")])
def test_snapshot_without_datasets_folders_is_read_from_its_parquet(
    labelled_project, tmp_path, files
):
    """`--files parquet` leaves no `dataset_dict.json`: the rows come from `parquet/`
    (not from `judgment_ids.parquet` and `hygiene.json` beside it)."""
    import pyarrow.parquet as pq

    snapshot = snapshot_export(
        project=labelled_project,
        user=None,
        config=ExportConfig(files=files),
        out_dir=tmp_path / "snap",
    )
    loaded = load_stage_data(str(snapshot.pk), "dpo")
    for split, got in (("train", loaded.train), ("test", loaded.eval)):
        written = pq.read_table(tmp_path / "snap" / "parquet" / f"{split}.parquet")
        assert got.to_list() == written.select(got.column_names).to_pylist()
    assert loaded.train.column_names == ["prompt", "chosen", "rejected"]


def test_unpaired_parquet_snapshot_names_the_columns_dpo_needs(
    labelled_project, tmp_path
):
    snapshot = snapshot_export(
        project=labelled_project,
        user=None,
        config=ExportConfig(format="unpaired", files=("parquet",)),
        out_dir=tmp_path / "snap",
    )
    with pytest.raises(DatasetError, match="dpo training needs 'chosen' and"):
        load_stage_data(str(snapshot.pk), "dpo")


def test_unpaired_snapshot_is_refused_for_sft_as_the_web_refuses_it(
    labelled_project, tmp_path
):
    """Its rows hold the undesirable completions too (`label` false)."""
    snapshot = snapshot_export(
        project=labelled_project,
        user=None,
        config=ExportConfig(format="unpaired"),
        out_dir=tmp_path / "snap",
    )
    with pytest.raises(DatasetError, match="is unpaired preference data"):
        load_stage_data(str(snapshot.pk), "sft")
