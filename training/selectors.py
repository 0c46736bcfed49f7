"""Reads of the run registry. Nothing here writes or imports torch."""

from __future__ import annotations

from django.db.models import QuerySet

from training.models import ModelCheckpoint, TrainingMetric, TrainingRun


def run_list(*, kind: str | None = None, status: str | None = None) -> QuerySet:
    runs = TrainingRun.objects.select_related("dataset_snapshot", "parent")
    if kind:
        runs = runs.filter(kind=kind)
    if status:
        runs = runs.filter(status=status)
    return runs


def run_metrics(*, run: TrainingRun, split: str | None = None) -> QuerySet:
    metrics = TrainingMetric.objects.filter(run=run).order_by("step", "split")
    return metrics.filter(split=split) if split else metrics


def run_metric_series(*, run: TrainingRun, split: str = "train") -> dict[str, list]:
    """Return {"step": [...], metric: [...]} with None where a step lacks a metric."""
    rows = list(run_metrics(run=run, split=split).values_list("step", "values"))
    keys = sorted({key for _, values in rows for key in values})
    series: dict[str, list] = {"step": [step for step, _ in rows]}
    for key in keys:
        series[key] = [values.get(key) for _, values in rows]
    return series


def run_final_checkpoint(*, run: TrainingRun) -> ModelCheckpoint | None:
    """The checkpoint a later stage should start from: the final model, else the
    latest step."""
    checkpoints = ModelCheckpoint.objects.filter(run=run)
    final = checkpoints.filter(path=run.output_dir).first()
    return final or checkpoints.order_by("-step", "-id").first()


def checkpoint_list(*, run: TrainingRun | None = None) -> QuerySet:
    checkpoints = ModelCheckpoint.objects.select_related("run")
    return checkpoints.filter(run=run) if run is not None else checkpoints
