"""Reads of the run registry: what the run pages, the runs API, the training commands
and the worker read. Nothing here writes or imports torch.

Visibility, metric series, warnings and log tails serve the pages and the API; the
final checkpoint and the checkpoint list serve the commands (a parent run's model).

Who sees a run: superusers; researchers and admins of the project of the run's
snapshot; for a run without a snapshot (trained from a dataset directory, or whose
snapshot was deleted), its creator. Members of the project below researcher get
403; everyone else gets 404, so a run's existence does not leak.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from annotation.models import Role
from annotation.permissions import has_role, projects_for, role_for
from exports.models import DatasetSnapshot
from training import pitfalls
from training.models import (
    ModelCheckpoint,
    RunKind,
    RunStatus,
    TrainingMetric,
    TrainingRun,
)

RUN_NOT_FOUND = "No training run {run_id} among the runs you can see."
RUN_RESEARCHERS_ONLY = (
    "Only researchers and admins of project {project!r} can see its training runs."
)
SNAPSHOT_NOT_FOUND = "No dataset snapshot {snapshot_id} among your projects' snapshots."
SNAPSHOT_RESEARCHERS_ONLY = (
    "Only researchers and admins of project {project!r} can train on its snapshots."
)

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
LOG_TAIL_MAX_BYTES = 256 * 1024


class AccessDenied(Exception):
    """The user may not see the object: `status` is 403 or 404, `message` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def run_list(*, user, status: str | None = None, kind: str | None = None) -> QuerySet:
    """Runs `user` may see, newest first, with snapshot, project and creator joined."""
    runs = TrainingRun.objects.select_related(
        "dataset_snapshot__project", "created_by", "parent"
    )
    if not user.is_authenticated:
        return runs.none()
    if not user.is_superuser:
        projects = projects_for(user, Role.RESEARCHER)
        runs = runs.filter(
            Q(dataset_snapshot__project__in=projects)
            | Q(dataset_snapshot__isnull=True, created_by=user)
        )
    if status:
        runs = runs.filter(status=status)
    if kind:
        runs = runs.filter(kind=kind)
    return runs


def run_get(*, user, run_id: int) -> TrainingRun:
    """The run `run_id` if `user` may see it; raise `AccessDenied` (403/404)."""
    run = (
        TrainingRun.objects.select_related(
            "dataset_snapshot__project", "created_by", "parent"
        )
        .filter(pk=run_id)
        .first()
    )
    missing = AccessDenied(404, RUN_NOT_FOUND.format(run_id=run_id))
    if run is None or not user.is_authenticated:
        raise missing
    if user.is_superuser:
        return run
    snapshot = run.dataset_snapshot
    if snapshot is None:
        if run.created_by_id == user.pk:
            return run
        raise missing
    if has_role(user, snapshot.project, Role.RESEARCHER):
        return run
    if role_for(user, snapshot.project) is not None:
        raise AccessDenied(
            403, RUN_RESEARCHERS_ONLY.format(project=snapshot.project.slug)
        )
    raise missing


def snapshot_for_training(*, user, snapshot_id: int) -> DatasetSnapshot:
    """The snapshot `snapshot_id` if `user` may train on it; else `AccessDenied`."""
    snapshot = (
        DatasetSnapshot.objects.select_related("project").filter(pk=snapshot_id).first()
    )
    missing = AccessDenied(404, SNAPSHOT_NOT_FOUND.format(snapshot_id=snapshot_id))
    if snapshot is None or not user.is_authenticated:
        raise missing
    if has_role(user, snapshot.project, Role.RESEARCHER):
        return snapshot
    if role_for(user, snapshot.project) is not None:
        raise AccessDenied(
            403, SNAPSHOT_RESEARCHERS_ONLY.format(project=snapshot.project.slug)
        )
    raise missing


def snapshots_for_training(*, user) -> QuerySet:
    """Finished snapshots of the projects where `user` is a researcher or admin."""
    return (
        DatasetSnapshot.objects.select_related("project")
        .filter(
            project__in=projects_for(user, Role.RESEARCHER),
            status=DatasetSnapshot.Status.SUCCEEDED,
        )
        .order_by("-created_at", "-id")
    )


def run_duration(run: TrainingRun, *, now=None) -> timedelta | None:
    """Wall time from start to finish (to now while running), None before start."""
    if run.started_at is None:
        return None
    end = run.finished_at or (now or timezone.now())
    return max(end - run.started_at, timedelta(0))


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in {
        "nan",
        "inf",
        "-inf",
        "infinity",
        "-infinity",
    }:
        return float(value)
    return None


def series_name(key: str, split: str) -> str:
    """Name a metric as the trainer logs it: eval metrics carry an `eval_` prefix."""
    if split == "eval" and not key.startswith("eval_"):
        return f"eval_{key}"
    return key


def run_metric_series(
    *, run: TrainingRun, after_step: int | None = None
) -> dict[str, dict[str, list]]:
    """Every numeric metric of `run` as `{name: {"steps": [...], "values": [...]}}`.

    Non-finite values are kept as None (JSON has no NaN); `after_step` returns
    only points logged after that step, for live polling.
    """
    rows = TrainingMetric.objects.filter(run=run).order_by("step", "id")
    if after_step is not None:
        rows = rows.filter(step__gt=after_step)
    series: dict[str, dict[str, list]] = {}
    for step, split, values in rows.values_list("step", "split", "values"):
        if not isinstance(values, dict):
            continue
        for key, raw in values.items():
            number = math.nan if raw is None else _as_number(raw)
            if number is None:
                continue
            entry = series.setdefault(
                series_name(key, split), {"steps": [], "values": []}
            )
            entry["steps"].append(step)
            entry["values"].append(number if math.isfinite(number) else None)
    return series


def _series_arrays(run: TrainingRun) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = TrainingMetric.objects.filter(run=run).order_by("step", "id")
    collected: dict[str, tuple[list[int], list[float]]] = {}
    for step, split, values in rows.values_list("step", "split", "values"):
        if not isinstance(values, dict):
            continue
        for key, raw in values.items():
            # null is how the registry stores NaN/inf: keep it, as NaN.
            number = math.nan if raw is None else _as_number(raw)
            if number is not None:
                steps, numbers = collected.setdefault(series_name(key, split), ([], []))
                steps.append(step)
                numbers.append(number)
    return {
        name: (np.asarray(steps, dtype=float), np.asarray(numbers, dtype=float))
        for name, (steps, numbers) in collected.items()
    }


def default_thresholds() -> pitfalls.PitfallThresholds:
    """Thresholds from `settings.PREFLINE_PITFALL_THRESHOLDS` (a dict) or defaults."""
    overrides = getattr(settings, "PREFLINE_PITFALL_THRESHOLDS", None) or {}
    return pitfalls.PitfallThresholds.from_mapping(overrides)


def run_warnings(
    *, run: TrainingRun, thresholds: pitfalls.PitfallThresholds | None = None
) -> list[pitfalls.Finding]:
    """Pitfall findings for `run` from its recorded metrics (see training.pitfalls)."""
    return pitfalls.analyze_run(
        _series_arrays(run),
        kind=run.kind,
        thresholds=thresholds or default_thresholds(),
    )


def run_checkpoints(*, run: TrainingRun) -> QuerySet:
    return ModelCheckpoint.objects.filter(run=run).order_by("step", "id")


@dataclass(frozen=True)
class LogTail:
    text: str
    path: str
    exists: bool
    truncated: bool


def run_log_tail(*, run: TrainingRun, lines: int = 200) -> LogTail:
    """The last `lines` lines of the run's log (at most LOG_TAIL_MAX_BYTES read)."""
    path = run.log_path
    if not path or not os.path.isfile(path):
        return LogTail(text="", path=path, exists=False, truncated=False)
    with Path(path).open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - LOG_TAIL_MAX_BYTES)
        handle.seek(start)
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    # Progress bars rewrite their line with carriage returns; keep the last state.
    kept = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    if start > 0 and kept:
        kept = kept[1:]
    truncated = start > 0 or len(kept) > lines
    return LogTail(
        text="\n".join(kept[-lines:]), path=path, exists=True, truncated=truncated
    )


def run_can_cancel(*, user, run: TrainingRun) -> bool:
    """True when `run` is still active and `user` may cancel it (who may see it)."""
    return (
        run.status in ACTIVE_STATUSES
        and not run.cancel_requested
        and bool(user.is_authenticated)
    )


def run_final_checkpoint(*, run: TrainingRun) -> ModelCheckpoint | None:
    """The checkpoint a later stage should start from: the final model, else the
    latest step."""
    checkpoints = ModelCheckpoint.objects.filter(run=run)
    final = checkpoints.filter(path=run.output_dir).first()
    return final or checkpoints.order_by("-step", "-id").first()


# Prefixed by the caller with how the setting is named there (`--reward-model`).
REWARD_RUN_MISSING = "{spec}: no such reward run or directory."
REWARD_RUN_WRONG_KIND = "{spec}: run {spec} is a {kind} run, not reward."
REWARD_RUN_NOT_FINISHED = (
    "{spec}: reward run {spec} is {status}; only a succeeded run scores an RL run."
)
REWARD_RUN_NO_MODEL = "{spec}: reward run {spec} has no checkpoint yet."
REWARD_DIR_NOT_SCORER = (
    "{spec}: {what}, not a sequence-classification model (a reward run's output, or "
    "a LoRA adapter with task_type SEQ_CLS); loaded as a reward model it would "
    "score with a new, random head."
)


class RewardModelError(ValueError):
    """A --reward-model that is no reward model (the message names the option)."""


def reward_model_resolve(spec: str, *, user=None) -> tuple[str, bool]:
    """(path, is_adapter) of a reward run id or a reward-model directory.

    The web queue and `train_rl` check alike, before anything is queued or loaded:
    a run must be a succeeded reward run (with `user`, the web's: one they may see,
    so the check tells nothing of other projects' runs); a directory must hold a
    sequence-classification model (config.json architectures) or a SEQ_CLS LoRA
    adapter (adapter_config.json task_type).
    """
    spec = str(spec).strip()
    if spec.isdigit():
        runs = TrainingRun.objects if user is None else run_list(user=user)
        run = runs.filter(pk=int(spec)).first()
        if run is None:
            raise RewardModelError(REWARD_RUN_MISSING.format(spec=spec))
        if run.kind != RunKind.REWARD:
            raise RewardModelError(
                REWARD_RUN_WRONG_KIND.format(spec=spec, kind=run.kind)
            )
        if run.status != RunStatus.SUCCEEDED:
            raise RewardModelError(
                REWARD_RUN_NOT_FINISHED.format(spec=spec, status=run.status)
            )
        checkpoint = run_final_checkpoint(run=run)
        if checkpoint is None:
            raise RewardModelError(REWARD_RUN_NO_MODEL.format(spec=spec))
        return checkpoint.path, checkpoint.is_adapter
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise RewardModelError(REWARD_RUN_MISSING.format(spec=spec))
    is_adapter = (path / "adapter_config.json").is_file()
    problem = _not_a_scorer(path, is_adapter)
    if problem:
        raise RewardModelError(REWARD_DIR_NOT_SCORER.format(spec=spec, what=problem))
    return str(path), is_adapter


def _not_a_scorer(path: Path, is_adapter: bool) -> str | None:
    """What the directory holds instead of a sequence-classification model, or None."""
    import json

    name = "adapter_config.json" if is_adapter else "config.json"
    try:
        config = json.loads((path / name).read_text())
    except FileNotFoundError:
        return "a directory without config.json"
    except (OSError, ValueError) as exc:
        return f"a directory whose {name} cannot be read ({exc})"
    if not isinstance(config, dict):
        return f"a directory whose {name} is not a JSON object"
    if is_adapter:
        task = config.get("task_type")
        return None if task == "SEQ_CLS" else f"a LoRA adapter for task {task!r}"
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return None
    return "a " + (", ".join(architectures) or "model of no stated architecture")


def checkpoint_list(*, run: TrainingRun | None = None) -> QuerySet:
    checkpoints = ModelCheckpoint.objects.select_related("run")
    return checkpoints.filter(run=run) if run is not None else checkpoints
