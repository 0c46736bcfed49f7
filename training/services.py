"""Writes to the run registry. Commands, callbacks, views and the worker call these.

Status moves queued -> running -> succeeded | failed | cancelled; a failed or
cancelled run (or one whose process died while running) may be started again to
resume it. From the web, `run_queue` creates a queued run and enqueues
`training.tasks.execute_training_run` for a `manage.py db_worker` process once the
transaction commits; `run_cancel_request` cancels a queued run at once and asks a
running one to stop (the worker sends its process SIGTERM). Nothing here imports
torch.
"""

from __future__ import annotations

import math
import socket
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from training import queueing
from training.models import ModelCheckpoint, RunStatus, TrainingMetric, TrainingRun

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)

RUN_NOT_STARTABLE = "Run {run_id} is {status}: only a queued run can be started."
RUN_NOT_RESUMABLE = (
    "Run {run_id} succeeded: there is nothing to resume. Start a new run with "
    "--parent-run {run_id} to train further."
)
RUN_ALREADY_FINISHED = "Run {run_id} already {status}; there is nothing to cancel."
RUN_ALREADY_CANCELLING = "Run {run_id} is already being cancelled."
RUN_KIND_MISMATCH = "Run {run_id} is a {kind} run; this command trains {expected}."


class RunStateError(ValidationError):
    """The run's state forbids the request (it has finished, or is already being
    cancelled): the API answers 409, not 400."""


def _clean_number(value: Any) -> float | int | None:
    """Return the number, or None for NaN/inf (JSON and jsonb cannot hold them)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


@transaction.atomic
def run_create(
    *,
    kind: str,
    config: dict[str, Any],
    base_model: str,
    dataset_snapshot=None,
    dataset_path: str = "",
    parent: TrainingRun | None = None,
    name: str = "",
    output_dir: str = "",
    created_by=None,
) -> TrainingRun:
    """Create a queued run."""
    run = TrainingRun(
        kind=kind,
        config=config,
        base_model=base_model,
        dataset_snapshot=dataset_snapshot,
        dataset_path=dataset_path,
        parent=parent,
        name=name,
        output_dir=output_dir,
        created_by=created_by,
    )
    run.full_clean(exclude=["config", "summary"])
    run.save()
    return run


@transaction.atomic
def run_start(
    *,
    run: TrainingRun,
    kind: str,
    config: dict[str, Any],
    output_dir: str,
    base_model: str,
    pid: int,
    resume_step: int | None = None,
    log_path: str | None = None,
) -> TrainingRun:
    """Mark a run running on this host and store its resolved config.

    With `resume_step`, the run continues from that checkpoint: metrics and
    checkpoint rows after it belong to the abandoned trajectory and are removed, so
    the series continues without duplicate steps.
    """
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.kind != kind:
        raise ValueError(
            RUN_KIND_MISMATCH.format(run_id=run.pk, kind=run.kind, expected=kind)
        )
    if resume_step is None and run.status != RunStatus.QUEUED:
        raise ValueError(RUN_NOT_STARTABLE.format(run_id=run.pk, status=run.status))
    if resume_step is not None and run.status == RunStatus.SUCCEEDED:
        raise ValueError(RUN_NOT_RESUMABLE.format(run_id=run.pk))
    if resume_step is not None:
        run.metrics.filter(step__gt=resume_step).delete()
        run.checkpoints.filter(step__gt=resume_step).delete()
    run.status = RunStatus.RUNNING
    run.config = config
    run.output_dir = output_dir
    run.base_model = base_model
    run.host = socket.gethostname()
    run.pid = pid
    run.error = ""
    run.cancel_requested = False
    run.finished_at = None
    if run.started_at is None or resume_step is None:
        run.started_at = timezone.now()
    if log_path is not None:
        run.log_path = log_path
    run.save()
    return run


@transaction.atomic
def run_base_model_set(*, run: TrainingRun, base_model: str) -> TrainingRun:
    """Record the model a run actually starts from (a parent's merged model)."""
    TrainingRun.objects.filter(pk=run.pk).update(base_model=base_model)
    run.base_model = base_model
    return run


def _finish(
    run: TrainingRun, status: str, *, error: str = "", summary: dict | None = None
) -> TrainingRun:
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status in FINISHED and run.status != status:
        # A run is finished once; a late second verdict must not overwrite it.
        return run
    run.status = status
    run.finished_at = timezone.now()
    run.error = error
    if summary is not None:
        run.summary = {**run.summary, **summary}
    run.save()
    return run


@transaction.atomic
def run_finish(*, run: TrainingRun, summary: dict | None = None) -> TrainingRun:
    """Mark a run succeeded."""
    return _finish(run, RunStatus.SUCCEEDED, summary=summary)


@transaction.atomic
def run_fail(
    *, run: TrainingRun, error: str, summary: dict | None = None
) -> TrainingRun:
    """Mark a run failed with its error (a traceback, or a reason a person reads)."""
    return _finish(run, RunStatus.FAILED, error=error, summary=summary)


@transaction.atomic
def run_cancel(
    *, run: TrainingRun, reason: str = "", summary: dict | None = None
) -> TrainingRun:
    """Mark a run cancelled (cancel requested, SIGTERM, or cancelled while queued)."""
    return _finish(run, RunStatus.CANCELLED, error=reason, summary=summary)


@transaction.atomic
def run_cancel_request(*, run: TrainingRun, user=None) -> TrainingRun:
    """Cancel `run` for `user`: a queued run ends `cancelled` now, a running one at
    its next step (the training callback polls `cancel_requested`, and the worker
    sends the process SIGTERM)."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise RunStateError(
            RUN_ALREADY_FINISHED.format(run_id=run.pk, status=run.status)
        )
    if run.status == RunStatus.RUNNING and run.cancel_requested:
        raise RunStateError(RUN_ALREADY_CANCELLING.format(run_id=run.pk))
    run.cancel_requested = True
    run.save(update_fields=["cancel_requested"])
    if run.status == RunStatus.QUEUED:
        actor = getattr(user, "username", "") or "someone"
        return _finish(
            run, RunStatus.CANCELLED, error=f"Cancelled by {actor} before it started."
        )
    return run


@transaction.atomic
def run_queue(
    *,
    snapshot,
    recipe: str,
    user,
    base_model: str = "",
    overrides: dict[str, Any] | None = None,
    kind: str | None = None,
    parent: TrainingRun | None = None,
    name: str = "",
) -> TrainingRun:
    """Queue a training run of `recipe` on `snapshot`; a worker executes it.

    Validates everything a person can fix (recipe, snapshot state and format, base
    model, every override through the stage's config: `training.queueing`) before
    it writes; the task is enqueued only once the run row is committed. With a
    parent run and no base model, the config names the parent and the training
    command starts from its final model, as `--parent-run` does.
    """
    chosen = queueing.recipe_check(recipe, kind)
    queueing.snapshot_check(snapshot, chosen.kind)
    model, shown_model = queueing.base_model_check(base_model, parent, kind=chosen.kind)
    name = name.strip() or f"{chosen.name} on snapshot {snapshot.pk}"
    config = queueing.run_config_build(
        kind=chosen.kind,
        recipe_overrides=chosen.overrides,
        overrides=dict(overrides or {}),
        model=model,
        dataset=str(snapshot.pk),
        parent_id=parent.pk if parent is not None else None,
        name=name,
        user=user,
        evaluates=bool((snapshot.counts or {}).get("test")),
    )
    config["recipe"] = chosen.name
    run = run_create(
        kind=chosen.kind,
        config=config,
        base_model=shown_model,
        dataset_snapshot=snapshot,
        dataset_path=snapshot.output_dir,
        parent=parent,
        name=name,
        created_by=user,
    )
    run_id = run.pk
    transaction.on_commit(lambda: _enqueue(run_id))
    return run


def _enqueue(run_id: int) -> None:
    from training.tasks import execute_training_run  # tasks imports this module

    execute_training_run.enqueue(run_id)


@transaction.atomic
def run_log_attach(*, run: TrainingRun, log_path: str) -> TrainingRun:
    """Record where the worker writes the run's output (the page shows its tail)."""
    TrainingRun.objects.filter(pk=run.pk).update(log_path=log_path)
    run.log_path = log_path
    return run


def _clean_values(values: dict[str, Any]) -> dict[str, float | int | None]:
    return {
        key: _clean_number(value)
        for key, value in values.items()
        if isinstance(value, int | float)
    }


def metric_record(
    *,
    run: TrainingRun | int,
    step: int,
    values: dict[str, Any],
    epoch: float | None = None,
    split: str = "train",
) -> TrainingMetric:
    """Record the numbers logged at one step (one row per step and split).

    Non-numeric values are dropped; NaN and infinities are stored as null so that a
    diverging run still shows which metric blew up. Logging the same step again
    (after a resume, or a second eval log at one step) merges into the existing row
    instead of duplicating it.
    """
    metric_record_many(
        run=run, rows=[{"step": step, "values": values, "epoch": epoch, "split": split}]
    )
    run_id = run if isinstance(run, int) else run.pk
    return TrainingMetric.objects.get(run_id=run_id, step=step, split=split)


@transaction.atomic
def metric_record_many(*, run: TrainingRun | int, rows: list[dict]) -> int:
    """Record several logging steps at once (see `metric_record`); each row is a
    dict with step, values, and optionally epoch and split.

    A constant number of queries however many rows (one read of the rows already
    there, one insert, one update): the registry callback flushes its buffer here
    during training, where a query per row would slow small models down.
    """
    run_id = run if isinstance(run, int) else run.pk
    merged: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        entry = merged.setdefault(
            (row["step"], row.get("split", "train")), {"values": {}, "epoch": None}
        )
        entry["values"].update(_clean_values(row["values"]))
        if row.get("epoch") is not None:
            entry["epoch"] = row["epoch"]
    existing = {
        (metric.step, metric.split): metric
        for metric in TrainingMetric.objects.select_for_update().filter(
            run_id=run_id, step__in={step for step, _ in merged}
        )
    }
    created, changed = [], []
    for (step, split), entry in merged.items():
        metric = existing.get((step, split))
        if metric is None:
            created.append(
                TrainingMetric(
                    run_id=run_id,
                    step=step,
                    split=split,
                    epoch=entry["epoch"],
                    values=entry["values"],
                )
            )
            continue
        metric.values = {**metric.values, **entry["values"]}
        if entry["epoch"] is not None:
            metric.epoch = entry["epoch"]
        changed.append(metric)
    TrainingMetric.objects.bulk_create(created)
    TrainingMetric.objects.bulk_update(changed, ["values", "epoch"])
    return len(rows)


@transaction.atomic
def checkpoint_register(
    *,
    run: TrainingRun | int,
    path: str,
    step: int,
    is_adapter: bool,
    base_model: str,
    is_merged: bool = False,
    eval_metrics: dict[str, Any] | None = None,
) -> ModelCheckpoint:
    """Record a saved checkpoint (saving the same path again updates its row)."""
    run_id = run if isinstance(run, int) else run.pk
    clean = {
        k: _clean_number(v)
        for k, v in (eval_metrics or {}).items()
        if isinstance(v, int | float)
    }
    checkpoint, _ = ModelCheckpoint.objects.update_or_create(
        run_id=run_id,
        path=path,
        defaults={
            "step": step,
            "is_adapter": is_adapter,
            "is_merged": is_merged,
            "base_model": base_model,
            "eval_metrics": clean,
        },
    )
    return checkpoint
