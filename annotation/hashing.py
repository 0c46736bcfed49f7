"""Content hashes that decide when two imported items are "the same".

A prompt's identity is its conversation: the sha256 of the canonical JSON (sorted keys,
no whitespace, UTF-8) of its messages, keeping only `role` and `content`, so the same
conversation hashes the same whether it arrived as `{"prompt": "..."}`, as a message
list, from a CSV cell or from Parquet. External ids, metadata and split are
deliberately left out: they describe a prompt, they do not make it a different one.

A response's identity is the sha256 over its model name and its text (canonical JSON of
the pair). The model name is part of it because the same text produced by two models
is two observations, one per model: per-model win rates and ratings need both rows.
The same model returning the same text twice is one response. Responses are unique per
prompt (a database constraint), so the prompt is implicit in the key.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path


def canonical_json(value) -> str:
    """Serialise `value` so that equal data always gives the same string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(messages: Iterable[Mapping[str, str]]) -> str:
    """Hash a conversation (a list of {role, content} messages)."""
    return _sha256(
        canonical_json([{"role": m["role"], "content": m["content"]} for m in messages])
    )


def response_hash(model_name: str, text: str) -> str:
    """Hash one response: the model that wrote it and what it wrote."""
    return _sha256(canonical_json([model_name, text]))


def file_sha256(path, chunk_size: int = 1 << 20) -> str:
    """Hash a file, or a directory (its files' relative paths and bytes, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = (
        sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    )
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    return digest.hexdigest()
