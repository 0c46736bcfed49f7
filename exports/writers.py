"""Write a snapshot's files: Parquet, JSONL and the `datasets` folder, batch by batch.

Byte-identical output for identical input: rows arrive in a fixed order and are
regrouped into row groups of exactly `ROW_GROUP_ROWS` rows (the last one shorter),
whatever the batches; Parquet is written with fixed settings (zstd level 3, no
timestamps), JSON with fixed key order, and the `_fingerprint` of each split's
`state.json` is a digest of that split's Arrow data instead of a random value.

The `datasets` folder (what `datasets.load_from_disk` reads) is written directly: one
Arrow IPC stream per split, `data-00000-of-00001.arrow`, whose schema carries the
`huggingface` features metadata that `datasets.arrow_writer.ArrowWriter` writes, plus
the `state.json`, `dataset_info.json` and `dataset_dict.json` that `save_to_disk`
writes. So the rows are encoded once, not read back from Parquet into a cache and
copied again; a golden test compares the folder with what `save_to_disk` makes.
`datasets` is imported inside the functions that need it (worker process only).

Every large file is hashed while it is written (`HashingFile`), so `SHA256SUMS`
needs no second read of the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

ROW_GROUP_ROWS = 10_000
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_size": 1 << 20,
    "version": "2.6",
}
CHECKSUMS = "SHA256SUMS"
ARROW_SHARD = "data-00000-of-00001.arrow"


class HashingFile:
    """A binary file open for writing that keeps the sha256 of what was written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._sha.update(data)
        self.size += len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        return self._file.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        self._file.close()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class Checksums:
    """sha256 of every file written so far, by path relative to the snapshot root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digests: dict[str, str] = {}

    def add(self, path: Path, digest: str) -> None:
        self.digests[path.relative_to(self.root).as_posix()] = digest

    def write_bytes(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.add(path, hashlib.sha256(data).hexdigest())

    def write_text(self, path: Path, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path: Path, data) -> None:
        self.write_text(path, json_text(data))


def json_text(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def datasets_schema(schema):
    """`schema` with the `huggingface` features metadata `ArrowWriter` writes."""
    import datasets
    import pyarrow as pa
    from datasets.utils.py_utils import asdict

    features = datasets.Features.from_arrow_schema(schema)
    info = asdict(datasets.DatasetInfo(features=features))
    metadata = {"info": {"features": info["features"]}}
    return pa.schema(features.type).with_metadata({"huggingface": json.dumps(metadata)})


class SplitWriter:
    """Append row batches of one split to its Parquet, JSONL and Arrow files."""

    def __init__(
        self, root: Path, split: str, schema, *, kinds: tuple, arrow_schema=None
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.root = root
        self.split = split
        self.schema = schema
        self.rows = 0
        self._pending: list = []
        self._pending_rows = 0
        (root / "parquet").mkdir(exist_ok=True)
        self._files: list[HashingFile] = []
        self._parquet_file = self._open(root / "parquet" / f"{split}.parquet")
        self._parquet = pq.ParquetWriter(
            pa.PythonFile(self._parquet_file, mode="w"), schema, **PARQUET_OPTIONS
        )
        self._jsonl = None
        if "jsonl" in kinds:
            (root / "jsonl").mkdir(exist_ok=True)
            self._jsonl = self._open(root / "jsonl" / f"{split}.jsonl")
        self._arrow = None
        if "datasets" in kinds:
            (root / split).mkdir()
            self._arrow_file = self._open(root / split / ARROW_SHARD)
            self._arrow = pa.ipc.new_stream(
                pa.PythonFile(self._arrow_file, mode="w"), arrow_schema
            )
            self._arrow_schema = arrow_schema

    def _open(self, path: Path) -> HashingFile:
        file = HashingFile(path)
        self._files.append(file)
        return file

    def add(self, table) -> None:
        """Queue rows; full row groups are written as soon as they are complete."""
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._write_group(ROW_GROUP_ROWS)

    def _write_group(self, n: int) -> None:
        import pyarrow as pa

        table = pa.concat_tables(self._pending)
        group, rest = table.slice(0, n).combine_chunks(), table.slice(n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._parquet.write_table(group, row_group_size=ROW_GROUP_ROWS)
        if self._jsonl is not None:
            from exports.jsonlines import encode_bytes

            self._jsonl.write(encode_bytes(group))
        if self._arrow is not None:
            batch = pa.Table.from_arrays(
                group.columns, schema=self._arrow_schema
            ).to_batches()
            for record_batch in batch:
                self._arrow.write_batch(record_batch)
        self.rows += n

    def close(self, checksums: Checksums) -> None:
        """Finish the split's files; a split without rows leaves no files.

        `datasets.load_dataset` (and so `trl dpo --dataset_name`) cannot read a
        Parquet file without rows ("BatchSize must be greater than 0"), so an empty
        split is left out as a held-out fraction of 0 leaves out `test`.
        """
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._parquet.close()
        if self._arrow is not None:
            self._arrow.close()
        for file in self._files:
            file.close()
        if self.rows == 0:
            for file in self._files:
                file.path.unlink()
            for folder in (
                self.root / self.split,
                self.root / "parquet",
                self.root / "jsonl",
            ):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            return
        for file in self._files:
            checksums.add(file.path, file.hexdigest())
        if self._arrow is not None:
            self._write_split_state(checksums)

    def _write_split_state(self, checksums: Checksums) -> None:
        """state.json and dataset_info.json as `Dataset.save_to_disk` writes them."""
        import datasets
        from datasets.utils.py_utils import asdict

        features = datasets.Features.from_arrow_schema(self._arrow_schema)
        info = asdict(datasets.DatasetInfo(features=features))
        state = {
            "_data_files": [{"filename": ARROW_SHARD}],
            "_fingerprint": checksums.digests[f"{self.split}/{ARROW_SHARD}"][:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": self.split,
        }
        split_dir = self.root / self.split
        checksums.write_text(
            split_dir / "state.json", json.dumps(state, indent=2, sort_keys=True)
        )
        # save_to_disk sorts only the first level, keeping the features' own order.
        checksums.write_text(
            split_dir / "dataset_info.json",
            json.dumps({key: info[key] for key in sorted(info)}, indent=2),
        )

    def abort(self) -> None:
        """Close everything after a failed build (the folder is removed after)."""
        for writer in (self._parquet, self._arrow):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
        for file in self._files:
            file.close()


def write_dataset_dict_json(root: Path, splits: list[str], checksums: Checksums):
    checksums.write_text(root / "dataset_dict.json", json.dumps({"splits": splits}))


def write_judgment_ids(path: Path, ids, checksums: Checksums) -> None:
    """The ids of the judgments used, ascending, as a one-column Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = HashingFile(path)
    try:
        table = pa.table({"judgment_id": pa.array(ids, pa.int64())})
        pq.write_table(
            table,
            pa.PythonFile(file, mode="w"),
            row_group_size=1 << 20,
            **PARQUET_OPTIONS,
        )
    finally:
        file.close()
    checksums.add(path, file.hexdigest())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(root: Path, checksums: Checksums) -> str:
    """Write SHA256SUMS for every file under `root`; return the sha256 of that list.

    Digests computed while writing are reused; a file written some other way is
    hashed here. The returned digest identifies the whole snapshot content
    (`content_sha256`), and `sha256sum -c SHA256SUMS` verifies a downloaded copy.
    """
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != CHECKSUMS:
            digest = checksums.digests.get(rel) or file_sha256(path)
            lines.append(f"{digest}  {rel}\n")
    text = "".join(lines)
    (root / CHECKSUMS).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class FilesChanged(ValueError):
    """A snapshot folder no longer holds what its SHA256SUMS lists."""


FILES_CHANGED = (
    "The files of this snapshot changed after they were written ({detail}); "
    "nothing is served. Export it again, or restore the folder."
)


def _listed_digests(root: Path) -> dict[str, str]:
    try:
        text = (root / CHECKSUMS).read_text()
    except FileNotFoundError:
        raise FilesChanged(
            FILES_CHANGED.format(detail=f"missing: {CHECKSUMS}")
        ) from None
    digests = {}
    for line in text.splitlines():
        digest, _, rel = line.partition("  ")
        digests[rel] = digest
    return digests


def write_zip(root: Path, fileobj, *, prefix: str) -> None:
    """Zip every file under `root` into `fileobj` under `prefix/` (fixed dates).

    Each file is checked against SHA256SUMS while it is copied: a file changed,
    missing or added since the snapshot was written raises `FilesChanged`, so a
    download is always the snapshot its checksum names."""
    import zipfile

    listed = _listed_digests(root)
    files = {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    present = set(files) - {CHECKSUMS}
    missing = sorted(set(listed) - present)
    added = sorted(present - set(listed))
    if missing or added:
        detail = "; ".join(
            filter(
                None,
                [
                    missing and "missing: " + ", ".join(missing[:3]),
                    added and "not in SHA256SUMS: " + ", ".join(added[:3]),
                ],
            )
        )
        raise FilesChanged(FILES_CHANGED.format(detail=detail))
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, path in files.items():
            info = zipfile.ZipInfo(f"{prefix}/{rel}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            digest = hashlib.sha256()
            with open(path, "rb") as src, archive.open(info, "w") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    dst.write(block)
            if rel != CHECKSUMS and digest.hexdigest() != listed[rel]:
                detail = f"{rel} differs from its SHA256SUMS line"
                raise FilesChanged(FILES_CHANGED.format(detail=detail))
