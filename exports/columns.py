"""Columnar building blocks of an export: pyarrow and NumPy, no Django, no I/O.

The second pass of an export works on batches of comparisons, never on single rows:
prompts and responses arrive as Arrow arrays (one entry per distinct prompt or
response of the batch), and every output column is built with `pyarrow.compute`
and NumPy (`take` to pick chosen and rejected texts, interleaving by index for the
unpaired format). Python runs once per distinct prompt (its normalised key) and
never per row, except where a value has no exact vectorised form (non-ASCII prompt
normalisation, which falls back to `hygiene.normalise_text`).

Every function here reproduces, value for value, the row-wise definitions it
replaces (`render_prompt`, `prompt_text`, `json.dumps` of each row); the tests hold
a row-wise reference implementation and compare the two on crafted data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exports.aggregation import BOTH_BAD, SECOND
from exports.hygiene import normalise_text

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
ROLE_NAMES = {"system": "System", "user": "Human", "assistant": "Assistant"}
# Python's `\s` (str.isspace) restricted to ASCII: what `normalise_text` collapses.
_ASCII_SPACE = r"[\t\n\x0b\x0c\r\x1c-\x1f ]+"


class NotVectorisable(ValueError):
    """The batch holds values the Arrow path cannot represent exactly (nulls)."""


# --- prompts ------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptColumns:
    """The distinct prompts of a batch, one entry each, ordered by id."""

    ids: np.ndarray  # sorted int64
    messages: pa.ListArray  # list<struct<role, content>>: role and content only
    text: pa.StringArray  # "role: content" lines: the basis of the prompt key
    rendered: pa.StringArray  # the prompt of the string formats (`render_prompt`)

    def __len__(self) -> int:
        return len(self.ids)


def list_parts(lists: pa.ListArray) -> tuple[np.ndarray, pa.Array]:
    """Return (offsets from 0, flattened values) of a possibly sliced list array."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, lists.flatten()


def prompt_columns(ids: np.ndarray, messages: pa.Array) -> PromptColumns:
    """Build the prompt columns from parsed message lists (the fast path).

    Raises `NotVectorisable` when a list, role or content is null: the row-wise
    functions give those a meaning of their own (`prompt_columns_from_python`).
    """
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    if messages.null_count:
        raise NotVectorisable("null message list")
    offsets, flat = list_parts(messages)
    role, content = flat.field("role"), flat.field("content")
    if role.null_count or content.null_count:
        raise NotVectorisable("message without role or content")
    clean = pa.ListArray.from_arrays(
        pa.array(offsets), pa.StructArray.from_arrays([role, content], fields=MESSAGE)
    )
    lines = pc.binary_join_element_wise(role, content, ": ")
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), lines), "\n")
    return PromptColumns(
        ids=ids,
        messages=clean,
        text=text,
        rendered=_render(offsets, role, content),
    )


def _render(offsets: np.ndarray, role: pa.Array, content: pa.Array) -> pa.Array:
    """`render_prompt` for every list: a lone user turn as it is, else a transcript."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    if len(role) == 0:
        return pa.array(["\n\nAssistant:"] * n, pa.string())
    roles = pc.dictionary_encode(role)
    names = pa.array(
        [ROLE_NAMES.get(r, r.title()) for r in roles.dictionary.to_pylist()],
        pa.string(),
    )
    labelled = pc.binary_join_element_wise(names.take(roles.indices), content, ": ")
    transcript = pc.binary_join_element_wise(
        pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), labelled), "\n\n"),
        "\n\nAssistant:",
        "",
    )
    first = np.minimum(offsets[:-1], len(role) - 1)
    single = (lengths == 1) & pc.equal(role.take(first), "user").to_numpy(
        zero_copy_only=False
    )
    return pc.if_else(pa.array(single), content.take(first), transcript)


def prompt_columns_from_python(ids: np.ndarray, messages: list) -> PromptColumns:
    """Build the prompt columns row by row with the row-wise definitions.

    The exact fallback for prompts the Arrow path refuses (missing roles or contents).
    """
    return PromptColumns(
        ids=ids,
        messages=pa.array(
            [
                [{"role": m["role"], "content": m["content"]} for m in ms]
                for ms in messages
            ],
            MESSAGES,
        ),
        text=pa.array([prompt_text(ms) for ms in messages], pa.string()),
        rendered=pa.array([render_prompt(ms) for ms in messages], pa.string()),
    )


def prompt_text(messages: list[dict]) -> str:
    """The conversation as one string, roles included (the basis of prompt keys)."""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def render_prompt(messages: list[dict]) -> str:
    """Flatten a conversation into the plain-text prompt of the standard formats.

    A single user turn is its text as it is. Anything longer (a system message,
    earlier turns) is written as a transcript ending in an open assistant turn, in the
    "Human/Assistant" style of the Anthropic HH data, so no turn is lost.
    """
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    turns = [
        f"{ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}"
        for m in messages
    ]
    return "\n\n".join(turns) + "\n\nAssistant:"


def normalised(text: pa.Array) -> pa.Array:
    """`hygiene.normalise_text` of every string (ASCII in Arrow, the rest in Python).

    On ASCII text NFKC changes nothing and case folding is lower-casing, so the Arrow
    path is exact there: lower-cased, runs of whitespace made one space, trimmed.
    Only strings holding whitespace other than single inner spaces go through the
    regular expression (most prompts hold none); other strings go through the
    Python normaliser.
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    lower = pc.ascii_lower(text)
    ascii_mask = pc.string_is_ascii(text).to_numpy(zero_copy_only=False)
    spaced = np.flatnonzero(_needs_collapse(lower) & ascii_mask)
    if len(spaced):
        fixed = pc.utf8_trim(
            pc.replace_substring_regex(lower.take(pa.array(spaced)), _ASCII_SPACE, " "),
            " ",
        )
        lower = _patched(lower, spaced, fixed)
    if ascii_mask.all():
        return lower
    other = np.flatnonzero(~ascii_mask)
    values = [normalise_text(text[int(i)].as_py()) for i in other]
    return _patched(lower, other, pa.array(values, pa.string()))


def _needs_collapse(text: pa.Array) -> np.ndarray:
    """Per string: holds an ASCII whitespace byte other than a single inner space
    (so the whitespace rule of `normalise_text` may change it); conservative."""
    from exports.jsonlines import utf8_bytes

    n = len(text)
    data = utf8_bytes(text)
    lengths = pc.binary_length(text).fill_null(0).to_numpy(zero_copy_only=False)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    space = data == 0x20
    odd = ((data >= 0x09) & (data <= 0x0D)) | ((data >= 0x1C) & (data <= 0x1F))
    odd[:-1] |= space[:-1] & space[1:]
    out = np.zeros(n, dtype=bool)
    hits = np.flatnonzero(odd)
    if len(hits):
        out[np.searchsorted(starts, hits, side="right") - 1] = True
    filled = lengths > 0
    out[filled] |= space[starts[:-1][filled]] | space[starts[1:][filled] - 1]
    return out


def _patched(base: pa.Array, where: np.ndarray, values: pa.Array) -> pa.Array:
    """`base` with the entries at `where` replaced by `values` (in that order)."""
    pick = np.arange(len(base), dtype=np.int64)
    pick[where] = len(base) + np.arange(len(where))
    return pa.concat_arrays([base, values.cast(base.type)]).take(pa.array(pick))


def prompt_keys(text: pa.Array) -> np.ndarray:
    """16-byte digests (`hygiene.digest`) of the normalised prompts: equal keys mean
    "the same prompt"."""
    if len(text) == 0:
        return np.zeros(0, dtype="S16")
    blake = hashlib.blake2b
    separated = pc.binary_join_element_wise(normalised(text), "\x1f", "")
    values = separated.cast(pa.binary()).to_numpy(zero_copy_only=False)
    keys = [blake(value, digest_size=16).digest() for value in values]
    return np.frombuffer(b"".join(keys), dtype="S16")


def in_test_split(keys: np.ndarray, *, seed: int, fraction: float) -> np.ndarray:
    """Hash each prompt key with the seed: stable, independent of other rows.

    A prompt is in the test split when the first 8 bytes of sha256("{seed}:" + key),
    read as a big-endian fraction of 2**64, fall below `fraction`.
    """
    n = len(keys)
    if fraction <= 0 or n == 0:
        return np.zeros(n, dtype=bool)
    salt = np.frombuffer(f"{seed}:".encode(), dtype=np.uint8)
    rows = np.empty((n, len(salt) + 16), dtype=np.uint8)
    rows[:, : len(salt)] = salt
    rows[:, len(salt) :] = (
        np.ascontiguousarray(keys, dtype="S16").view(np.uint8).reshape(n, 16)
    )
    sha = hashlib.sha256
    inputs = rows.view(f"V{rows.shape[1]}").reshape(-1).tolist()  # bytes, whole
    digests = np.frombuffer(b"".join([sha(x).digest() for x in inputs]), np.uint8)
    head = np.ascontiguousarray(digests.reshape(n, 32)[:, :8]).view(">u8")
    return head.reshape(-1).astype(np.float64) / 2.0**64 < fraction


# --- rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairBatch:
    """Aggregated comparisons of one batch with their distinct prompts and responses."""

    comparison_id: np.ndarray  # int64, ascending
    prompt_id: np.ndarray
    first_id: np.ndarray
    second_id: np.ndarray
    label: np.ndarray  # FIRST, SECOND or BOTH_BAD (unpaired negatives)
    counts: np.ndarray  # (n, 4) votes first, second, tie, both_bad
    agreement: np.ndarray
    confidence: np.ndarray
    prompt_index: np.ndarray  # into `prompts`
    first_index: np.ndarray  # into `responses`
    second_index: np.ndarray
    prompts: PromptColumns
    responses: pa.StringArray

    def __len__(self) -> int:
        return len(self.comparison_id)


@dataclass(frozen=True)
class BatchRows:
    """Output rows of a batch plus what the hygiene checks read."""

    table: pa.Table  # in the format's schema, in stream order
    comparison_row: np.ndarray  # index into the PairBatch of each row
    texts: dict  # text column name -> string array (messages joined), as hygiene sees
    pairs: np.ndarray  # indices into the PairBatch of labelled preference pairs
    chosen_index: np.ndarray  # per pair, into `responses`
    rejected_index: np.ndarray


def _assistant(texts: pa.Array) -> pa.ListArray:
    """One assistant message per text."""
    n = len(texts)
    role = pa.repeat(pa.scalar("assistant"), n) if n else pa.array([], pa.string())
    values = pa.StructArray.from_arrays([role, texts], fields=MESSAGE)
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), values)


def _with_answer(prompts: PromptColumns, index: np.ndarray, texts: pa.Array):
    """Prompt messages of each row followed by one assistant message (SFT)."""
    offsets, flat = list_parts(prompts.messages)
    starts, lengths = offsets[index], np.diff(offsets)[index]
    n = len(index)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=out_offsets[1:])
    row = np.repeat(np.arange(n), lengths + 1)
    k = np.arange(out_offsets[-1]) - out_offsets[row]
    pick = np.where(k < lengths[row], starts[row] + k, len(flat) + row)
    answers = _assistant(texts).flatten()
    values = pa.concat_arrays([flat, answers]).take(pa.array(pick))
    return pa.ListArray.from_arrays(pa.array(out_offsets.astype(np.int32)), values)


def _prefixed(prefix: str, texts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(prefix, texts, "")


def build_rows(batch: PairBatch, *, format: str, sft_style: str, schema) -> BatchRows:
    """Rows of one batch in `format` (the columns of `formats.arrow_schema`)."""
    n = len(batch)
    second = batch.label == SECOND
    both_bad = batch.label == BOTH_BAD
    labelled = ~both_bad
    counts = batch.counts
    chosen_ix = np.where(second, batch.second_index, batch.first_index)
    rejected_ix = np.where(second, batch.first_index, batch.second_index)
    chosen_id = np.where(second, batch.second_id, batch.first_id)
    rejected_id = np.where(second, batch.first_id, batch.second_id)
    v_chosen = np.where(second, counts[:, 1], counts[:, 0])
    v_rejected = np.where(second, counts[:, 0], counts[:, 1])
    texts = batch.responses
    prompts = batch.prompts
    pidx = batch.prompt_index
    pairs = np.flatnonzero(labelled)

    if format == "unpaired":
        # Two rows per comparison: (chosen, rejected), or (first, second) both bad.
        row = np.repeat(np.arange(n), 2)
        is_first_row = np.tile([True, False], n)
        bb = both_bad[row]
        response_ix = np.where(
            is_first_row,
            np.where(bb, batch.first_index[row], chosen_ix[row]),
            np.where(bb, batch.second_index[row], rejected_ix[row]),
        )
        response_id = np.where(
            is_first_row,
            np.where(bb, batch.first_id[row], chosen_id[row]),
            np.where(bb, batch.second_id[row], rejected_id[row]),
        )
        # Votes for this row's response and for the other one (a both-bad row's
        # response is the first or the second): the vote columns add up to n_votes.
        this_first = np.where(bb, is_first_row, is_first_row == ~second[row])
        votes_for = np.where(this_first, counts[row, 0], counts[row, 1])
        votes_against = np.where(this_first, counts[row, 1], counts[row, 0])
        prompt = prompts.rendered.take(pa.array(pidx[row]))
        completion = texts.take(pa.array(response_ix))
        columns = {
            "prompt": prompt,
            "completion": completion,
            "label": pa.array(is_first_row & ~bb),
            "response_id": response_id,
        }
        # The label is part of a row: the same completion desirable in one
        # comparison and undesirable in another is not an exact duplicate.
        label = pc.cast(columns["label"], pa.string())
        hygiene_texts = {"prompt": prompt, "completion": completion, "label": label}
    else:
        row = np.arange(n)
        votes_for, votes_against = v_chosen, v_rejected
        chosen = texts.take(pa.array(chosen_ix))
        if format in ("preference", "conversational"):
            rejected = texts.take(pa.array(rejected_ix))
            if format == "preference":
                prompt = prompts.rendered.take(pa.array(pidx))
                columns = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
                hygiene_texts = dict(columns)
            else:
                columns = {
                    "prompt": prompts.messages.take(pa.array(pidx)),
                    "chosen": _assistant(chosen),
                    "rejected": _assistant(rejected),
                }
                hygiene_texts = {
                    "prompt": prompts.text.take(pa.array(pidx)),
                    "chosen": _prefixed("assistant: ", chosen),
                    "rejected": _prefixed("assistant: ", rejected),
                }
            columns["chosen_response_id"] = chosen_id
            columns["rejected_response_id"] = rejected_id
        elif sft_style == "messages":
            columns = {"messages": _with_answer(prompts, pidx, chosen)}
            lines = prompts.text.take(pa.array(pidx))
            answer = _prefixed("assistant: ", chosen)
            has_prompt = pa.array(np.diff(list_parts(prompts.messages)[0])[pidx] > 0)
            hygiene_texts = {
                "messages": pc.if_else(
                    has_prompt,
                    pc.binary_join_element_wise(lines, answer, "\n"),
                    answer,
                )
            }
            columns["response_id"] = chosen_id
        else:
            prompt = prompts.rendered.take(pa.array(pidx))
            columns = {"prompt": prompt, "completion": chosen}
            hygiene_texts = dict(columns)
            columns["response_id"] = chosen_id

    total = counts.sum(axis=1)
    columns.update(
        {
            "prompt_id": batch.prompt_id[row],
            "comparison_id": batch.comparison_id[row],
            "votes_chosen": votes_for,
            "votes_rejected": votes_against,
            "votes_tie": counts[row, 2],
            "votes_both_bad": counts[row, 3],
            "n_votes": total[row],
            "agreement": batch.agreement[row],
            "confidence": batch.confidence[row],
        }
    )
    arrays = [_as_arrow(columns[field.name], field.type) for field in schema]
    return BatchRows(
        table=pa.Table.from_arrays(arrays, schema=schema),
        comparison_row=row,
        texts=hygiene_texts,
        pairs=pairs,
        chosen_index=chosen_ix[pairs],
        rejected_index=rejected_ix[pairs],
    )


def _as_arrow(values, type_) -> pa.Array:
    if isinstance(values, np.ndarray):
        return pa.array(values.astype(type_.to_pandas_dtype(), copy=False), type_)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if values.type == type_ else values.cast(type_)
