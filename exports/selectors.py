"""Reads behind an export: one consistent database snapshot, read in columns.

`export_plan` is the first pass: compact integer arrays of comparisons and votes
(a few dozen bytes per judgment, no text), aggregated into one label per comparison with
the reason for every drop that the votes decide. The second pass reads, batch by
batch, only the texts of the comparisons kept (`read_prompts`, `read_responses`):
each distinct prompt and response of a batch once. The prompts give each comparison
its normalised prompt key, hence its split, and drop comparisons whose prompt equals
an evaluation prompt (`ExportPlan.assign_prompts`). The preview runs the same two
steps but reads only prompts (`export_preview`).

PostgreSQL reads go through `COPY (SELECT array_agg(...), string_agg(...) ...) TO
STDOUT (FORMAT binary)` inside one REPEATABLE READ snapshot, shared by a second
connection (`consistent_read`) so that two backends read at once: the first pass
as packed int8 words per table block range (`_first_pass_postgresql`, parsed by
NumPy without a per-row step), the texts per batch (prompts as JSON lines parsed
by pyarrow, responses as one concatenated text plus packed ids and lengths, taken
as an Arrow array as they are). Other databases read through the cursor and build
the prompt columns with the row-wise Python functions; both give the same columns
(a test compares them).
"""

from __future__ import annotations

import io
import json
import queue
import tempfile
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, IntegerField, Value, When
from django.db.models.functions import Cast, Coalesce

from annotation.models import (
    Choice,
    Comparison,
    Judgment,
    Project,
    Prompt,
    Response,
    Split,
)
from exports import aggregation as agg
from exports import judgment_ids, pgcopy
from exports.arrays import distinct, factorise, positions
from exports.formats import ExportConfig, SettingsError, load_tokenizer
from exports.hygiene import label_distribution
from exports.models import DatasetSnapshot, SnapshotJudgmentIds
from exports.signals import export_stage

CHUNK_SIZE = 5_000
BLOCKS_PER_PART = 1 << 16  # table blocks per aggregated COPY (<= 19M rows)
TEXT_CHUNK = 20_000  # prompts or responses per aggregated COPY of texts
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
IDS_TOO_WIDE = "The ids of {table} span more than 2**63; they cannot be exported."
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
    (`timeout_ms` bounds every statement, for the preview; JIT is off). A second
    connection (`EXPORT_READ_CONNECTIONS`, default 2) imports that transaction's
    snapshot (`pg_export_snapshot`, as `pg_dump --jobs` does), so the first pass
    reads on two backends at once and still sees exactly the same rows. SQLite in
    WAL mode: one deferred read transaction, whose snapshot is fixed by its first
    read and which does not take the write lock (so annotators keep submitting).
    Inside an outer transaction (tests) the outer one already fixes what is read,
    and only its own connection reads (another could not see its rows).
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
                for statement in _session_settings(timeout_ms):
                    cursor.execute(statement)
                snapshot_id = None
                if _read_connections() > 1:
                    cursor.execute("SELECT pg_export_snapshot()")
                    snapshot_id = cursor.fetchone()[0]
            peers = []
            try:
                if snapshot_id is not None:
                    export_stage.send(sender=ExportPlan, stage="snapshot", project=None)
                    peers.append(_open_peer(snapshot_id, timeout_ms))
                token = _PEERS.set(tuple(peers))
                try:
                    yield
                finally:
                    _PEERS.reset(token)
            finally:
                for peer in peers:
                    peer.close()
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("COMMIT")


# Connections besides Django's that read the current `consistent_read` snapshot.
_PEERS: ContextVar[tuple] = ContextVar("export_read_peers", default=())


def _read_connections() -> int:
    return max(1, int(getattr(settings, "EXPORT_READ_CONNECTIONS", 2)))


def _session_settings(timeout_ms: int | None) -> list[str]:
    # The reads are a few large scans and joins: compiling them costs more than it
    # saves, and hash tables should stay in memory.
    statements = ["SET LOCAL jit = off", "SET LOCAL work_mem = '64MB'"]
    if timeout_ms:
        statements.append(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
    return statements


def _open_peer(snapshot_id: str, timeout_ms: int | None):
    """A new psycopg connection in a read-only transaction on `snapshot_id`."""
    import psycopg
    from psycopg import sql

    peer = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        peer.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        peer.execute(
            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))
        )
        for statement in _session_settings(timeout_ms):
            peer.execute(statement)
    except BaseException:
        peer.close()
        raise
    return peer


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


def read_connections() -> list:
    """The psycopg connections that read the current `consistent_read` snapshot:
    Django's, then its peers. A caller may use each from one thread of its own
    while it makes no query itself."""
    return [_raw_connection(), *_PEERS.get()]


def _copy_each(statements: list[tuple[str, list]], parse) -> list:
    """`parse(bytes)` of each `COPY (...) TO STDOUT` statement, in order.

    The statements run on every connection of the snapshot at once (Django's and
    its peers), each taking the next statement left; the caller's thread waits
    and makes no query meanwhile.
    """
    raws = read_connections()
    if len(raws) == 1 or len(statements) < 2:
        return [parse(_copy(sql, params)) for sql, params in statements]
    todo = queue.SimpleQueue()
    for item in enumerate(statements):
        todo.put(item)
    out = [None] * len(statements)

    def work(raw) -> None:
        while True:
            try:
                i, (sql, params) = todo.get_nowait()
            except queue.Empty:
                return
            out[i] = parse(_copy(sql, params, raw))

    with ThreadPoolExecutor(len(raws), thread_name_prefix="export-copy") as pool:
        for future in [pool.submit(work, raw) for raw in raws]:
            future.result()
    return out


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


def _orm_int_columns(query, names: list[str]) -> dict[str, np.ndarray]:
    """Integer columns of `query` (a values_list queryset, in its own order) read
    through the ORM iterator in chunks (databases other than PostgreSQL)."""
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


def _is_dense(comparison_ids: np.ndarray) -> bool:
    """True when the comparisons fill most of their id range (the usual case: a
    project's comparisons are imported together), so their votes can be selected
    by that range without joining the comparisons."""
    if not len(comparison_ids):
        return False
    low, high = int(comparison_ids[0]), int(comparison_ids[-1])
    return len(comparison_ids) >= DENSE_RANGE * (high - low + 1)


def _keep_ours(votes: dict, comparison_ids: np.ndarray) -> dict:
    """Leave out votes on comparisons not in `comparison_ids` (sorted)."""
    if not len(votes["id"]):
        return votes
    ours = np.isin(votes["comparison"], comparison_ids, kind="table")
    return votes if ours.all() else {k: v[ours] for k, v in votes.items()}


def _first_pass(project: Project, config: ExportConfig) -> tuple[dict, dict]:
    """Integer columns of the project's comparisons (by id; `eval` is 1 where the
    prompt is an evaluation prompt) and of the votes on them (by comparison, id)."""
    if connection.vendor == "postgresql":
        return _first_pass_postgresql(project, config)
    comp = _orm_int_columns(
        Comparison.objects.filter(project=project)
        .order_by("id")
        .annotate(gold_code=_choice_code("gold_choice"))
        .values_list("id", "prompt_id", "response_a_id", "response_b_id", "gold_code"),
        ["id", "prompt", "a", "b", "gold"],
    )
    heldout = np.array(
        Prompt.objects.filter(project=project, split=Split.HELDOUT).values_list(
            "id", flat=True
        ),
        dtype=np.int64,
    )
    comp["eval"] = np.isin(comp["prompt"], heldout).astype(np.int64)
    export_stage.send(sender=ExportPlan, stage="comparisons", project=project)
    query = Judgment.objects.all()
    dense = _is_dense(comp["id"])
    if dense:
        query = query.filter(
            comparison_id__gte=int(comp["id"][0]),
            comparison_id__lte=int(comp["id"][-1]),
        )
    else:
        query = query.filter(comparison__project=project)
    if not config.include_prior:
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
    votes = _orm_int_columns(query, ["id", "comparison", "annotator", "label", "left"])
    return comp, _keep_ours(votes, comp["id"]) if dense else votes


# PostgreSQL: the label of a choice is read as the code of its first letter (the
# CHECK constraints allow only the four choices, whose first letters differ).
_LETTER_CODE = np.full(256, agg.NO_LABEL, dtype=np.int64)
for _choice, _code in CHOICE_CODE.items():
    _LETTER_CODE[ord(_choice.value[0])] = _code
assert len({c.value[0] for c in CHOICE_CODE}) == len(CHOICE_CODE)


def _columns_of(model, *names: str) -> dict[str, str]:
    quote = connection.ops.quote_name
    return {
        "table": quote(model._meta.db_table),
        **{name: quote(model._meta.get_field(name).column) for name in names},
    }


def _block_ranges(blocks: int, parts: int) -> list[str]:
    """`ctid` conditions splitting a table's `blocks` into `parts` ranges (a TID
    range scan each); the last range is open-ended."""
    bounds = [blocks * i // parts for i in range(parts)]
    out = []
    for i, low in enumerate(bounds):
        cond = f"ctid >= '({low},0)'::tid"
        if i + 1 < len(bounds):
            cond += f" AND ctid < '({bounds[i + 1]},0)'::tid"
        out.append(cond)
    return out


def _parts(blocks: int) -> int:
    """How many block ranges to read a table in: enough for every connection to
    take a few (none empty), and at most `BLOCKS_PER_PART` blocks each (so that no
    aggregated array comes near PostgreSQL's 1 GB limit)."""
    wanted = max(2 * _read_connections(), -(-blocks // BLOCKS_PER_PART))
    return max(1, min(blocks, wanted))


def _int_arrays(data: bytes) -> list[np.ndarray]:
    """The int64 arrays of the one row of an aggregated binary COPY."""
    return [pgcopy.int_array(value) for value in pgcopy.tuples(data)[0]]


def _packed_read(table: str, where: str, params: list, fields: dict, blocks: int):
    """Statements reading `fields` ({name: (SQL giving 0..span, span)}) of the rows
    of `table` matching `where`, packed into int8 words (`pgcopy.pack_layout`), one
    statement per block range; and a function turning their results into columns
    (sorted by the fields from the last one back where they fit in one word).
    """
    layout = pgcopy.pack_layout({name: span for name, (_, span) in fields.items()})
    if layout is None:  # only ids spanning more than 2**63 (negative ids)
        raise RuntimeError(IDS_TOO_WIDE.format(table=table))
    words = pgcopy.pack_sql(layout, {name: sql for name, (sql, _) in fields.items()})
    aggregates = ", ".join(f"array_agg({word})" for word in words)
    statements = [
        (
            f"COPY (SELECT {aggregates} FROM {table} WHERE {part} AND {where}) "
            "TO STDOUT (FORMAT binary)",
            params,
        )
        for part in _block_ranges(blocks, _parts(blocks))
    ]

    def columns(results: list) -> dict[str, np.ndarray]:
        parts = [
            np.concatenate([r[i] for r in results]) if results else np.zeros(0, int)
            for i in range(len(layout))
        ]
        if len(parts) == 1:
            # One word: its order is that of the last field, then the one before...
            parts[0].sort(kind="stable")
        return pgcopy.unpack(layout, parts)

    return statements, columns


def _first_pass_postgresql(project: Project, config: ExportConfig):
    """The first pass as a few `COPY (SELECT array_agg(...)) TO STDOUT (FORMAT
    binary)` statements, one per block range of each table, run on every
    connection of the snapshot at once.

    Aggregating an array costs PostgreSQL about 0.15 microseconds per element, the
    dominant cost here, so each row's fields are packed into as few int8 words as
    their ranges allow (`pgcopy.pack_layout`): ids as offsets from the smallest id
    of their table (read from the primary keys' indexes; the foreign keys bound
    the ids a row refers to), the choice as the code of its first letter,
    left_is_first as 0, 1 or 2 (null). A vote of the benchmark is one word.
    """
    c = _columns_of(
        Comparison, "id", "project", "prompt", "response_a", "response_b", "gold_choice"
    )
    j = _columns_of(
        Judgment, "id", "comparison", "annotator", "choice", "left_is_first", "origin"
    )
    p = _columns_of(Prompt, "id", "project", "split")
    r = _columns_of(Response, "id")
    blocks = "pg_relation_size(%s::regclass) / current_setting('block_size')::int"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min({c['id']}), max({c['id']}), count(*), {blocks}, {blocks}, "
            f"(SELECT min({j['id']}) FROM {j['table']}), "
            f"(SELECT max({j['id']}) FROM {j['table']}), "
            f"(SELECT min({j['annotator']}) FROM {j['table']}), "
            f"(SELECT max({j['annotator']}) FROM {j['table']}), "
            f"(SELECT min({p['id']}) FROM {p['table']}), "
            f"(SELECT max({p['id']}) FROM {p['table']}), "
            f"(SELECT min({r['id']}) FROM {r['table']}), "
            f"(SELECT max({r['id']}) FROM {r['table']}) "
            f"FROM {c['table']} WHERE {c['project']} = %s",
            [Comparison._meta.db_table, Judgment._meta.db_table, project.pk],
        )
        bounds = [0 if v is None else v for v in cursor.fetchone()]
    low, high, count, comparison_blocks, judgment_blocks = bounds[:5]
    id_low, id_high, ann_low, ann_high, p_low, p_high, r_low, r_high = bounds[5:]
    export_stage.send(sender=ExportPlan, stage="comparisons", project=project)
    if not count:
        return _empty_first_pass()
    gold = config.policy == "gold_weighted"
    comparison_fields = {
        "id": (f"{c['id']} - {low}", high - low),
        "prompt": (f"{c['prompt']} - {p_low}", p_high - p_low),
        "a": (f"{c['response_a']} - {r_low}", r_high - r_low),
        "b": (f"{c['response_b']} - {r_low}", r_high - r_low),
    }
    if gold:
        comparison_fields["gold"] = (f"coalesce(ascii({c['gold_choice']}), 0)", 255)
    statements, comparison_columns = _packed_read(
        c["table"],
        f"{c['project']} = %s",
        [project.pk],
        comparison_fields,
        comparison_blocks,
    )
    n_comparison = len(statements)
    statements.append(
        (
            f"COPY (SELECT array_agg({p['id']}) FROM {p['table']} "
            f"WHERE {p['project']} = %s AND {p['split']} = %s) "
            "TO STDOUT (FORMAT binary)",
            [project.pk, Split.HELDOUT.value],
        )
    )
    dense = count >= DENSE_RANGE * (high - low + 1)
    if dense:
        where, params = f"{j['comparison']} BETWEEN %s AND %s", [low, high]
    else:
        where = (
            f"{j['comparison']} IN (SELECT {c['id']} FROM {c['table']} "
            f"WHERE {c['project']} = %s)"
        )
        params = [project.pk]
    if not config.include_prior:
        where += f" AND {j['origin']} = %s"
        params = [*params, Judgment.Origin.HUMAN.value]
    vote_statements, vote_columns = _packed_read(
        j["table"],
        where,
        params,
        {
            "left": (f"coalesce({j['left_is_first']}::int, 2)", 2),
            "choice": (f"ascii({j['choice']}) & 255", 255),
            "annotator": (
                f"coalesce({j['annotator']} - {ann_low} + 1, 0)",
                ann_high - ann_low + 1,
            ),
            "id": (f"{j['id']} - {id_low}", id_high - id_low),
            "comparison": (f"{j['comparison']} - {low}", high - low),
        },
        judgment_blocks,
    )
    results = _copy_each(statements + vote_statements, _int_arrays)
    comp = comparison_columns(results[:n_comparison])
    comp = {
        "id": comp["id"] + low,
        "prompt": comp["prompt"] + p_low,
        "a": comp["a"] + r_low,
        "b": comp["b"] + r_low,
        "gold": (
            _LETTER_CODE[comp["gold"]]
            if gold
            else np.full(len(comp["id"]), agg.NO_LABEL, dtype=np.int64)
        ),
    }
    comp = _sort_by(comp, ["id"])
    if len(comp["id"]) != count:
        raise RuntimeError(
            READ_MISMATCH.format(asked=count, what="comparisons", got=len(comp["id"]))
        )
    comp["eval"] = np.isin(comp["prompt"], results[n_comparison][0]).astype(np.int64)
    packed = vote_columns(results[n_comparison + 1 :])
    votes = {
        "id": packed["id"] + id_low,
        "comparison": packed["comparison"] + low,
        "annotator": np.where(
            packed["annotator"] == 0, -1, packed["annotator"] - 1 + ann_low
        ),
        "label": _LETTER_CODE[packed["choice"]],
        "left": np.where(packed["left"] == 2, -1, packed["left"]),
    }
    votes = _sort_by(votes, ["comparison", "id"])
    return comp, _keep_ours(votes, comp["id"]) if dense else votes


def _empty_first_pass() -> tuple[dict, dict]:
    empty = np.zeros(0, dtype=np.int64)
    comp = dict.fromkeys(["id", "prompt", "a", "b", "gold", "eval"], empty)
    votes = dict.fromkeys(["id", "comparison", "annotator", "label", "left"], empty)
    return comp, votes


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
    reads of the second pass so that every read sees the same judgments. Raises
    `SettingsError` on `policy` when the votes defeat it (Dawid-Skene not
    converging).
    `signals.export_stage` is sent after each of the two reads.
    """
    comp, votes = _first_pass(project, config)
    export_stage.send(sender=ExportPlan, stage="votes", project=project)
    n = len(comp["id"])
    item = positions(comp["id"], votes["comparison"])
    worker_ids, worker = factorise(votes["annotator"])
    try:
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
    except agg.ConvergenceError as exc:  # the votes defeat the chosen policy
        raise SettingsError({"policy": str(exc)}) from exc
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


def _aggregated(
    columns: str, source: str, table: str, ids: np.ndarray, raw, *, packed=False
) -> Iterator[tuple]:
    """Yield (chunk of `ids`, positions of the chunk in the rows read, the packed
    values or None, the fields of the one aggregate row `SELECT {columns} FROM
    (SELECT id, {source} FROM {table} WHERE ... ORDER BY id)`) per chunk of up to
    `TEXT_CHUNK` ids.

    The first aggregate gives the ids read: `array_agg(id)`, or with `packed`
    `array_agg(((id - {low}) << 32) | value)` with a value below 2**32 (one
    array instead of two: PostgreSQL's cost is per element). The subquery gives
    the rows in id order (an index range scan needs no sort), so the aggregates
    need no ORDER BY of their own (each would sort); the ids read are checked to
    come ascending. A chunk whose ids fill most of their range is read as that
    range of ids (the few rows between are read and left out here), any other as
    `id = ANY(...)`, one index probe per id (about twice the database time). The
    ids go as one array literal: psycopg's list adapter costs a few microseconds
    per element, more than the rest of the read. A chunk whose aggregate passes
    PostgreSQL's 1 GB limit on one value is read again as two halves
    (`_copy_within_limit`).
    """
    for start in range(0, len(ids), TEXT_CHUNK):
        for chunk, data in _copy_within_limit(
            columns, source, table, ids[start : start + TEXT_CHUNK], raw, packed
        ):
            fields = pgcopy.tuples(data)[0]
            got, values = pgcopy.int_array(fields[0]), None
            if packed:
                got, values = (got >> 32) + int(chunk[0]), got & 0xFFFFFFFF
            at = np.minimum(np.searchsorted(got, chunk), max(len(got) - 1, 0))
            if (
                len(got) == 0
                or not (got[1:] > got[:-1]).all()
                or not np.array_equal(got[at], chunk)
            ):
                raise RuntimeError(
                    READ_MISMATCH.format(asked=len(chunk), what=table, got=len(got))
                )
            yield chunk, at, values, fields


def _copy_within_limit(
    columns: str, source: str, table: str, chunk, raw, packed: bool
) -> list:
    """[(chunk, COPY bytes)] of one aggregated read of `chunk`, or of its halves
    (recursively) where PostgreSQL refuses a value over its limit, or where packed
    ids would not fit in 31 bits. The read runs in a savepoint, so a refusal
    leaves the snapshot's transaction usable."""
    from psycopg import errors

    low, high = int(chunk[0]), int(chunk[-1])
    if packed and high - low >= 1 << 31:
        return _halves(columns, source, table, chunk, raw, packed)
    if len(chunk) >= DENSE_RANGE * (high - low + 1):
        where, params = f"id BETWEEN {low} AND {high}", None
    else:
        where = "id = ANY(%s::bigint[])"
        params = ["{" + ",".join(map(str, chunk.tolist())) + "}"]
    aggregates = columns.format(low=low) if packed else columns
    sql = (
        f"COPY (SELECT {aggregates} FROM (SELECT id, {source} FROM {table} "
        f"WHERE {where} ORDER BY id) AS q) TO STDOUT (FORMAT binary)"
    )
    raw.execute("SAVEPOINT export_text")
    try:
        data = _copy(sql, params, raw)
    except errors.ProgramLimitExceeded:
        raw.execute("ROLLBACK TO SAVEPOINT export_text")
        if len(chunk) < 2:
            raise
        return _halves(columns, source, table, chunk, raw, packed)
    raw.execute("RELEASE SAVEPOINT export_text")
    return [(chunk, data)]


def _halves(columns, source, table, chunk, raw, packed) -> list:
    half = len(chunk) // 2
    return [
        *_copy_within_limit(columns, source, table, chunk[:half], raw, packed),
        *_copy_within_limit(columns, source, table, chunk[half:], raw, packed),
    ]


PROMPT_COLUMNS = "array_agg(id), string_agg('{\"m\":' || messages::text || '}', E'\\n')"
# Packed: the id (offset) and the byte length of each text in one int8.
RESPONSE_COLUMNS = (
    "array_agg(((id - {low}) << 32) | octet_length(text)), string_agg(text, '')"
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
    for _, at, _, fields in _aggregated(
        PROMPT_COLUMNS, "messages", "annotation_prompt", ids, raw or _raw_connection()
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

    PostgreSQL: per chunk of ids one row holding the ids with the byte length of
    every text (packed) and all texts concatenated: the Arrow array is built from
    those buffers as they are (offsets from the lengths), then checked to be valid
    UTF-8.
    """
    import pyarrow as pa

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return pa.array([], pa.string())
    if raw is None and connection.vendor != "postgresql":
        return _responses_python(ids)
    parts = []
    for chunk, at, sizes, (_, text) in _aggregated(
        RESPONSE_COLUMNS,
        "text",
        "annotation_response",
        ids,
        raw or _raw_connection(),
        packed=True,
    ):
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
    PostgreSQL. A tokenizer is checked as creating the snapshot would check it.
    """
    if config.tokenizer_path:
        load_tokenizer(config.tokenizer_path)
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


def snapshot_files_present(snapshot: DatasetSnapshot) -> bool:
    """Whether the snapshot's folder is still on disk (the row outlives it)."""
    return _snapshot_path(snapshot) is not None


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
    try:
        write_zip(path, out, prefix=snapshot_zip_name(snapshot)[:-4])
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out
