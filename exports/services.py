"""Create and build dataset snapshots (the only writers of `DatasetSnapshot`).

`snapshot_create` records a pending snapshot and queues `exports.tasks.build_snapshot`
for the worker once the row is committed; `snapshot_build` does the work (worker and
`manage.py export_preferences`): one consistent read of the database, rows streamed
into a temporary folder beside the destination, which is renamed into place only when
everything, checksums included, is written. A failure removes the temporary folder
and records the error on the row.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import Project
from exports import writers
from exports.card import render_card
from exports.formats import (
    ExportConfig,
    LabelledPair,
    arrow_schema,
    rows_for,
    text_fields,
)
from exports.hygiene import HygieneAccumulator
from exports.models import DatasetSnapshot, SnapshotStatus
from exports.selectors import (
    consistent_read,
    export_plan,
    in_test_split,
    pair_stream,
    prompt_key,
    split_names,
)

logger = logging.getLogger(__name__)

OUT_DIR_NOT_EMPTY = "Output folder {path} exists and is not empty; choose a new one."
SNAPSHOT_NOT_PENDING = "Snapshot {pk} is {status}; only a pending snapshot is built."
TOKENIZER_MISSING = "No tokenizer.json at {path}."
STREAM_MISMATCH = (
    "Comparison {got} arrived where {expected} was expected: the two reads did not "
    "see the same database snapshot."
)


def snapshot_root() -> Path:
    return Path(settings.DATA_DIR) / "snapshots"


@dataclass(frozen=True)
class BuildResult:
    counts: dict
    dropped: dict
    judgment_ids: list
    hygiene: dict
    content_sha256: str
    timings: dict  # seconds per stage (the benchmark reports them)


@transaction.atomic
def snapshot_create(
    *, project: Project, user, config: ExportConfig, name: str = ""
) -> DatasetSnapshot:
    """Record a pending snapshot and queue its build for the worker."""
    from exports.tasks import build_snapshot

    snapshot = _snapshot_row(project=project, user=user, config=config, name=name)
    transaction.on_commit(lambda: build_snapshot.enqueue(snapshot.pk))
    return snapshot


def snapshot_export(
    *, project: Project, user, config: ExportConfig, out_dir: Path, name: str = ""
) -> DatasetSnapshot:
    """Create a snapshot row and build it now into `out_dir` (the command's path)."""
    out_dir = Path(out_dir).resolve()
    _check_destination(out_dir)
    with transaction.atomic():
        snapshot = _snapshot_row(project=project, user=user, config=config, name=name)
    return snapshot_build(snapshot=snapshot, out_dir=out_dir)


def _snapshot_row(*, project, user, config: ExportConfig, name: str):
    """The pending snapshot's row: what was asked for, by whom (built later)."""
    return DatasetSnapshot.objects.create(
        project=project,
        name=name[:200],
        format=config.format,
        policy=config.policy_dict(),
        filters=config.filters_dict(),
        created_by=user,
    )


def snapshot_build(
    *, snapshot: DatasetSnapshot, out_dir: Path | None = None
) -> DatasetSnapshot:
    """Claim a pending snapshot, write its files and record the outcome.

    The claim is a conditional update, so two workers never build the same row.
    Errors are recorded on the row (status failed) and raised again.
    """
    claimed = DatasetSnapshot.objects.filter(
        pk=snapshot.pk, status=SnapshotStatus.PENDING
    ).update(status=SnapshotStatus.RUNNING)
    snapshot.refresh_from_db()
    if not claimed:
        raise ValueError(
            SNAPSHOT_NOT_PENDING.format(pk=snapshot.pk, status=snapshot.status)
        )
    if out_dir is None:
        out_dir = snapshot_root() / snapshot.project.slug / str(snapshot.pk)
    out_dir = Path(out_dir).resolve()
    config = ExportConfig.from_parts(
        format=snapshot.format, policy=snapshot.policy, filters=snapshot.filters
    )
    try:
        _check_destination(out_dir)
        result = build_files(project=snapshot.project, config=config, out_dir=out_dir)
    except Exception as exc:
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(
            status=SnapshotStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        raise
    logger.info("snapshot %s built: %s", snapshot.pk, {"timings": result.timings})
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(
        status=SnapshotStatus.SUCCEEDED,
        output_dir=str(out_dir),
        counts=result.counts,
        dropped=result.dropped,
        judgment_ids=result.judgment_ids,
        hygiene=result.hygiene,
        content_sha256=result.content_sha256,
        finished_at=timezone.now(),
        error="",
    )
    snapshot.refresh_from_db()
    return snapshot


@transaction.atomic
def snapshot_delete(*, snapshot: DatasetSnapshot) -> None:
    """Delete a snapshot row and, once that is committed, its files."""
    path = Path(snapshot.output_dir) if snapshot.output_dir else None
    snapshot.delete()
    if path is not None and path.is_relative_to(snapshot_root()):
        transaction.on_commit(lambda: shutil.rmtree(path, ignore_errors=True))


def _check_destination(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(OUT_DIR_NOT_EMPTY.format(path=out_dir))


def _token_counter(config: ExportConfig):
    if not config.tokenizer_path:
        return None
    from tokenizers import Tokenizer

    path = Path(config.tokenizer_path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ValueError(TOKENIZER_MISSING.format(path=path))
    tokenizer = Tokenizer.from_file(str(path))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def build_files(
    *, project: Project, config: ExportConfig, out_dir: Path
) -> BuildResult:
    """Write every file of a snapshot into `out_dir` (which must not exist yet)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        result = _write_all(project=project, config=config, root=tmp / "snapshot")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked before
        (tmp / "snapshot").rename(out_dir)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_all(*, project: Project, config: ExportConfig, root: Path) -> BuildResult:
    root.mkdir()
    clock = time.perf_counter()
    timings = {}
    schema = arrow_schema(config)
    hygiene = HygieneAccumulator(
        max_chars=config.max_chars,
        max_tokens=config.max_tokens,
        count_tokens=_token_counter(config),
    )
    with consistent_read():
        plan = export_plan(project, config)
        timings["plan"] = time.perf_counter() - clock
        names = split_names(config)
        split_writers = {s: writers.SplitWriter(root, s, schema) for s in names}
        sft_seen: set[int] = set()
        # Both passes read the same snapshot ordered by id: row i is comparison i.
        ids = plan.comparison_ids.tolist()
        kept = plan.kept.tolist()
        last_prompt, key, split = None, b"", "train"
        labels, counts = plan.label.tolist(), plan.counts.tolist()
        agreement, confidence = plan.agreement.tolist(), plan.confidence.tolist()
        first_ids, second_ids = plan.first_ids.tolist(), plan.second_ids.tolist()
        stream = pair_stream(project)
        for i, (cid, pid, messages, first_text, second_text) in enumerate(stream):
            if cid != ids[i]:
                raise RuntimeError(STREAM_MISMATCH.format(expected=ids[i], got=cid))
            if not kept[i]:
                continue
            if pid != last_prompt:
                last_prompt, key = pid, prompt_key(messages)
                split = (
                    "test"
                    if in_test_split(
                        key, seed=config.seed, fraction=config.heldout_fraction
                    )
                    else "train"
                )
            pair = LabelledPair(
                prompt_id=pid,
                comparison_id=cid,
                messages=messages,
                first_id=first_ids[i],
                first_text=first_text,
                second_id=second_ids[i],
                second_text=second_text,
                label=labels[i],
                counts=counts[i],
                agreement=agreement[i],
                confidence=confidence[i],
            )
            hygiene.add_prompt(split=split, prompt_key=key, prompt_id=pid)
            if pair.label in (0, 1):
                _, chosen, _, rejected, _, _ = pair.oriented()
                hygiene.add_pair(
                    comparison_id=cid, prompt_key=key, chosen=chosen, rejected=rejected
                )
            for row in rows_for(pair, config, sft_seen):
                hygiene.add_row(row_id=cid, texts=text_fields(row))
                split_writers[split].add(row)
        for writer in split_writers.values():
            writer.close()
    timings["rows_parquet_jsonl"] = time.perf_counter() - clock - timings["plan"]
    counts = {s: w.rows for s, w in split_writers.items()}
    report = hygiene.report(
        evaluation_keys=plan.evaluation_keys, annotators=plan.annotators
    )
    mark = time.perf_counter()
    writers.write_dataset_dict(root, names, cache_dir=root.parent / "cache")
    timings["dataset_dict"] = time.perf_counter() - mark
    writers.write_json(root / "hygiene.json", report)
    card = render_card(
        project_name=project.name,
        project_slug=project.slug,
        config=config,
        counts=counts,
        dropped=plan.dropped,
        judgments=len(plan.judgment_ids),
        hygiene=report,
        columns=schema.names,
    )
    (root / "README.md").write_text(card, encoding="utf-8")
    sha = writers.write_checksums(root)
    timings["total"] = time.perf_counter() - clock
    return BuildResult(
        counts=counts,
        dropped=plan.dropped,
        judgment_ids=plan.judgment_ids,
        hygiene=report,
        content_sha256=sha,
        timings=timings,
    )
