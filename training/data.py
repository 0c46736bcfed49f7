"""Load a training dataset from a snapshot or a directory and fit it to a stage.

`--dataset` is a DatasetSnapshot id or a path: a `save_to_disk` directory (a
DatasetDict or one Dataset), a directory of parquet/jsonl files named by split
(`train.parquet`, `test.jsonl`, `train-00000-of-00001.parquet`), or one such file.
A snapshot folder (it has a `SHA256SUMS`) written without the `datasets` folders
(`--files parquet`) is read from its `parquet/*.parquet` files, named by split (what
its card's `configs` point at).
Columns follow TRL's dataset formats; a stage that cannot use the columns gets a
`DatasetError` naming the source, the split, the columns found and those needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

DATA_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}

SNAPSHOT_MISSING = "Dataset snapshot {id} does not exist."
SNAPSHOT_NOT_READY = (
    "Dataset snapshot {id} is {status}: only a succeeded snapshot can be trained on."
)
SNAPSHOT_NO_FILES = "Dataset snapshot {id} has no files at {path}."
PATH_MISSING = (
    "{path}: no such file or directory (--dataset takes a snapshot id or a path)."
)
PATH_UNREADABLE = "{path}: not a dataset: {reason}"
NO_DATA_FILES = (
    "{path}: found no dataset files (save_to_disk directory, or *.parquet / *.jsonl "
    "files named by split)."
)
SPLIT_MISSING = "{source}: no split {split!r}; splits found: {splits}."
COLUMNS_MISSING = (
    "{source}: split {split!r} has columns {columns}; {stage} training needs {needed}."
)
EMPTY_SPLIT = "{source}: split {split!r} has no rows."
UNPAIRED_FOR_SFT = (
    "{source}: split {split!r} is unpaired preference data (prompt, completion, "
    "label): sft training would imitate the undesirable completions too. Export "
    "the project in the sft, preference or conversational format."
)

NEEDED = {
    "sft": "'messages', 'text', 'prompt' + 'completion', or 'chosen' (SFT on chosen)",
    "reward": "'chosen' and 'rejected' (and optionally 'prompt')",
    "dpo": "'chosen' and 'rejected' (and optionally 'prompt')",
    "rl": "'prompt' (or preference/SFT columns with a 'prompt')",
}


class DatasetError(CommandError):
    """The dataset cannot be found, read, or used by this stage."""


@dataclass(frozen=True)
class StageData:
    train: Any  # datasets.Dataset
    eval: Any | None
    source: str
    snapshot: Any | None  # exports.models.DatasetSnapshot


def dataset_resolve(spec: str) -> tuple[Path, Any | None]:
    """Return (path, snapshot) for a snapshot id or a path."""
    spec = str(spec).strip()
    if spec.isdigit():
        from exports.models import DatasetSnapshot, SnapshotStatus

        snapshot = DatasetSnapshot.objects.filter(pk=int(spec)).first()
        if snapshot is None:
            raise DatasetError(SNAPSHOT_MISSING.format(id=spec))
        if snapshot.status != SnapshotStatus.SUCCEEDED:
            raise DatasetError(
                SNAPSHOT_NOT_READY.format(id=spec, status=snapshot.status)
            )
        path = Path(snapshot.output_dir)
        if not snapshot.output_dir or not path.exists():
            raise DatasetError(
                SNAPSHOT_NO_FILES.format(id=spec, path=snapshot.output_dir)
            )
        return path, snapshot
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(PATH_MISSING.format(path=path))
    return path.resolve(), None


def _split_of(file: Path) -> str:
    return file.name.split(".")[0].split("-")[0]


def _snapshot_parquet(path: Path) -> Path | None:
    """The `parquet/` folder of a snapshot folder (it always has one), or None."""
    folder = path / "parquet"
    snapshot = (path / "SHA256SUMS").is_file() and folder.is_dir()
    return folder if snapshot and any(folder.glob("*.parquet")) else None


def dataset_load(path: Path):
    """Read a dataset path into a DatasetDict."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    try:
        if path.is_dir() and (
            (path / "dataset_dict.json").exists() or (path / "state.json").exists()
        ):
            loaded = load_from_disk(str(path))
            return (
                loaded
                if isinstance(loaded, DatasetDict)
                else DatasetDict({"train": loaded})
            )
        folder = path
        if path.is_dir() and (parquet := _snapshot_parquet(path)) is not None:
            folder = parquet
        files = (
            sorted(p for p in folder.iterdir() if p.suffix in DATA_SUFFIXES)
            if folder.is_dir()
            else [path]
        )
        if not files or any(f.suffix not in DATA_SUFFIXES for f in files):
            raise DatasetError(NO_DATA_FILES.format(path=path))
        builders = {DATA_SUFFIXES[f.suffix] for f in files}
        if len(builders) > 1:
            raise DatasetError(
                PATH_UNREADABLE.format(path=path, reason="mixes parquet and json files")
            )
        if path.is_dir():
            data_files: dict[str, list[str]] = {}
            for file in files:
                data_files.setdefault(_split_of(file), []).append(str(file))
        else:
            data_files = {"train": [str(path)]}
        return load_dataset(builders.pop(), data_files=data_files)
    except DatasetError:
        raise
    except Exception as exc:  # datasets raises many types for unreadable files
        raise DatasetError(PATH_UNREADABLE.format(path=path, reason=exc)) from exc


def _prompt_from_messages(messages: list[dict]) -> list[dict]:
    """Drop the final assistant turn of a conversation: what remains is the prompt."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1]
    return messages


def _fit_sft(ds, source: str, split: str):
    columns = set(ds.column_names)
    if "messages" in columns:
        return ds.select_columns(["messages"])
    if "text" in columns:
        return ds.select_columns(["text"])
    if {"prompt", "completion", "label"} <= columns:  # KTO rows, good and bad
        raise DatasetError(UNPAIRED_FOR_SFT.format(source=source, split=split))
    if {"prompt", "completion"} <= columns:
        return ds.select_columns(["prompt", "completion"])
    if {"prompt", "chosen"} <= columns:
        return ds.select_columns(["prompt", "chosen"]).rename_column(
            "chosen", "completion"
        )
    if "chosen" in columns:
        sample = ds[0]["chosen"] if len(ds) else None
        name = "messages" if isinstance(sample, list) else "text"
        return ds.select_columns(["chosen"]).rename_column("chosen", name)
    raise _columns_error(ds, source, split, "sft")


def _fit_pairs(ds, source: str, split: str, stage: str):
    columns = set(ds.column_names)
    if not {"chosen", "rejected"} <= columns:
        raise _columns_error(ds, source, split, stage)
    keep = [c for c in ("prompt", "chosen", "rejected") if c in columns]
    if stage == "reward" and "margin" in columns:
        keep.append("margin")
    return ds.select_columns(keep)


def _fit_rl(ds, source: str, split: str):
    columns = set(ds.column_names)
    if "prompt" in columns:
        ds = ds.select_columns(["prompt"])
    elif "messages" in columns:
        ds = ds.map(
            lambda row: {"prompt": _prompt_from_messages(row["messages"])},
            remove_columns=ds.column_names,
        )
    else:
        raise _columns_error(ds, source, split, "rl")
    # Preference data repeats a prompt once per pair; RL samples its own answers.
    seen: set[str] = set()
    keep = []
    for index, prompt in enumerate(ds["prompt"]):
        key = repr(prompt)
        if key not in seen:
            seen.add(key)
            keep.append(index)
    return ds.select(keep) if len(keep) < len(ds) else ds


def _columns_error(ds, source: str, split: str, stage: str) -> DatasetError:
    return DatasetError(
        COLUMNS_MISSING.format(
            source=source,
            split=split,
            columns=", ".join(repr(c) for c in ds.column_names) or "none",
            stage=stage,
            needed=NEEDED[stage],
        )
    )


def fit_to_stage(ds, stage: str, *, source: str, split: str):
    """Select and rename columns so that the stage's TRL trainer can use `ds`."""
    if len(ds) == 0:
        raise DatasetError(EMPTY_SPLIT.format(source=source, split=split))
    if stage == "sft":
        return _fit_sft(ds, source, split)
    if stage in ("reward", "dpo"):
        return _fit_pairs(ds, source, split, stage)
    if stage == "rl":
        return _fit_rl(ds, source, split)
    raise ValueError(f"unknown stage {stage!r}")


def load_stage_data(
    spec: str, stage: str, *, train_split: str = "train", test_split: str = "test"
) -> StageData:
    """Resolve `--dataset`, read it, and fit its train (and test) split to `stage`."""
    path, snapshot = dataset_resolve(spec)
    source = f"snapshot {snapshot.pk} ({path})" if snapshot is not None else str(path)
    splits = dataset_load(path)
    if train_split not in splits:
        raise DatasetError(
            SPLIT_MISSING.format(
                source=source, split=train_split, splits=", ".join(splits) or "none"
            )
        )
    train = fit_to_stage(splits[train_split], stage, source=source, split=train_split)
    evaluation = None
    if test_split in splits and len(splits[test_split]):
        evaluation = fit_to_stage(
            splits[test_split], stage, source=source, split=test_split
        )
    return StageData(train=train, eval=evaluation, source=source, snapshot=snapshot)
