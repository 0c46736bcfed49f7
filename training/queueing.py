"""Services behind the web's "train on this snapshot" and "cancel" buttons.

`run_queue` validates a recipe plus overrides with the stage's config dataclass,
creates the queued `TrainingRun` (through `training.services.run_create`) and, once
the transaction commits, enqueues `training.tasks.execute_training_run` for a
`manage.py db_worker` process to pick up. `run_cancel` cancels a queued run at once
and asks a running one to stop (the worker sends its process SIGTERM).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from exports.models import DatasetFormat, DatasetSnapshot, SnapshotStatus
from training import services
from training.config import CONFIG_CLASSES, ConfigError, config_resolve
from training.models import RunKind, RunStatus, TrainingRun
from training.recipes_catalog import recipe_get
from training.selectors import run_final_checkpoint

KIND_RECIPE_MISMATCH = "Recipe {recipe!r} trains a {recipe_kind} run, not {kind}."
SNAPSHOT_NOT_READY = (
    "Snapshot {snapshot_id} is {status}: only a succeeded snapshot can be trained on."
)
SNAPSHOT_FORMAT_UNSUITABLE = (
    "Snapshot {snapshot_id} is in the {format!r} format; a {kind} run needs one of: "
    "{formats}. Export the project again in one of those formats."
)
MODEL_REQUIRED = "Give a base model (a local directory or a hub id), or a parent run."
MODEL_PATH_MISSING = (
    "Base model directory {path!r} does not exist on the web server. Give a path "
    "the worker can read, or a hub id such as 'org/name'."
)
MODEL_NAME_INVALID = (
    "Base model {model!r} is neither an absolute directory nor a hub id such as "
    "'org/name'."
)
PARENT_NOT_FINISHED = (
    "Parent run {run_id} is {status}; only a succeeded run can be continued."
)
PARENT_NO_CHECKPOINT = (
    "Parent run {run_id} registered no checkpoint; give the base model explicitly."
)
REWARD_MODEL_REQUIRED = (
    "An RL run needs a reward model: a reward run id or a directory holding one."
)
OVERRIDE_NOT_ALLOWED = "{key!r} is set by the form (snapshot, base model, parent run)."
RUN_ALREADY_FINISHED = "Run {run_id} already {status}; there is nothing to cancel."
RUN_ALREADY_CANCELLING = "Run {run_id} is already being cancelled."

FORMATS_BY_KIND = {
    RunKind.SFT: (
        DatasetFormat.SFT,
        DatasetFormat.PREFERENCE,
        DatasetFormat.CONVERSATIONAL,
    ),
    RunKind.REWARD: (DatasetFormat.PREFERENCE, DatasetFormat.CONVERSATIONAL),
    RunKind.DPO: (DatasetFormat.PREFERENCE, DatasetFormat.CONVERSATIONAL),
    RunKind.RL: (
        DatasetFormat.PREFERENCE,
        DatasetFormat.CONVERSATIONAL,
        DatasetFormat.SFT,
    ),
}
# Provenance fields the form fills in; overrides may not smuggle other values in.
RESERVED_KEYS = (
    "model",
    "dataset",
    "parent_run",
    "output_dir",
    "model_name_or_path",
    "dataset_name",
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_model(model: str) -> None:
    """Reject a path that does not exist here, unless workers run elsewhere.

    With workers on other machines (paths the web server cannot see), set
    `PREFLINE_TRAINING_CHECK_MODEL_PATHS = False`; the worker's run then fails
    with the loader's message instead.
    """
    if model.startswith(("/", "~", ".")):
        if not getattr(settings, "PREFLINE_TRAINING_CHECK_MODEL_PATHS", True):
            return
        if not Path(model).expanduser().is_dir():
            raise ValidationError({"base_model": MODEL_PATH_MISSING.format(path=model)})
    elif not HUB_ID.match(model):
        raise ValidationError({"base_model": MODEL_NAME_INVALID.format(model=model)})


def _base_model(model: str, parent: TrainingRun | None) -> str:
    model = model.strip()
    if parent is not None:
        if parent.status != RunStatus.SUCCEEDED:
            raise ValidationError(
                {
                    "parent": PARENT_NOT_FINISHED.format(
                        run_id=parent.pk, status=parent.status
                    )
                }
            )
        if not model:
            checkpoint = run_final_checkpoint(run=parent)
            if checkpoint is None:
                raise ValidationError(
                    {"parent": PARENT_NO_CHECKPOINT.format(run_id=parent.pk)}
                )
            return checkpoint.path
    if not model:
        raise ValidationError({"base_model": MODEL_REQUIRED})
    _check_model(model)
    return model


def _check_snapshot(snapshot: DatasetSnapshot, kind: str) -> None:
    if snapshot.status != SnapshotStatus.SUCCEEDED:
        raise ValidationError(
            {
                "snapshot": SNAPSHOT_NOT_READY.format(
                    snapshot_id=snapshot.pk, status=snapshot.status
                )
            }
        )
    allowed = FORMATS_BY_KIND[kind]
    if snapshot.format not in allowed:
        raise ValidationError(
            {
                "snapshot": SNAPSHOT_FORMAT_UNSUITABLE.format(
                    snapshot_id=snapshot.pk,
                    format=snapshot.format,
                    kind=kind,
                    formats=", ".join(allowed),
                )
            }
        )


def run_config_build(
    *,
    kind: str,
    recipe_overrides: dict[str, Any],
    overrides: dict[str, Any],
    model: str,
    dataset: str,
    parent_id: int | None,
    name: str,
) -> dict[str, Any]:
    """Resolve recipe + overrides + provenance with the stage's config dataclass."""
    for key in overrides:
        if key in RESERVED_KEYS:
            raise ValidationError({"overrides": OVERRIDE_NOT_ALLOWED.format(key=key)})
    values = {
        **recipe_overrides,
        **overrides,
        "model": model,
        "dataset": dataset,
        "name": name,
    }
    if parent_id is not None:
        values["parent_run"] = parent_id
    try:
        config = config_resolve(CONFIG_CLASSES[kind], overrides=values)
    except ConfigError as exc:
        raise ValidationError({"overrides": str(exc)}) from exc
    if kind == RunKind.RL and not getattr(config, "reward_model", ""):
        raise ValidationError({"overrides": REWARD_MODEL_REQUIRED})
    return config.to_dict()


@transaction.atomic
def run_queue(
    *,
    snapshot: DatasetSnapshot,
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
    model, every override through the stage's config) before it writes; the task is
    enqueued only once the run row is committed.
    """
    try:
        chosen = recipe_get(recipe)
    except ValueError as exc:
        raise ValidationError({"recipe": str(exc)}) from exc
    if kind is not None and kind != chosen.kind:
        raise ValidationError(
            {
                "kind": KIND_RECIPE_MISMATCH.format(
                    recipe=recipe, recipe_kind=chosen.kind, kind=kind
                )
            }
        )
    _check_snapshot(snapshot, chosen.kind)
    model = _base_model(base_model, parent)
    name = name.strip() or f"{chosen.name} on snapshot {snapshot.pk}"
    config = run_config_build(
        kind=chosen.kind,
        recipe_overrides=chosen.overrides,
        overrides=dict(overrides or {}),
        model=model,
        dataset=str(snapshot.pk),
        parent_id=parent.pk if parent is not None else None,
        name=name,
    )
    config["recipe"] = chosen.name
    run = services.run_create(
        kind=chosen.kind,
        config=config,
        base_model=model,
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


@transaction.atomic
def run_cancel(*, run: TrainingRun, user) -> TrainingRun:
    """Cancel `run`: a queued run ends `cancelled` now, a running one stops soon.

    For a running run this sets `cancel_requested`; the training callback stops
    the trainer at its next step and the worker sends the process SIGTERM.
    """
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise ValidationError(
            RUN_ALREADY_FINISHED.format(run_id=run.pk, status=run.status)
        )
    if run.status == RunStatus.RUNNING and run.cancel_requested:
        raise ValidationError(RUN_ALREADY_CANCELLING.format(run_id=run.pk))
    run = services.run_cancel_request(run=run)
    if run.status == RunStatus.CANCELLED:
        actor = getattr(user, "username", "") or "someone"
        run = services.run_cancel(
            run=run, reason=f"Cancelled by {actor} before it started."
        )
    return run
