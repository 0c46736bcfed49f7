"""Reads behind an export: one consistent database snapshot, streamed in chunks.

`export_plan` is the first pass: compact integer arrays of comparisons and votes
(about 30 bytes per judgment, no text), aggregated into one label per comparison,
with the split of every prompt and the reason for every drop. The preview page shows
its counts; the export's second pass (`pair_stream`) streams the texts of the kept
comparisons in the same order.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, IntegerField, Value, When
from django.db.models.functions import Coalesce

from annotation.models import Choice, Comparison, Judgment, Project, Prompt, Split
from exports import aggregation as agg
from exports.formats import ExportConfig
from exports.hygiene import digest, label_distribution, normalise_text
from exports.models import DatasetSnapshot

CHUNK_SIZE = 5_000
CHOICE_CODE = {
    Choice.FIRST: agg.FIRST,
    Choice.SECOND: agg.SECOND,
    Choice.TIE: agg.TIE,
    Choice.BOTH_BAD: agg.BOTH_BAD,
}
PRIOR_NAME = "(imported prior labels)"
SNAPSHOT_FILES_GONE = "The files of snapshot {pk} are no longer on disk."


@contextmanager
def consistent_read():
    """Run every read inside one database snapshot.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction, so judgments committed
    while the export runs are invisible and a half-written one never shows. SQLite in
    WAL mode: one deferred read transaction, which also reads a single snapshot without
    taking the write lock (so annotators keep submitting). Inside an outer transaction
    (tests) the outer one already fixes what is read.
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


def prompt_text(messages: list[dict]) -> str:
    """The conversation as one string, roles included (the basis of prompt keys)."""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def prompt_key(messages: list[dict]) -> bytes:
    """Digest of the normalised prompt: equal keys mean "the same prompt"."""
    return digest(normalise_text(prompt_text(messages)))


def in_test_split(key: bytes, *, seed: int, fraction: float) -> bool:
    """Hash the normalised prompt with the seed: stable, independent of other rows."""
    if fraction <= 0:
        return False
    h = hashlib.sha256(f"{seed}:".encode() + key).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


@dataclass
class ExportPlan:
    """Aggregated labels and split of every comparison of a project (no text)."""

    comparison_ids: np.ndarray  # sorted int64
    prompt_ids: np.ndarray
    first_ids: np.ndarray
    second_ids: np.ndarray
    counts: np.ndarray  # (n, 4) votes first, second, tie, both_bad
    label: np.ndarray  # int8, NO_LABEL where dropped
    agreement: np.ndarray
    confidence: np.ndarray
    kept: np.ndarray  # bool: produces rows
    dropped: dict
    judgment_ids: list
    annotators: dict
    evaluation_keys: set

    def index_of(self, comparison_id: int) -> int:
        return int(np.searchsorted(self.comparison_ids, comparison_id))


def _int_columns(query, names: list[str]) -> dict[str, np.ndarray]:
    """Read integer columns of `query` (a values_list queryset) into NumPy arrays.

    PostgreSQL: one `COPY ... TO STDOUT` streamed into a buffer and parsed by pyarrow
    (C speed, about 30 bytes per row). Other databases: the ORM iterator in chunks.
    Both run inside the caller's transaction, so they read its snapshot.
    """
    if connection.vendor == "postgresql":
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        sql, params = query.query.sql_with_params()
        buffer = io.BytesIO()
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(
                f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params
            ) as copy,
        ):
            for chunk in copy:
                buffer.write(chunk)
        if buffer.tell() == 0:
            return {name: np.zeros(0, dtype=np.int64) for name in names}
        buffer.seek(0)
        table = pa_csv.read_csv(
            buffer,
            read_options=pa_csv.ReadOptions(column_names=names),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.int64() for name in names}
            ),
        )
        return {name: table[name].to_numpy() for name in names}
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
    query = (
        Comparison.objects.filter(project=project)
        .order_by("id")
        .annotate(
            gold_code=_choice_code("gold_choice"),
            is_evaluation=Case(
                When(prompt__split=Split.HELDOUT, then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            ),
        )
        .values_list(
            "id",
            "prompt_id",
            "response_a_id",
            "response_b_id",
            "gold_code",
            "is_evaluation",
        )
    )
    return _int_columns(query, ["id", "prompt", "a", "b", "gold", "eval"])


def _vote_arrays(project: Project, include_prior: bool) -> dict[str, np.ndarray]:
    query = Judgment.objects.filter(comparison__project=project)
    if not include_prior:
        query = query.filter(origin=Judgment.Origin.HUMAN)
    query = (
        query.order_by("comparison_id", "id")
        .annotate(
            label_code=_choice_code("choice"),
            worker=Coalesce("annotator_id", Value(-1), output_field=BigIntegerField()),
            side=Case(
                When(left_is_first=True, then=Value(1)),
                When(left_is_first=False, then=Value(0)),
                default=Value(-1),
                output_field=IntegerField(),
            ),
        )
        .values_list("id", "comparison_id", "worker", "label_code", "side")
    )
    return _int_columns(query, ["id", "comparison", "annotator", "label", "left"])


def evaluation_keys(project: Project) -> set[bytes]:
    """Normalised keys of the project's evaluation (held-out) prompts."""
    rows = (
        Prompt.objects.filter(project=project, split=Split.HELDOUT)
        .values_list("messages", flat=True)
        .iterator(chunk_size=CHUNK_SIZE)
    )
    return {prompt_key(messages) for messages in rows}


def _prompt_keys(project: Project, prompt_ids: np.ndarray) -> dict[int, bytes]:
    """Keys of the given prompts (the preview's split assignment)."""
    wanted = set(prompt_ids.tolist())
    rows = (
        Prompt.objects.filter(project=project)
        .exclude(split=Split.HELDOUT)
        .order_by("id")
        .values_list("id", "messages")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    return {pid: prompt_key(messages) for pid, messages in rows if pid in wanted}


def _annotator_names(ids: np.ndarray) -> list[str]:
    User = get_user_model()
    names = dict(
        User.objects.filter(pk__in=[int(i) for i in ids if i >= 0]).values_list(
            "pk", User.USERNAME_FIELD
        )
    )
    return [PRIOR_NAME if i < 0 else names.get(int(i), f"user {i}") for i in ids]


def export_plan(project: Project, config: ExportConfig) -> ExportPlan:
    """Aggregate every comparison of `project` and decide what is kept.

    No text is read: the split of each kept comparison is decided from its prompt's
    text in the second pass (`assign_split`), or here by `with_splits` for previews.
    Call inside `consistent_read()` together with `pair_stream` so both passes see
    the same judgments.
    """
    comp = _comparison_arrays(project)
    votes = _vote_arrays(project, config.include_prior)
    n = len(comp["id"])
    item = np.searchsorted(comp["id"], votes["comparison"])
    worker_ids, worker = np.unique(votes["annotator"], return_inverse=True)
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
    total = counts.sum(axis=1)

    negatives = config.format == "unpaired" and config.both_bad_as_negatives
    reasons = np.array(agg.REASONS, dtype=object)[result.reason]
    reasons[(reasons == "") & (total < config.min_votes)] = "too_few_votes"
    labelled = reasons == ""
    reasons[labelled & (result.label == agg.TIE)] = "tie"
    if not negatives:
        reasons[labelled & (result.label == agg.BOTH_BAD)] = "both_bad"
    reasons[comp["eval"] == 1] = "evaluation_prompt"
    kept = reasons == ""
    label = np.where(kept, result.label, agg.NO_LABEL).astype(np.int8)
    names = _annotator_names(worker_ids)
    return ExportPlan(
        comparison_ids=comp["id"],
        prompt_ids=comp["prompt"],
        first_ids=comp["a"],
        second_ids=comp["b"],
        counts=counts,
        label=label,
        agreement=agg.agreement(counts, label),
        confidence=result.confidence,
        kept=kept,
        dropped=dict(sorted(Counter(reasons[~kept].tolist()).items())),
        judgment_ids=votes["id"][kept[item]].tolist() if n else [],
        annotators=label_distribution(
            worker, votes["label"], votes["left"], label, item, names
        ),
        evaluation_keys=evaluation_keys(project),
    )


def split_names(config: ExportConfig) -> list[str]:
    return ["train", "test"] if config.heldout_fraction > 0 else ["train"]


def preview_row_counts(project: Project, plan: ExportPlan, config: ExportConfig):
    """Rows each split would hold (the split decided exactly as the export does)."""
    keys = _prompt_keys(project, plan.prompt_ids[plan.kept])
    test = np.array(
        [
            bool(k)
            and in_test_split(
                keys[pid], seed=config.seed, fraction=config.heldout_fraction
            )
            for k, pid in zip(plan.kept, plan.prompt_ids.tolist(), strict=True)
        ],
        dtype=bool,
    )
    chosen = np.where(plan.label == agg.SECOND, plan.second_ids, plan.first_ids)
    out = {}
    for split in split_names(config):
        mask = plan.kept & (test if split == "test" else ~test)
        if config.format == "unpaired":
            out[split] = int(mask.sum()) * 2
        elif config.format == "sft":
            out[split] = len(np.unique(chosen[mask]))
        else:
            out[split] = int(mask.sum())
    return out


def pair_stream(project: Project) -> Iterator[tuple]:
    """Stream (comparison id, prompt id, messages, first text, second text) by id."""
    return (
        Comparison.objects.filter(project=project)
        .order_by("id")
        .values_list(
            "id",
            "prompt_id",
            "prompt__messages",
            "response_a__text",
            "response_b__text",
        )
        .iterator(chunk_size=CHUNK_SIZE // 5)
    )


def export_preview(project: Project, config: ExportConfig) -> dict:
    """Counts a snapshot with these settings would have now (nothing is written)."""
    with consistent_read():
        plan = export_plan(project, config)
        counts = preview_row_counts(project, plan, config)
    return {
        "comparisons": int(len(plan.comparison_ids)),
        "kept_comparisons": int(plan.kept.sum()),
        "judgments": len(plan.judgment_ids),
        "counts": counts,
        "dropped": plan.dropped,
    }


def snapshots_for(project: Project):
    return DatasetSnapshot.objects.filter(project=project).select_related("created_by")


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
