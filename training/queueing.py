"""What `training.services.run_queue` checks before it queues a run from the web.

A recipe plus overrides is validated with the stage's config dataclass; the snapshot
must be finished and in a format the stage can use; the base model must be a
directory or a hub id, or come from a succeeded parent run. Each check raises a
`ValidationError` on the form field it concerns. Nothing here writes.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from exports.models import DatasetFormat, DatasetSnapshot, SnapshotStatus
from training.config import (
    CONFIG_CLASSES,
    ConfigError,
    config_resolve,
    local_model_missing,
    parent_kind_problem,
)
from training.models import RunKind, RunStatus, TrainingRun
from training.recipes_catalog import Recipe, recipe_get
from training.selectors import (
    RewardModelError,
    reward_model_resolve,
    run_final_checkpoint,
)

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
        if local_model_missing(model):
            raise ValidationError({"base_model": MODEL_PATH_MISSING.format(path=model)})
    elif not HUB_ID.match(model):
        raise ValidationError({"base_model": MODEL_NAME_INVALID.format(model=model)})


def base_model_check(
    model: str, parent: TrainingRun | None, *, kind: str
) -> tuple[str, str]:
    """Return (config model, base model shown on the row).

    Without a model, a parent run gives its final checkpoint, but the config keeps
    `model` empty and names the parent: the training command then resolves the
    checkpoint (merging a LoRA adapter into its base) exactly as it does for
    `--parent-run` on the command line.
    """
    model = model.strip()
    if parent is not None:
        problem = parent_kind_problem(
            run_id=parent.pk, parent_kind=parent.kind, kind=kind
        )
        if problem:
            raise ValidationError({"parent": problem})
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
            return "", checkpoint.path
    if not model:
        raise ValidationError({"base_model": MODEL_REQUIRED})
    _check_model(model)
    return model, model


def recipe_check(recipe: str, kind: str | None) -> Recipe:
    """The named recipe; with `kind`, it must train that kind of run."""
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
    return chosen


def snapshot_check(snapshot: DatasetSnapshot, kind: str) -> None:
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
    user=None,
    evaluates: bool = False,
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
    if kind == RunKind.RL:
        _check_reward_model(config.reward_model, user)
        problem = config.eval_batch_problem() if evaluates else None
        if problem:
            raise ValidationError({"overrides": problem})
    return config.to_dict()


def _check_reward_model(spec: str, user) -> None:
    """The reward model as `train_rl` will check it (a run id always, among the runs
    `user` may see; a directory only where the web server sees the workers' paths,
    as for base models)."""
    if not spec:
        raise ValidationError({"overrides": REWARD_MODEL_REQUIRED})
    checks_paths = getattr(settings, "PREFLINE_TRAINING_CHECK_MODEL_PATHS", True)
    if not spec.strip().isdigit() and not checks_paths:
        return
    try:
        reward_model_resolve(spec, user=user)
    except RewardModelError as exc:
        raise ValidationError({"overrides": f"reward_model {exc}"}) from exc
