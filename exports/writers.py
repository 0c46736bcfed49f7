"""Write a snapshot's files: Parquet and JSONL by record batches, then a DatasetDict.

Byte-identical output for identical input: rows arrive in a fixed order, Parquet is
written with fixed settings (zstd level 3, fixed row-group size, no timestamps), JSON
with fixed key order, and the `_fingerprint` that `save_to_disk` draws at random in
each split's `state.json` is replaced by a digest of that split's Arrow data.
`datasets` is imported inside the functions that need it (worker process only).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

BATCH_ROWS = 2_000
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_size": 1 << 20,
    "version": "2.6",
}
CHECKSUMS = "SHA256SUMS"
_JSON = json.JSONEncoder(ensure_ascii=False)


class SplitWriter:
    """Append rows to `parquet/<split>.parquet` and `jsonl/<split>.jsonl`."""

    def __init__(self, root: Path, split: str, schema) -> None:
        import pyarrow.parquet as pq

        self.schema = schema
        self.rows = 0
        self._buffer: list[dict] = []
        (root / "parquet").mkdir(exist_ok=True)
        (root / "jsonl").mkdir(exist_ok=True)
        self.parquet_path = root / "parquet" / f"{split}.parquet"
        self._parquet = pq.ParquetWriter(self.parquet_path, schema, **PARQUET_OPTIONS)
        self._jsonl = open(  # noqa: SIM115 (closed in close())
            root / "jsonl" / f"{split}.jsonl", "w", encoding="utf-8"
        )

    def add(self, row: dict) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self._buffer:
            return
        rows = self._buffer
        columns = {name: [row[name] for row in rows] for name in self.schema.names}
        batch = pa.RecordBatch.from_pydict(columns, schema=self.schema)
        self._parquet.write_batch(batch, row_group_size=BATCH_ROWS)
        encode = _JSON.encode
        self._jsonl.write("".join([encode(row) + "\n" for row in self._buffer]))
        self.rows += len(self._buffer)
        self._buffer.clear()

    def close(self) -> None:
        self.flush()
        if self.rows == 0:
            self._parquet.write_table(self.schema.empty_table())
        self._parquet.close()
        self._jsonl.close()


def write_dataset_dict(root: Path, splits: list[str], cache_dir: Path) -> None:
    """Save the Parquet splits as a `datasets` DatasetDict at `root` (load_from_disk).

    The splits are converted through a memory-mapped Arrow cache, so memory stays flat
    however large the snapshot is.
    """
    import datasets
    import pyarrow.parquet as pq

    datasets.disable_progress_bars()
    parts = {}
    for split in splits:
        path = root / "parquet" / f"{split}.parquet"
        schema = pq.read_schema(path)
        if pq.ParquetFile(path).metadata.num_rows == 0:
            # The parquet builder refuses an empty file; build the empty split here.
            features = datasets.Features.from_arrow_schema(schema)
            parts[split] = datasets.Dataset.from_dict(
                {name: [] for name in schema.names}, features=features
            )
        else:
            parts[split] = datasets.Dataset.from_parquet(
                str(path), cache_dir=str(cache_dir), keep_in_memory=False
            )
    datasets.DatasetDict(parts).save_to_disk(str(root), max_shard_size="500MB")
    for split in splits:
        _fix_fingerprint(root / split)


def _fix_fingerprint(split_dir: Path) -> None:
    state_path = split_dir / "state.json"
    state = json.loads(state_path.read_text())
    h = hashlib.sha256()
    for entry in state["_data_files"]:
        h.update(file_sha256(split_dir / entry["filename"]).encode())
    state["_fingerprint"] = h.hexdigest()[:16]
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True))


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(root: Path) -> str:
    """Write SHA256SUMS for every file under `root`; return the sha256 of that list.

    The returned digest identifies the whole snapshot content (`content_sha256`), and
    `sha256sum -c SHA256SUMS` verifies a downloaded copy.
    """
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != CHECKSUMS:
            lines.append(f"{file_sha256(path)}  {rel}\n")
    text = "".join(lines)
    (root / CHECKSUMS).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_zip(root: Path, fileobj, *, prefix: str) -> None:
    """Zip every file under `root` into `fileobj` under `prefix/` (fixed dates)."""
    import zipfile

    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(
                f"{prefix}/{path.relative_to(root).as_posix()}", date_time=ZIP_DATE
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
