"""The split writer: an aborted build closes what it opened, quietly."""

import gc
import sys

import pyarrow as pa

from exports.writers import SplitWriter


def test_abort_closes_the_parquet_and_arrow_writers(tmp_path, monkeypatch):
    """A failed build aborts its writers; nothing may complain later, when they are
    collected (pyarrow's ParquetWriter.__del__ wrote to a closed file before)."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    schema = pa.schema([("prompt", pa.string())])
    writer = SplitWriter(
        tmp_path, "train", schema, kinds=("parquet", "datasets"), arrow_schema=schema
    )
    writer.add(pa.table({"prompt": ["a", "b"]}, schema=schema))
    writer.abort()
    assert not writer._parquet.is_open
    del writer
    gc.collect()
    assert unraisable == []
