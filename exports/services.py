"""Create and build dataset snapshots (the only writers of `DatasetSnapshot`).

`snapshot_create` records a pending snapshot and queues `exports.tasks.build_snapshot`
for the worker once the row is committed; `snapshot_build` does the work (worker and
`manage.py export_preferences`): one consistent read of the database, rows written
batch by batch into a temporary folder beside the destination, which is renamed into
place only when everything, checksums included, is written. A failure removes the
temporary folder and records the error on the row.

A build killed outright (SIGKILL, power loss) cannot clean up after itself: its row
stays `running` and its temporary folder stays on disk. `snapshot_clean_stale` finds
such runs (the process recorded on the row is gone, or the run is older than
`EXPORT_STALE_AFTER_SECONDS`), marks them failed and removes their temporary folders;
every build runs it for its project first, and `export_preferences --clean-stale`
runs it on demand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from annotation.models import Project
from exports import judgment_ids as ids_codec
from exports import writers
from exports.arrays import distinct
from exports.card import render_card
from exports.formats import ExportConfig, SettingsError, arrow_schema, load_tokenizer
from exports.models import DatasetSnapshot, SnapshotJudgmentIds, SnapshotStatus
from exports.selectors import (
    BATCH_COMPARISONS,
    ExportPlan,
    consistent_read,
    export_plan,
    prompt_splits,
    read_connections,
    read_prompts,
    read_responses,
    split_names,
)
from exports.signals import export_stage

logger = logging.getLogger(__name__)

OUT_DIR_NOT_EMPTY = "Output folder {path} exists and is not empty; choose a new one."
SNAPSHOT_DIR_TAKEN = (
    "The snapshot's folder {path} exists and is not empty: it is not this "
    "database's (snapshot ids restart with a new database while DATA_DIR keeps its "
    "folders). Move it away, or give this database its own DATA_DIR, and create the "
    "snapshot again."
)
OUT_IS_A_FILE = "Output folder {path} is a file; choose a new folder."
OUT_INSIDE_SNAPSHOT = (
    "Output folder {path} lies inside snapshot folder {snapshot}: its files would "
    "join that snapshot (and break its checksums); choose a folder outside it."
)
OUT_UNUSABLE = "Output folder {path} cannot be made: {reason}."
TEXTS_TOO_LARGE = (
    "The texts of one export batch ({batch:,} comparisons) or row group pass "
    "Arrow's 2 GiB limit for one string column, which happens only with texts of "
    "about 100 KB or more each; this export cannot be written yet. (Arrow: {error})"
)
NAME_MAX = 200  # DatasetSnapshot.name
NAME_TOO_LONG = f"A snapshot name has at most {NAME_MAX} characters, got {{length}}."
SNAPSHOT_NOT_PENDING = "Snapshot {pk} is {status}; only a pending snapshot is built."
NO_TRAINING_ROWS = (
    "Nothing to train on: no row is left for the train split ({dropped}); nothing "
    "was written. The preview shows why comparisons are dropped: including prior "
    "labels (include_prior), another policy or more judgments may keep some{hint}."
)
HELD_OUT_HINT = "; with rows only in test, a lower heldout_fraction or another seed"
STALE_RUN = (
    "Interrupted: the build ({worker}) stopped without finishing; marked failed "
    "by {cleaner} on {when}."
)
DEFAULT_STALE_AFTER = 24 * 3600
TMP_MARK = ".tmp-"


def snapshot_root() -> Path:
    return Path(settings.DATA_DIR) / "snapshots"


@dataclass(frozen=True)
class BuildResult:
    counts: dict
    dropped: dict
    judgment_ids: np.ndarray  # ascending int64
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
    """The pending snapshot's row: what was asked for, by whom (built later).

    Settings that name a file are checked first (SettingsError), so a wrong path
    makes no snapshot, and stored absolute: the worker opens them from its own
    working directory."""
    if len(name) > NAME_MAX:
        raise SettingsError({"name": NAME_TOO_LONG.format(length=len(name))})
    if config.tokenizer_path:
        file, _ = load_tokenizer(config.tokenizer_path)
        config = dataclasses.replace(config, tokenizer_path=str(file))
    return DatasetSnapshot.objects.create(
        project=project,
        name=name,
        format=config.format,
        policy=config.policy_dict(),
        filters=config.filters_dict(),
        created_by=user,
    )


# --- stale runs ---------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """Start time of process `pid` (Linux /proc), "?" elsewhere; None if gone."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[19]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def process_tag() -> str:
    """host:pid:start of this process, recorded on the row it builds."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _is_gone(tag: str) -> bool:
    """True when `tag` names a process of this host that no longer runs."""
    host, pid, start = (tag.rsplit(":", 2) + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    now = _process_start(int(pid))
    return now is None or (start != "?" and now != start)


def _temporary_folders(snapshot: DatasetSnapshot) -> list[Path]:
    if not snapshot.output_dir:
        return []
    out = Path(snapshot.output_dir)
    if not out.parent.is_dir():
        return []
    return sorted(out.parent.glob(f".{out.name}{TMP_MARK}{snapshot.pk}-*"))


def snapshot_clean_stale(*, project: Project | None = None) -> list[DatasetSnapshot]:
    """Mark interrupted builds failed and remove their temporary folders.

    A running snapshot is stale when the process recorded on it (host:pid:start) is
    gone from this host, or when it started more than `EXPORT_STALE_AFTER_SECONDS`
    ago (default a day; builds on another host are only judged by age). A complete
    folder of a stale worker build (killed between the rename and the final update)
    is removed too when it lies under the snapshot root; a folder the user chose is
    left. Returns the snapshots marked failed.
    """
    after = getattr(settings, "EXPORT_STALE_AFTER_SECONDS", DEFAULT_STALE_AFTER)
    limit = timezone.now() - timedelta(seconds=after)
    running = DatasetSnapshot.objects.filter(status=SnapshotStatus.RUNNING)
    if project is not None:
        running = running.filter(project=project)
    cleaned = []
    for snapshot in running.only("pk", "worker", "started_at", "output_dir"):
        old = snapshot.started_at is None or snapshot.started_at < limit
        if not (old or _is_gone(snapshot.worker)):
            continue
        with transaction.atomic():
            marked = DatasetSnapshot.objects.filter(
                pk=snapshot.pk, status=SnapshotStatus.RUNNING
            ).update(
                status=SnapshotStatus.FAILED,
                finished_at=timezone.now(),
                error=STALE_RUN.format(
                    worker=snapshot.worker or "unknown process",
                    cleaner=process_tag(),
                    when=timezone.now().isoformat(timespec="seconds"),
                ),
            )
        if not marked:
            continue
        for folder in _temporary_folders(snapshot):
            shutil.rmtree(folder, ignore_errors=True)
        out = Path(snapshot.output_dir) if snapshot.output_dir else None
        if out is not None and out.is_relative_to(snapshot_root()):
            shutil.rmtree(out, ignore_errors=True)
        logger.warning("snapshot %s: stale build marked failed", snapshot.pk)
        cleaned.append(snapshot)
    return cleaned


# --- build --------------------------------------------------------------------------


def snapshot_build(
    *, snapshot: DatasetSnapshot, out_dir: Path | None = None
) -> DatasetSnapshot:
    """Claim a pending snapshot, write its files and record the outcome.

    Stale runs of the project are cleaned first. The claim is a conditional update,
    so two workers never build the same row; it records this process and the
    destination, which is what `snapshot_clean_stale` needs if the build is killed.
    Errors are recorded on the row (status failed) and raised again.
    """
    snapshot_clean_stale(project=snapshot.project)
    chosen = out_dir is not None
    if out_dir is None:
        out_dir = snapshot_root() / snapshot.project.slug / str(snapshot.pk)
    out_dir = Path(out_dir).resolve()
    claimed = DatasetSnapshot.objects.filter(
        pk=snapshot.pk, status=SnapshotStatus.PENDING
    ).update(
        status=SnapshotStatus.RUNNING,
        started_at=timezone.now(),
        worker=process_tag(),
        output_dir=str(out_dir),
    )
    snapshot.refresh_from_db()
    if not claimed:
        raise ValueError(
            SNAPSHOT_NOT_PENDING.format(pk=snapshot.pk, status=snapshot.status)
        )
    try:
        config = ExportConfig.from_parts(
            format=snapshot.format, policy=snapshot.policy, filters=snapshot.filters
        )
        _check_destination(out_dir, chosen=chosen)
        result = build_files(
            project=snapshot.project,
            config=config,
            out_dir=out_dir,
            snapshot_pk=snapshot.pk,
        )
    except Exception as exc:
        # Nothing was moved into `out_dir` (the rename is the build's last step),
        # and what is there is not this snapshot's: forget it, so that deleting the
        # failed snapshot never removes someone else's files.
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(
            status=SnapshotStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
            output_dir="",
        )
        raise
    logger.debug("snapshot %s built: %s", snapshot.pk, {"timings": result.timings})
    with transaction.atomic():
        SnapshotJudgmentIds.objects.update_or_create(
            snapshot_id=snapshot.pk,
            defaults={"encoded": ids_codec.encode(result.judgment_ids)},
        )
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(
            status=SnapshotStatus.SUCCEEDED,
            output_dir=str(out_dir),
            counts=result.counts,
            dropped=result.dropped,
            judgment_count=len(result.judgment_ids),
            judgment_ids_sha256=ids_codec.ids_sha256(result.judgment_ids),
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


def snapshot_folders_remove_with_project(sender, instance: Project, **kwargs) -> None:
    """A project's deletion (admin, `load_demo --reset`) cascades to its snapshot
    rows; their folders under the snapshot root go too once it commits, as
    `snapshot_delete` removes one snapshot's (folders the user chose stay)."""
    root = snapshot_root()
    snapshots = DatasetSnapshot.objects.filter(project=instance).exclude(output_dir="")
    for snapshot in snapshots.only("pk", "output_dir"):
        path = Path(snapshot.output_dir)
        if not path.is_relative_to(root):
            continue
        for folder in [path, *_temporary_folders(snapshot)]:  # a build under way
            transaction.on_commit(partial(shutil.rmtree, folder, ignore_errors=True))
    project_folder = root / instance.slug
    transaction.on_commit(partial(_remove_if_empty, project_folder))


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def _check_destination(out_dir: Path, *, chosen: bool = True) -> None:
    """`out_dir` must be new or empty, and its parent a folder this process can
    write in (the build writes a temporary folder there and renames it). `chosen`:
    the user named it (the command's --out), rather than the worker's default."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(OUT_IS_A_FILE.format(path=out_dir))
    if out_dir.exists() and any(out_dir.iterdir()):
        message = OUT_DIR_NOT_EMPTY if chosen else SNAPSHOT_DIR_TAKEN
        raise ValueError(message.format(path=out_dir))
    inside = next(
        (p for p in out_dir.parents if (p / writers.CHECKSUMS).is_file()), None
    )
    if inside is not None:
        raise ValueError(OUT_INSIDE_SNAPSHOT.format(path=out_dir, snapshot=inside))
    # Nothing is created here (a refused export leaves no folders): the nearest
    # existing ancestor must be a folder this process may create folders in.
    ancestor = next((p for p in out_dir.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        reason = f"{ancestor} is a file"
        raise ValueError(OUT_UNUSABLE.format(path=out_dir, reason=reason))
    if ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        reason = f"cannot create folders in {ancestor}"
        raise ValueError(OUT_UNUSABLE.format(path=out_dir, reason=reason))


def _token_counter(config: ExportConfig):
    """Token counts of a list of texts with the configured tokenizer, or None."""
    if not config.tokenizer_path:
        return None
    try:
        _, tokenizer = load_tokenizer(config.tokenizer_path)
    except SettingsError as exc:  # gone or changed since the snapshot was asked for
        raise ValueError(exc.errors["tokenizer_path"]) from None

    def count(texts: list[str]) -> np.ndarray:
        encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
        return np.array([len(e.ids) for e in encoded], dtype=np.int64)

    return count


def build_files(
    *, project: Project, config: ExportConfig, out_dir: Path, snapshot_pk=None
) -> BuildResult:
    """Write every file of a snapshot into `out_dir` (which must not exist yet).

    Folders made for it are removed again when the build fails: a failed export
    leaves nothing behind, not even `--out`'s parents."""
    made = [p for p in reversed(out_dir.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}{TMP_MARK}{snapshot_pk or 'x'}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    built = False
    try:
        try:
            result = _write_all(project=project, config=config, root=tmp / "snapshot")
        except Exception as exc:
            if _is_arrow_overflow(exc):
                raise ValueError(
                    TEXTS_TOO_LARGE.format(batch=BATCH_COMPARISONS, error=exc)
                ) from exc
            raise
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked before
        (tmp / "snapshot").rename(out_dir)
        built = True
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not built:
            for folder in reversed(made):  # deepest first; stop at one not empty
                try:
                    folder.rmdir()
                except OSError:
                    break


def _is_arrow_overflow(exc: Exception) -> bool:
    """True for Arrow's errors about a string column passing 2 GiB (32-bit
    offsets): the texts of one batch or row group are too large together."""
    import pyarrow as pa

    if isinstance(exc, pa.ArrowCapacityError):
        return True
    return isinstance(exc, pa.ArrowInvalid) and "overflow" in str(exc)


class _Clock:
    """Seconds per stage, summed over batches."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.mark = self.start
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.mark
        self.mark = now

    def total(self) -> dict:
        return {**self.stages, "total": time.perf_counter() - self.start}


def _texts(plan: ExportPlan, clock: _Clock):
    """Yield (comparison indices, prompts, response ids, texts) batch by batch.

    On PostgreSQL the next batches are read by helper threads, one per connection
    of the snapshot (`read_connections`: Django's and its peer), while the caller
    works on the current one; the caller makes no query meanwhile.
    """
    batches = list(plan.batches())
    if not batches:
        return

    def fetch(index, raw=None):
        prompt_ids = distinct(plan.prompt_ids[index])
        response_ids = distinct(
            np.concatenate([plan.first_ids[index], plan.second_ids[index]])
        )
        prompts = read_prompts(prompt_ids, raw)
        return index, prompts, response_ids, read_responses(response_ids, raw)

    if connection.vendor != "postgresql":
        for index in batches:
            clock.lap("other")
            item = fetch(index)
            clock.lap("read_wait")
            yield item
        return
    raws = read_connections()
    free = queue.SimpleQueue()
    for raw in raws:
        free.put(raw)

    def fetch_on_a_free_connection(index):
        raw = free.get()
        try:
            return fetch(index, raw)
        finally:
            free.put(raw)

    with ThreadPoolExecutor(len(raws), thread_name_prefix="export-read") as pool:
        pending = deque(
            pool.submit(fetch_on_a_free_connection, index)
            for index in batches[: len(raws)]
        )
        following = iter(batches[len(raws) :])
        while pending:
            clock.lap("other")
            item = pending.popleft().result()
            clock.lap("read_wait")
            index = next(following, None)
            if index is not None:
                pending.append(pool.submit(fetch_on_a_free_connection, index))
            yield item


def _write_all(*, project: Project, config: ExportConfig, root: Path) -> BuildResult:
    from exports.columns import PairBatch, build_rows
    from exports.hygiene import HygieneAccumulator, hash_strings, leakage

    root.mkdir()
    clock = _Clock()
    schema = arrow_schema(config)
    names = split_names(config)
    checksums = writers.Checksums(root)
    hygiene = HygieneAccumulator(
        max_chars=config.max_chars,
        max_tokens=config.max_tokens,
        count_tokens=_token_counter(config),
    )
    # `datasets` takes about a second to import; the first pass mostly waits for
    # the database, so the import runs beside it.
    importer = None
    if "datasets" in config.files:
        importer = threading.Thread(target=importlib.import_module, args=["datasets"])
        importer.start()
    clock.lap("setup")
    split_writers = {}
    try:
        with consistent_read():
            plan = export_plan(project, config)
            export_stage.send(sender=ExportPlan, stage="plan", project=project)
            clock.lap("plan")
            if importer is not None:
                importer.join()
            arrow = writers.datasets_schema(schema) if importer else None
            for split in names:
                split_writers[split] = writers.SplitWriter(
                    root, split, schema, kinds=config.files, arrow_schema=arrow
                )
            clock.lap("setup")
            for index, prompts, response_ids, texts in _texts(plan, clock):
                index = prompt_splits(plan, index, prompts)
                clock.lap("keys")
                if len(index):
                    first = np.searchsorted(response_ids, plan.first_ids[index])
                    second = np.searchsorted(response_ids, plan.second_ids[index])
                    batch = PairBatch(
                        comparison_id=plan.comparison_ids[index],
                        prompt_id=plan.prompt_ids[index],
                        first_id=plan.first_ids[index],
                        second_id=plan.second_ids[index],
                        label=plan.aggregate_label[index],
                        counts=plan.counts[index],
                        agreement=plan.agreement[index],
                        confidence=plan.confidence[index],
                        prompt_index=np.searchsorted(
                            prompts.ids, plan.prompt_ids[index]
                        ),
                        first_index=first,
                        second_index=second,
                        prompts=prompts,
                        responses=texts,
                    )
                    rows = build_rows(
                        batch,
                        format=config.format,
                        sft_style=config.sft_style,
                        schema=schema,
                    )
                    clock.lap("rows")
                    _check_batch(hygiene, plan, index, batch, rows, hash_strings)
                    clock.lap("hygiene")
                    test = plan.in_test[index][rows.comparison_row]
                    for split, writer in split_writers.items():
                        mask = test if split == "test" else ~test
                        writer.add(rows.table.filter(mask))
                    clock.lap("write")
                export_stage.send(sender=ExportPlan, stage="batch", project=project)
        for writer in split_writers.values():
            writer.close(checksums)
        clock.lap("write")
    except BaseException:
        for writer in split_writers.values():
            writer.abort()
        raise
    summary = plan.finish()
    kept = plan.kept
    report = hygiene.report(
        leakage=leakage(
            prompt_keys=plan.prompt_key[kept],
            in_test=plan.in_test[kept],
            prompt_ids=plan.prompt_ids[kept],
            evaluation_keys=plan.evaluation_keys,
        ),
        annotators=summary.annotators,
    )
    clock.lap("hygiene")
    counts = {s: w.rows for s, w in split_writers.items()}
    if not counts["train"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in summary.dropped.items())
        held_out = counts.get("test", 0)
        if held_out:
            reasons = ", ".join(filter(None, [reasons, f"{held_out} rows in test"]))
        raise ValueError(
            NO_TRAINING_ROWS.format(
                dropped=reasons or "no comparisons",
                hint=HELD_OUT_HINT if held_out else "",
            )
        )
    if "datasets" in config.files:
        written = [split for split in names if counts[split]]
        writers.write_dataset_dict_json(root, written, checksums)
    writers.write_judgment_ids(
        root / "judgment_ids.parquet", summary.judgment_ids, checksums
    )
    checksums.write_json(root / "hygiene.json", report)
    card = render_card(
        project_name=project.name,
        project_slug=project.slug,
        config=config,
        counts=counts,
        dropped=summary.dropped,
        judgments=len(summary.judgment_ids),
        hygiene=report,
        columns=schema.names,
    )
    checksums.write_text(root / "README.md", card)
    sha = writers.write_checksums(root, checksums)
    clock.lap("finish")
    return BuildResult(
        counts=counts,
        dropped=summary.dropped,
        judgment_ids=summary.judgment_ids,
        hygiene=report,
        content_sha256=sha,
        timings=clock.total(),
    )


def _check_batch(hygiene, plan: ExportPlan, index, batch, rows, hash_strings) -> None:
    """Feed one batch's rows and labelled pairs to the hygiene checks."""
    hygiene.add_rows(row_ids=batch.comparison_id[rows.comparison_row], texts=rows.texts)
    pairs = rows.pairs
    digests = hash_strings(batch.responses)
    hygiene.add_pairs(
        comparison_ids=batch.comparison_id[pairs],
        prompt_keys=plan.prompt_key[index][pairs],
        chosen=batch.responses.take(rows.chosen_index),
        rejected=batch.responses.take(rows.rejected_index),
        chosen_digests=digests[rows.chosen_index],
        rejected_digests=digests[rows.rejected_index],
    )
