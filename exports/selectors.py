"""Reads behind an export: one consistent database snapshot, read in columns.

`export_plan` is the first pass: compact integer arrays of comparisons and votes
(about 40 bytes per judgment, no text), aggregated into one label per comparison with
the reason for every drop that the votes decide. The second pass reads, batch by
batch, only the texts of the comparisons kept (`read_prompts`, `read_responses`):
each distinct prompt and response of a batch once. The prompts give each comparison
its normalised prompt key, hence its split, and drop comparisons whose prompt equals
an evaluation prompt (`ExportPlan.assign_prompts`). The preview runs the same two
steps but reads only prompts (`export_preview`).

PostgreSQL reads go through `COPY ... TO STDOUT` inside the same REPEATABLE READ
transaction: integers in the binary format (parsed by NumPy without a per-row step),
prompts as JSON lines and responses as CSV (parsed by pyarrow). Other databases read
through the cursor and build the prompt columns with the row-wise Python functions;
both give the same columns (a test compares them).
"""

from __future__ import annotations

import io
import json
import tempfile
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, IntegerField, Max, Min, Value, When
from django.db.models.functions import Cast, Coalesce

from annotation.models import Choice, Comparison, Judgment, Project, Prompt, Split
from exports import aggregation as agg
from exports import judgment_ids, pgcopy
from exports.arrays import distinct
from exports.formats import ExportConfig
from exports.hygiene import label_distribution
from exports.models import DatasetSnapshot, SnapshotJudgmentIds
from exports.signals import export_stage

CHUNK_SIZE = 5_000
ID_RANGE = 1 << 22  # ids per aggregated COPY of integer columns (48 MB per column)
TEXT_CHUNK = 1_000  # prompts or responses per aggregated COPY of texts
DENSE_RANGE = 0.5  # votes by comparison-id range when the project holds this share
BATCH_COMPARISONS = 10_000  # comparisons per second-pass batch (bounds memory)
PREVIEW_TIMEOUT_MS = 60_000
CHOICE_CODE = {
    Choice.FIRST: agg.FIRST,
    Choice.SECOND: agg.SECOND,
    Choice.TIE: agg.TIE,
    Choice.BOTH_BAD: agg.BOTH_BAD,
}
PRIOR_NAME = "(imported prior labels)"
SNAPSHOT_FILES_GONE = "The files of snapshot {pk} are no longer on disk."
READ_MISMATCH = (
    "Asked for {asked} {what} and got {got}: the reads did not see one database "
    "snapshot."
)

# Drop reasons (codes in `ExportPlan.reason`; 0 means kept), in the order they are
# decided: a comparison keeps the first reason that applies.
KEPT = 0
DROP_REASONS = (
    "",
    "evaluation_prompt",  # its prompt has split `heldout`
    *agg.REASONS[1:],  # no_votes, no_majority, not_unanimous, below_min_agreement
    "too_few_votes",
    "tie",
    "both_bad",
    "evaluation_prompt_text",  # its prompt's normalised text is an evaluation prompt
    "duplicate_chosen_response",  # SFT: the chosen response already gave a row
)
_CODE = {reason: code for code, reason in enumerate(DROP_REASONS)}


@contextmanager
def consistent_read(*, timeout_ms: int | None = None):
    """Run every read inside one database snapshot.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction, so judgments committed
    while the export runs are invisible and a half-written one never shows
    (`timeout_ms` bounds every statement, for the preview; JIT is off). SQLite in
    WAL mode: one deferred read transaction, whose snapshot is fixed by its first
    read and which does not take the write lock (so annotators keep submitting).
    Inside an outer transaction (tests) the outer one already fixes what is read.
    """
    if connection.in_atomic_block:
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                )
                # The reads are a few large scans and joins: compiling them costs
                # more than it saves, and hash tables should stay in memory.
                cursor.execute("SET LOCAL jit = off")
                cursor.execute("SET LOCAL work_mem = '64MB'")
                if timeout_ms:
                    cursor.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            yield
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("COMMIT")


# --- integer columns (first pass) ---------------------------------------------------


def _copy(sql: str, params=None, raw=None) -> bytes:
    """All bytes of `COPY (...) TO STDOUT` on the psycopg connection (`raw`)."""
    raw = raw if raw is not None else _raw_connection()
    buffer = io.BytesIO()
    with raw.cursor() as cursor, cursor.copy(sql, params) as copy:
        for chunk in copy:
            buffer.write(chunk)
    return buffer.getvalue()


def _raw_connection():
    connection.ensure_connection()
    return connection.connection


def _sort_by(columns: dict[str, np.ndarray], order: list[str]) -> dict:
    """Sort all columns by the `order` columns (first is primary), unless sorted."""
    keys = [columns[name] for name in order]
    if len(keys[0]) < 2:
        return columns
    ahead = np.zeros(len(keys[0]) - 1, dtype=bool)
    tied = np.ones(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        ahead |= tied & (key[1:] > key[:-1])
        tied &= key[1:] == key[:-1]
    if (ahead | tied).all():
        return columns
    perm = np.lexsort(keys[::-1])
    return {name: column[perm] for name, column in columns.items()}


def _int_columns(query, names: list[str], order: list[str]) -> dict[str, np.ndarray]:
    """Read integer columns of `query` (a values_list queryset) into NumPy arrays,
    sorted by the `order` columns (names among `names`; the first name is the pk).

    PostgreSQL: `COPY (SELECT array_agg(...) ...) TO STDOUT (FORMAT binary)`, one
    array per column and pk range of `ID_RANGE` ids (so no value exceeds
    PostgreSQL's 1 GB limit), parsed by NumPy at a fixed stride: a few messages
    whatever the row count, and 12 bytes per value. Other databases: the ORM
    iterator in chunks, in the queryset's own order (which must be `order`). Both
    run inside the caller's transaction.
    """
    if connection.vendor == "postgresql":
        sql, params = query.order_by().query.sql_with_params()
        aggs = ", ".join(f"array_agg(c{i}::bigint)" for i in range(len(names)))
        aliases = ", ".join(f"c{i}" for i in range(len(names)))
        bounds = query.model.objects.aggregate(low=Min("pk"), high=Max("pk"))
        parts = {name: [] for name in names}
        low, high = bounds["low"] or 0, bounds["high"] or -1
        for start in range(low, high + 1, ID_RANGE):
            data = _copy(
                f"COPY (SELECT {aggs} FROM ({sql}) AS q ({aliases}) "
                f"WHERE c0 >= {int(start)} AND c0 < {int(start + ID_RANGE)}) "
                "TO STDOUT (FORMAT binary)",
                params,
            )
            for fields in pgcopy.tuples(data):
                for name, value in zip(names, fields, strict=True):
                    parts[name].append(pgcopy.int_array(value))
        columns = {
            name: np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
            for name, chunks in parts.items()
        }
        return _sort_by(columns, order)
    columns = [array("q") for _ in names]
    appends = [column.append for column in columns]
    for row in query.iterator(chunk_size=CHUNK_SIZE):
        for append, value in zip(appends, row, strict=True):
            append(value)
    return {
        name: np.frombuffer(column, dtype=np.int64) if column else np.zeros(0, np.int64)
        for name, column in zip(names, columns, strict=True)
    }


def _choice_code(field: str):
    whens = [
        When(**{field: choice}, then=Value(code))
        for choice, code in CHOICE_CODE.items()
    ]
    return Case(*whens, default=Value(agg.NO_LABEL), output_field=IntegerField())


def _comparison_arrays(project: Project) -> dict[str, np.ndarray]:
    """Integer columns of the project's comparisons, by id; `eval` is 1 where the
    prompt is an evaluation (held-out) prompt."""
    query = (
        Comparison.objects.filter(project=project)
        .order_by("id")
        .annotate(gold_code=_choice_code("gold_choice"))
        .values_list("id", "prompt_id", "response_a_id", "response_b_id", "gold_code")
    )
    names = ["id", "prompt", "a", "b", "gold"]
    columns = _int_columns(query, names, order=["id"])
    heldout = np.array(
        Prompt.objects.filter(project=project, split=Split.HELDOUT).values_list(
            "id", flat=True
        ),
        dtype=np.int64,
    )
    columns["eval"] = np.isin(columns["prompt"], heldout).astype(np.int64)
    return columns


def _vote_arrays(
    project: Project, include_prior: bool, comparison_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Integer columns of the votes on `comparison_ids` (the project's), by
    (comparison, id).

    Where the project's comparisons fill most of their id range (the usual case:
    a project's comparisons are imported together), the votes are selected by that
    range of comparison ids, without joining the comparisons, and those of other
    projects' comparisons inside the range are left out here.
    """
    query = Judgment.objects.all()
    dense = False
    if len(comparison_ids):
        low, high = int(comparison_ids[0]), int(comparison_ids[-1])
        dense = len(comparison_ids) >= DENSE_RANGE * (high - low + 1)
    if dense:
        query = query.filter(comparison_id__gte=low, comparison_id__lte=high)
    else:
        query = query.filter(comparison__project=project)
    if not include_prior:
        query = query.filter(origin=Judgment.Origin.HUMAN)
    query = (
        query.order_by("comparison_id", "id")
        .annotate(
            label_code=_choice_code("choice"),
            worker=Coalesce(
                Cast("annotator_id", BigIntegerField()),
                Value(-1),
                output_field=BigIntegerField(),
            ),
            side=Case(
                When(left_is_first=True, then=Value(1)),
                When(left_is_first=False, then=Value(0)),
                default=Value(-1),
                output_field=IntegerField(),
            ),
        )
        .values_list("id", "comparison_id", "worker", "label_code", "side")
    )
    names = ["id", "comparison", "annotator", "label", "left"]
    columns = _int_columns(query, names, order=["comparison", "id"])
    if dense and len(columns["id"]):
        at = np.minimum(
            np.searchsorted(comparison_ids, columns["comparison"]),
            len(comparison_ids) - 1,
        )
        ours = comparison_ids[at] == columns["comparison"]
        if not ours.all():
            columns = {name: column[ours] for name, column in columns.items()}
    return columns


def _annotator_names(ids: np.ndarray) -> list[str]:
    User = get_user_model()
    names = dict(
        User.objects.filter(pk__in=[int(i) for i in ids if i >= 0]).values_list(
            "pk", User.USERNAME_FIELD
        )
    )
    return [PRIOR_NAME if i < 0 else names.get(int(i), f"user {i}") for i in ids]


# --- the plan -----------------------------------------------------------------------


@dataclass
class PlanSummary:
    """What a finished plan says about the snapshot (after the second pass)."""

    dropped: dict  # comparisons per reason
    judgment_ids: np.ndarray  # ascending int64: the judgments behind the rows
    annotators: dict  # label distribution per annotator


@dataclass
class ExportPlan:
    """Aggregated labels of every comparison of a project, and what is kept (no text).

    Arrays are per comparison, ordered by id. `prompt_key` and `in_test` are known
    for a comparison once its prompt was read (`assign_prompts`).
    """

    config: ExportConfig
    comparison_ids: np.ndarray  # sorted int64
    prompt_ids: np.ndarray
    first_ids: np.ndarray
    second_ids: np.ndarray
    counts: np.ndarray  # (n, 4) votes first, second, tie, both_bad
    aggregate_label: np.ndarray  # the policy's label before any drop
    agreement: np.ndarray
    confidence: np.ndarray
    reason: np.ndarray  # uint8 code into DROP_REASONS; KEPT (0) = gives rows
    votes: dict  # id, item (comparison index), worker (index), label, left
    worker_names: list
    evaluation_keys: np.ndarray  # S16 normalised keys of the evaluation prompts
    prompt_key: np.ndarray = field(init=False)  # S16 per comparison
    in_test: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_key = np.zeros(len(self.comparison_ids), dtype="S16")
        self.in_test = np.zeros(len(self.comparison_ids), dtype=bool)

    @property
    def kept(self) -> np.ndarray:
        return self.reason == KEPT

    @property
    def label(self) -> np.ndarray:
        """The label of kept comparisons, NO_LABEL for the others."""
        return np.where(self.kept, self.aggregate_label, agg.NO_LABEL).astype(np.int8)

    def pending(self) -> np.ndarray:
        """Comparisons whose prompt is still to be read: those the votes keep (and,
        in SFT, those dropped as repeats, which a prompt-level drop overrides)."""
        return np.flatnonzero(
            (self.reason == KEPT) | (self.reason == _CODE["duplicate_chosen_response"])
        )

    def batches(self, size: int = BATCH_COMPARISONS) -> Iterator[np.ndarray]:
        """`pending()` comparisons in id order, `size` at a time."""
        pending = self.pending()
        for start in range(0, len(pending), size):
            yield pending[start : start + size]

    def assign_prompts(
        self, index: np.ndarray, keys: np.ndarray, in_test: np.ndarray
    ) -> np.ndarray:
        """Give comparisons `index` their prompt keys and splits; return those kept.

        A comparison whose prompt's normalised text equals an evaluation prompt is
        dropped (`evaluation_prompt_text`): evaluation prompts never enter a split.
        """
        self.prompt_key[index] = keys
        self.in_test[index] = in_test
        if len(self.evaluation_keys):
            leaked = np.isin(keys, self.evaluation_keys)
            self.reason[index[leaked]] = _CODE["evaluation_prompt_text"]
        return index[self.reason[index] == KEPT]

    def finish(self) -> PlanSummary:
        """Drops, judgment ids and annotator report of the comparisons kept now."""
        kept = self.kept
        codes = np.bincount(self.reason, minlength=len(DROP_REASONS))
        dropped = {
            DROP_REASONS[code]: int(codes[code])
            for code in range(1, len(DROP_REASONS))
            if codes[code]
        }
        item = self.votes["item"]
        return PlanSummary(
            dropped=dict(sorted(dropped.items())),
            judgment_ids=judgment_ids.canonical(self.votes["id"][kept[item]]),
            annotators=label_distribution(
                self.votes["worker"],
                self.votes["label"],
                self.votes["left"],
                self.label,
                item,
                self.worker_names,
            ),
        )

    def row_counts(self) -> dict:
        """Rows each split holds (or would hold) from the comparisons kept now."""
        per_comparison = 2 if self.config.format == "unpaired" else 1
        kept = self.kept
        return {
            split: int((kept & (self.in_test == (split == "test"))).sum())
            * per_comparison
            for split in split_names(self.config)
        }


def export_plan(project: Project, config: ExportConfig) -> ExportPlan:
    """Aggregate every comparison of `project` and decide what the votes keep.

    No text is read here. Call inside `consistent_read()` together with the text
    reads of the second pass so that every read sees the same judgments.
    `signals.export_stage` is sent after each of the two reads.
    """
    comp = _comparison_arrays(project)
    export_stage.send(sender=ExportPlan, stage="comparisons", project=project)
    votes = _vote_arrays(project, config.include_prior, comp["id"])
    export_stage.send(sender=ExportPlan, stage="votes", project=project)
    n = len(comp["id"])
    item = np.searchsorted(comp["id"], votes["comparison"])
    worker_ids, worker = np.unique(votes["annotator"], return_inverse=True)
    worker = worker.reshape(-1)
    result = agg.aggregate(
        config.policy,
        item=item,
        worker=worker,
        label=votes["label"],
        n_items=n,
        n_workers=len(worker_ids),
        gold=comp["gold"],
        ratio=config.min_agreement,
    )
    counts = agg.vote_counts(item, votes["label"], n)
    label = result.label
    reason = np.zeros(n, dtype=np.uint8)

    def drop(mask, name):
        reason[(reason == KEPT) & mask] = _CODE[name]

    drop(comp["eval"] == 1, "evaluation_prompt")
    for code in range(1, len(agg.REASONS)):
        drop(result.reason == code, agg.REASONS[code])
    drop(counts.sum(axis=1) < config.min_votes, "too_few_votes")
    drop(label == agg.TIE, "tie")
    negatives = config.format == "unpaired" and config.both_bad_as_negatives
    if not negatives:
        drop(label == agg.BOTH_BAD, "both_bad")
    if config.format == "sft":
        # Each chosen response gives one row: the first comparison it won, by id.
        # (All comparisons of one response share its prompt, so a later
        # `evaluation_prompt_text` drop, which overrides this one, takes all of them
        # or none.)
        chosen = np.where(label == agg.SECOND, comp["b"], comp["a"])
        kept = np.flatnonzero(reason == KEPT)
        _, first = np.unique(chosen[kept], return_index=True)
        repeated = np.ones(len(kept), dtype=bool)
        repeated[first] = False
        reason[kept[repeated]] = _CODE["duplicate_chosen_response"]
    final = np.where(reason == KEPT, label, agg.NO_LABEL)
    return ExportPlan(
        config=config,
        comparison_ids=comp["id"],
        prompt_ids=comp["prompt"],
        first_ids=comp["a"],
        second_ids=comp["b"],
        counts=counts,
        aggregate_label=label,
        agreement=agg.agreement(counts, final),
        confidence=result.confidence,
        reason=reason,
        votes={
            "id": votes["id"],
            "item": item,
            "worker": worker,
            "label": votes["label"],
            "left": votes["left"],
        },
        worker_names=_annotator_names(worker_ids),
        evaluation_keys=evaluation_keys(project),
    )


def split_names(config: ExportConfig) -> list[str]:
    return ["train", "test"] if config.heldout_fraction > 0 else ["train"]


# --- texts (second pass) ------------------------------------------------------------


def _prompt_rows_python(ids: np.ndarray) -> list:
    """Messages of the prompts `ids` (ascending), decoded by the ORM."""
    out = []
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start : start + 500]]
        out += list(
            Prompt.objects.filter(pk__in=chunk)
            .order_by("pk")
            .values_list("messages", flat=True)
        )
    if len(out) != len(ids):
        raise RuntimeError(
            READ_MISMATCH.format(asked=len(ids), what="prompts", got=len(out))
        )
    return out


def _aggregated(columns: str, table: str, ids: np.ndarray, raw) -> Iterator[tuple]:
    """Yield (chunk of `ids`, positions of the chunk in the rows read, the fields of
    the one aggregate row `SELECT {columns} FROM {table} WHERE ...`) per chunk.

    A chunk whose ids fill most of their range is read as that range of ids (one
    index range scan; the few rows between are read and left out here), any other
    as `id = ANY(...)`, one index probe per id (about twice the database time).
    The ids go as one array literal: psycopg's list adapter costs a few
    microseconds per element, more than the rest of the read.
    """
    for start in range(0, len(ids), TEXT_CHUNK):
        chunk = ids[start : start + TEXT_CHUNK]
        low, high = int(chunk[0]), int(chunk[-1])
        if len(chunk) >= DENSE_RANGE * (high - low + 1):
            where, params = f"id BETWEEN {low} AND {high}", None
        else:
            where = "id = ANY(%s::bigint[])"
            params = ["{" + ",".join(map(str, chunk.tolist())) + "}"]
        data = _copy(
            f"COPY (SELECT {columns} FROM {table} WHERE {where}) "
            "TO STDOUT (FORMAT binary)",
            params,
            raw,
        )
        fields = pgcopy.tuples(data)[0]
        got = pgcopy.int_array(fields[0])
        at = np.minimum(np.searchsorted(got, chunk), max(len(got) - 1, 0))
        if len(got) == 0 or not np.array_equal(got[at], chunk):
            raise RuntimeError(
                READ_MISMATCH.format(asked=len(chunk), what=table, got=len(got))
            )
        yield chunk, at, fields


PROMPT_COLUMNS = (
    "array_agg(id ORDER BY id), "
    "string_agg('{\"m\":' || messages::text || '}', E'\\n' ORDER BY id)"
)
RESPONSE_COLUMNS = (
    "array_agg(id ORDER BY id), array_agg(octet_length(text) ORDER BY id), "
    "string_agg(text, '' ORDER BY id)"
)


def read_prompts(ids: np.ndarray, raw=None):
    """Prompt columns (`columns.PromptColumns`) of the prompts `ids` (ascending).

    PostgreSQL: per chunk of ids one row holding the ids and the messages as JSON
    lines (`{"m": [...]}`), parsed by pyarrow into message lists, then the
    vectorised columns. A batch the fast path cannot represent exactly (a missing
    role or content) goes through the row-wise functions, as on other databases.
    """
    from exports import columns as cols

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0 or (raw is None and connection.vendor != "postgresql"):
        return cols.prompt_columns_from_python(ids, _prompt_rows_python(ids))
    import pyarrow as pa
    import pyarrow.json as pa_json

    lines, keep, read = [], [], 0
    for _, at, fields in _aggregated(
        PROMPT_COLUMNS, "annotation_prompt", ids, raw or _raw_connection()
    ):
        keep.append(at + read)
        read += len(pgcopy.int_array(fields[0]))
        lines.append(bytes(fields[1]))
    keep = np.concatenate(keep)
    data = b"\n".join(lines)
    try:
        table = pa_json.read_json(
            io.BytesIO(data),
            read_options=pa_json.ReadOptions(block_size=max(1 << 20, len(data) + 1)),
            parse_options=pa_json.ParseOptions(
                explicit_schema=pa.schema([("m", cols.MESSAGES)]),
                unexpected_field_behavior="ignore",
            ),
        )
        if table.num_rows != read:
            raise RuntimeError(
                READ_MISMATCH.format(asked=read, what="prompts", got=table.num_rows)
            )
        messages = table["m"].combine_chunks()
        if read != len(ids):
            messages = messages.take(pa.array(keep))
        return cols.prompt_columns(ids, messages)
    except (pa.ArrowInvalid, cols.NotVectorisable):
        messages = [json.loads(line)["m"] for line in data.splitlines()]
        return cols.prompt_columns_from_python(ids, [messages[i] for i in keep])


def read_responses(ids: np.ndarray, raw=None):
    """Texts of the responses `ids` (ascending) as one Arrow string array.

    PostgreSQL: per chunk of ids one row holding the ids, the byte length of every
    text and all texts concatenated: the Arrow array is built from those buffers as
    they are (offsets from the lengths), then checked to be valid UTF-8.
    """
    import pyarrow as pa

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return pa.array([], pa.string())
    if raw is None and connection.vendor != "postgresql":
        return _responses_python(ids)
    parts = []
    for chunk, at, (_, lengths, text) in _aggregated(
        RESPONSE_COLUMNS, "annotation_response", ids, raw or _raw_connection()
    ):
        sizes = pgcopy.int_array(lengths, itemsize=4)
        offsets = np.zeros(len(sizes) + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        texts = pa.StringArray.from_buffers(
            len(sizes), pa.py_buffer(offsets), pa.py_buffer(bytes(text))
        )
        texts.validate(full=True)
        parts.append(texts if len(sizes) == len(chunk) else texts.take(pa.array(at)))
    return pa.concat_arrays(parts)


def _responses_python(ids: np.ndarray):
    import pyarrow as pa

    got, texts = [], []
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start : start + 500]]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, text FROM annotation_response WHERE id IN "
                f"({', '.join(['%s'] * len(chunk))}) ORDER BY id",
                chunk,
            )
            for pk, text in cursor.fetchall():
                got.append(pk)
                texts.append(text)
    if not np.array_equal(ids, np.array(got, dtype=np.int64)):
        raise RuntimeError(
            READ_MISMATCH.format(asked=len(ids), what="responses", got=len(got))
        )
    return pa.array(texts, pa.string())


def evaluation_keys(project: Project) -> np.ndarray:
    """Normalised keys (S16) of the project's evaluation (held-out) prompts."""
    from exports.columns import prompt_keys

    ids = np.array(
        Prompt.objects.filter(project=project, split=Split.HELDOUT)
        .order_by("id")
        .values_list("id", flat=True),
        dtype=np.int64,
    )
    keys = [
        prompt_keys(read_prompts(ids[start : start + CHUNK_SIZE]).text)
        for start in range(0, len(ids), CHUNK_SIZE)
    ]
    return distinct(np.concatenate(keys)) if keys else np.zeros(0, dtype="S16")


def prompt_splits(plan: ExportPlan, index: np.ndarray, prompts) -> np.ndarray:
    """Assign keys and splits from read prompts to comparisons `index`; keep some.

    Returns the comparisons of `index` still kept (see `ExportPlan.assign_prompts`),
    and the position of each comparison's prompt in `prompts`.
    """
    from exports.columns import in_test_split, prompt_keys

    config = plan.config
    keys = prompt_keys(prompts.text)
    test = in_test_split(keys, seed=config.seed, fraction=config.heldout_fraction)
    where = np.searchsorted(prompts.ids, plan.prompt_ids[index])
    return plan.assign_prompts(index, keys[where], test[where])


def export_preview(project: Project, config: ExportConfig) -> dict:
    """Counts a snapshot with these settings would have now (nothing is written).

    Reads the integer columns and the prompts of the kept comparisons (each distinct
    prompt once; no response text), within `PREVIEW_TIMEOUT_MS` per statement on
    PostgreSQL.
    """
    with consistent_read(timeout_ms=PREVIEW_TIMEOUT_MS):
        plan = export_plan(project, config)
        pending = plan.pending()
        by_prompt = pending[np.argsort(plan.prompt_ids[pending], kind="stable")]
        sorted_ids = plan.prompt_ids[by_prompt]
        prompt_ids = distinct(sorted_ids)
        for start in range(0, len(prompt_ids), BATCH_COMPARISONS):
            ids = prompt_ids[start : start + BATCH_COMPARISONS]
            low = np.searchsorted(sorted_ids, ids[0], side="left")
            high = np.searchsorted(sorted_ids, ids[-1], side="right")
            prompt_splits(plan, by_prompt[low:high], read_prompts(ids))
    summary = plan.finish()
    return {
        "comparisons": int(len(plan.comparison_ids)),
        "kept_comparisons": int(plan.kept.sum()),
        "judgments": int(len(summary.judgment_ids)),
        "counts": plan.row_counts(),
        "dropped": summary.dropped,
    }


# --- snapshots ----------------------------------------------------------------------


def snapshots_for(project: Project):
    return DatasetSnapshot.objects.filter(project=project).select_related("created_by")


def snapshot_judgment_ids(snapshot: DatasetSnapshot) -> np.ndarray:
    """The ids of the judgments a snapshot used, ascending (empty if none stored)."""
    row = SnapshotJudgmentIds.objects.filter(snapshot=snapshot).first()
    if row is None:
        return np.zeros(0, dtype=np.int64)
    return judgment_ids.decode(row.encoded)


def _snapshot_path(snapshot: DatasetSnapshot) -> Path | None:
    if not snapshot.output_dir:
        return None
    path = Path(snapshot.output_dir)
    return path if path.is_dir() else None


def snapshot_card_html(snapshot: DatasetSnapshot) -> str:
    """The dataset card as sanitised HTML (YAML front matter left out), or ""."""
    import markdown
    import nh3

    path = _snapshot_path(snapshot)
    if path is None or not (path / "README.md").is_file():
        return ""
    text = (path / "README.md").read_text(encoding="utf-8")
    if text.startswith("---\n"):
        text = text.split("\n---\n", 1)[-1]
    return nh3.clean(markdown.markdown(text, extensions=["tables", "fenced_code"]))


def snapshot_zip_name(snapshot: DatasetSnapshot) -> str:
    return f"{snapshot.project.slug}-snapshot-{snapshot.pk}.zip"


def snapshot_zip(snapshot: DatasetSnapshot):
    """A temporary file (deleted when closed) holding the snapshot folder as a zip."""
    from exports.writers import write_zip

    path = _snapshot_path(snapshot)
    if path is None:
        raise FileNotFoundError(SNAPSHOT_FILES_GONE.format(pk=snapshot.pk))
    out = tempfile.TemporaryFile()  # noqa: SIM115 (closed by FileResponse)
    write_zip(path, out, prefix=snapshot_zip_name(snapshot)[:-4])
    out.seek(0)
    return out
