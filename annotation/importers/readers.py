"""Stream records out of a file, one at a time, with where each one came from.

Every reader is a generator of `SourceRow`s and holds at most one batch of rows in
memory, so a file's size never decides the importer's memory. A row that cannot even be
decoded (broken JSON, bad UTF-8) comes out as a `SourceRow` with `error` set, so the
importer can report it with its line and carry on looking for more problems.

File types: ``jsonl`` (one JSON object per line), ``json`` (a JSON array of objects),
``csv`` (a header row with the record's field names; nested values as JSON text),
``parquet`` (read with pyarrow in batches) and ``datasets`` (a directory written by
`datasets`' ``save_to_disk``). pyarrow and datasets are imported inside their readers.
"""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

JSONL = "jsonl"
JSON_ARRAY = "json"
CSV = "csv"
PARQUET = "parquet"
DATASETS = "datasets"
FILE_TYPES = (JSONL, JSON_ARRAY, CSV, PARQUET, DATASETS)

BATCH_ROWS = 1000
JSON_READ_CHUNK = 1 << 16

NOT_UTF8 = "is not valid UTF-8 text"
BAD_JSON = "is not valid JSON: {error}"
NOT_OBJECT = "must be a JSON object, got {kind}"
JSON_NOT_ARRAY = "a .json file must hold one JSON array of objects"
JSON_ARRAY_UNTERMINATED = "the JSON array is not closed with ']'"
JSON_RECORD_TOO_LARGE = "a single record is larger than {limit} bytes"
JSON_EXPECTED_COMMA = "expected ',' or ']' after the record"
CSV_NO_HEADER = "the CSV file has no header row"
CSV_BAD_ROW = "has {n} cells but the header has {expected}"
CSV_BAD_CELL_JSON = "is not valid JSON: {error}"
DATASETS_NOT_DIRECTORY = (
    "is not a directory written by datasets' save_to_disk (no state.json, "
    "dataset_info.json or dataset_dict.json)"
)
DATASETS_HAS_SPLITS = (
    "holds several splits ({splits}); import one of them, e.g. {example}"
)
PARQUET_UNREADABLE = "is not a readable Parquet file: {error}"
DATASETS_UNREADABLE = "cannot be read as a datasets directory: {error}"
UNKNOWN_FILE_TYPE = (
    "cannot tell the file type; use a .jsonl, .json, .csv or .parquet file, or a "
    "directory written by datasets' save_to_disk"
)

# Columns that always hold JSON in a CSV file, and columns that may hold a message
# list written as JSON (a cell starting with '[' that parses as a list of objects).
CSV_JSON_COLUMNS = ("messages", "responses", "metadata")
CSV_MAYBE_MESSAGES_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class SourceRow:
    """One record, or the reason it could not be read, and where it sits in the file.

    `position` is the 1-based line for jsonl, json and csv files (the line where the
    record starts) and the 0-based row index for parquet and datasets.
    """

    position: int
    unit: str
    record: dict | None = None
    error: str | None = None
    field: str = ""


class FileUnreadable(Exception):
    """The file as a whole cannot be read (wrong type, no header, not an array)."""


def detect_file_type(path: Path) -> str:
    """Name the file type from a directory, the Parquet magic, the suffix or content."""
    if path.is_dir():
        return DATASETS
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return PARQUET
    suffix = path.suffix.lower()
    by_suffix = {".jsonl": JSONL, ".ndjson": JSONL, ".json": JSON_ARRAY, ".csv": CSV}
    if suffix in by_suffix and not (suffix == ".json" and _first_char(head) == "{"):
        return by_suffix[suffix]
    first = _first_char(head)
    if first == "[":
        return JSON_ARRAY
    if first == "{":
        return JSONL
    if suffix in (".parquet", ".pq"):
        return PARQUET
    if first and "," in head.decode("utf-8", "replace").split("\n", 1)[0]:
        return CSV
    raise FileUnreadable(UNKNOWN_FILE_TYPE)


def _first_char(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return chr(text[0]) if text else ""


def read_rows(
    path: Path, file_type: str, *, max_record_bytes: int
) -> Iterator[SourceRow]:
    """Yield the file's records in order."""
    if file_type == JSONL:
        return _read_jsonl(path)
    if file_type == JSON_ARRAY:
        return _read_json_array(path, max_record_bytes=max_record_bytes)
    if file_type == CSV:
        return _read_csv(path)
    if file_type == PARQUET:
        return _read_parquet(path)
    if file_type == DATASETS:
        return _read_datasets(path)
    raise FileUnreadable(UNKNOWN_FILE_TYPE)


def _as_record(value, position: int, unit: str) -> SourceRow:
    if isinstance(value, dict):
        return SourceRow(position, unit, record=value)
    kind = type(value).__name__ if value is not None else "null"
    return SourceRow(position, unit, error=NOT_OBJECT.format(kind=kind))


def _read_jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield SourceRow(number, "line", error=NOT_UTF8)
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield SourceRow(number, "line", error=BAD_JSON.format(error=exc.msg))
                continue
            yield _as_record(value, number, "line")


def _read_json_array(path: Path, *, max_record_bytes: int) -> Iterator[SourceRow]:
    """Decode a JSON array element by element, keeping a bounded text buffer."""
    decoder = json.JSONDecoder()
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = _TextBuffer(handle)
        try:
            reader.skip_space()
            if reader.peek() != "[":
                raise FileUnreadable(JSON_NOT_ARRAY)
            reader.advance(1)
            reader.skip_space()
            if reader.peek() == "]":
                return
            while True:
                line = reader.line
                try:
                    value = reader.decode(decoder, max_record_bytes)
                except json.JSONDecodeError as exc:
                    error = BAD_JSON.format(error=exc.msg)
                    yield SourceRow(reader.error_line, "line", error=error)
                    return
                except _RecordTooLarge:
                    error = JSON_RECORD_TOO_LARGE.format(limit=max_record_bytes)
                    yield SourceRow(line, "line", error=error)
                    return
                yield _as_record(value, line, "line")
                reader.skip_space()
                following = reader.peek()
                if following == ",":
                    reader.advance(1)
                    reader.skip_space()
                elif following == "]":
                    return
                elif following == "":
                    yield SourceRow(reader.line, "line", error=JSON_ARRAY_UNTERMINATED)
                    return
                else:
                    yield SourceRow(reader.line, "line", error=JSON_EXPECTED_COMMA)
                    return
        except UnicodeDecodeError:
            yield SourceRow(reader.line, "line", error=NOT_UTF8)


class _RecordTooLarge(Exception):
    pass


class _TextBuffer:
    """A read-ahead window over a text file that tracks the current line number."""

    def __init__(self, handle: io.TextIOBase):
        self.handle = handle
        self.text = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.error_line = 1

    def _fill(self, size: int = JSON_READ_CHUNK) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(size)
        if not chunk:
            self.eof = True
            return False
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        while self.pos >= len(self.text):
            if not self._fill():
                return ""
        return self.text[self.pos]

    def advance(self, count: int) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + count)
        self.pos += count

    def skip_space(self) -> None:
        while self.peek() in (" ", "\t", "\r", "\n"):
            self.advance(1)

    def decode(self, decoder: json.JSONDecoder, max_chars: int):
        """Decode one value at the cursor, reading more text until it is complete."""
        size = JSON_READ_CHUNK
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                truncated = exc.pos >= len(self.text) - 16 or exc.msg.startswith(
                    "Unterminated string"
                )
                if truncated and len(self.text) - self.pos > max_chars:
                    raise _RecordTooLarge from None
                if not truncated or not self._fill(size):
                    self.error_line = self.line + self.text.count(
                        "\n", self.pos, exc.pos
                    )
                    raise
                size *= 2
                continue
            if end == len(self.text) and not self.eof and self._number_at_end():
                # A number cut by the chunk boundary decodes as a shorter number.
                self._fill(size)
                continue
            self.advance(end - self.pos)
            return value

    def _number_at_end(self) -> bool:
        return self.text[-1:].isdigit() or self.text[-1:] in ("-", ".", "e", "E")


def _read_csv(path: Path) -> Iterator[SourceRow]:
    csv.field_size_limit(2**31 - 1)
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except UnicodeDecodeError:
            yield SourceRow(1, "line", error=NOT_UTF8)
            return
        if not header:
            raise FileUnreadable(CSV_NO_HEADER)
        header = [name.strip() for name in header]
        start = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                yield SourceRow(start, "line", error=NOT_UTF8)
                return
            except csv.Error as exc:
                yield SourceRow(start, "line", error=str(exc))
                return
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                error = CSV_BAD_ROW.format(n=len(cells), expected=len(header))
                yield SourceRow(line, "line", error=error)
                continue
            yield _csv_record(dict(zip(header, cells, strict=True)), line)


def _csv_record(cells: dict[str, str], line: int) -> SourceRow:
    """Empty cells are absent; nested fields are decoded from their JSON text."""
    record: dict = {}
    for name, cell in cells.items():
        if cell == "":
            continue
        if name in CSV_JSON_COLUMNS:
            try:
                record[name] = json.loads(cell)
            except json.JSONDecodeError as exc:
                error = CSV_BAD_CELL_JSON.format(error=exc.msg)
                return SourceRow(line, "line", error=error, field=name)
        elif name in CSV_MAYBE_MESSAGES_COLUMNS and cell.lstrip().startswith("[{"):
            record[name] = _messages_or_text(cell)
        else:
            record[name] = cell
    return SourceRow(line, "line", record=record)


def _messages_or_text(cell: str):
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return value
    return cell


def _read_parquet(path: Path) -> Iterator[SourceRow]:
    """Rows of a Parquet file; a corrupt file (or row group) rejects the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=BATCH_ROWS)
        for batch in batches:
            for row in batch.to_pylist():
                yield _as_record(row, index, "row")
                index += 1
    except (pa.ArrowException, OSError) as exc:
        raise FileUnreadable(
            PARQUET_UNREADABLE.format(error=_first_line(exc))
        ) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_datasets(path: Path) -> Iterator[SourceRow]:
    markers = ("state.json", "dataset_info.json", "dataset_dict.json")
    if not any((path / name).is_file() for name in markers):
        raise FileUnreadable(DATASETS_NOT_DIRECTORY)
    if (path / "dataset_dict.json").is_file():
        splits = _dataset_dict_splits(path / "dataset_dict.json")
        if len(splits) != 1:
            raise FileUnreadable(
                DATASETS_HAS_SPLITS.format(
                    splits=", ".join(splits), example=path / splits[0]
                )
            )
        path = path / splits[0]
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for one broken folder
        error = DATASETS_UNREADABLE.format(error=_first_line(exc))
        raise FileUnreadable(error) from None
    import pyarrow as pa

    index = 0
    try:
        for batch in dataset.iter(batch_size=BATCH_ROWS):
            columns = list(batch)
            for values in zip(*(batch[name] for name in columns), strict=True):
                record = dict(zip(columns, values, strict=True))
                yield _as_record(record, index, "row")
                index += 1
    except (pa.ArrowException, OSError) as exc:
        error = DATASETS_UNREADABLE.format(error=_first_line(exc))
        raise FileUnreadable(error) from None


def _dataset_dict_splits(path: Path) -> list[str]:
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))["splits"]
    except (ValueError, KeyError, TypeError) as exc:
        error = DATASETS_UNREADABLE.format(error=f"{path.name}: {_first_line(exc)}")
        raise FileUnreadable(error) from None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        error = DATASETS_UNREADABLE.format(error=f"{path.name}: 'splits' is not a list")
        raise FileUnreadable(error)
    return splits
