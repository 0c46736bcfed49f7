"""Serializers of the training API: runs, checkpoints, warnings, queue and cancel input.

Output serializers describe a run with its provenance (snapshot, project, dataset
path, base model, parent run, host); input serializers only validate and reject
fields they do not know, and views pass the result to a service.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.api.serializers import StrictInputSerializer
from training.models import ModelCheckpoint, TrainingRun
from training.recipes_catalog import RECIPES
from training.selectors import run_duration


class TrainingRunSerializer(serializers.ModelSerializer):
    project = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    duration_seconds = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = (
            "id",
            "url",
            "name",
            "kind",
            "status",
            "base_model",
            "dataset_snapshot",
            "project",
            "dataset_path",
            "parent",
            "output_dir",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "host",
            "pid",
            "cancel_requested",
            "error",
            "log_path",
            "summary",
            "config",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_project(self, run: TrainingRun) -> str | None:
        snapshot = run.dataset_snapshot
        return snapshot.project.slug if snapshot is not None else None

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_duration_seconds(self, run: TrainingRun) -> float | None:
        duration = run_duration(run)
        return duration.total_seconds() if duration is not None else None

    @extend_schema_field(serializers.CharField())
    def get_url(self, run: TrainingRun) -> str:
        return f"/runs/{run.pk}/"


class TrainingRunListSerializer(TrainingRunSerializer):
    class Meta(TrainingRunSerializer.Meta):
        fields = tuple(
            f
            for f in TrainingRunSerializer.Meta.fields
            if f not in ("config", "summary", "error", "log_path")
        )
        read_only_fields = fields


class ModelCheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelCheckpoint
        fields = (
            "id",
            "run",
            "path",
            "step",
            "is_adapter",
            "is_merged",
            "base_model",
            "eval_metrics",
            "created_at",
        )
        read_only_fields = fields


class FindingSerializer(serializers.Serializer):
    code = serializers.CharField()
    title = serializers.CharField()
    severity = serializers.ChoiceField(choices=["warning", "critical"])
    metrics = serializers.ListField(child=serializers.CharField())
    step_start = serializers.IntegerField()
    step_end = serializers.IntegerField()
    values = serializers.DictField(child=serializers.FloatField())
    explanation = serializers.CharField()
    advice = serializers.CharField()


class WarningsSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    thresholds = serializers.DictField()
    warnings = FindingSerializer(many=True)


class MetricSeriesSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    status = serializers.CharField()
    last_step = serializers.IntegerField(allow_null=True)
    series = serializers.DictField(
        help_text='{"loss": {"steps": [1, 2], "values": [0.69, 0.61]}, ...}; eval '
        "metrics carry an eval_ prefix; null marks a non-finite value."
    )


class LogTailSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    path = serializers.CharField(allow_blank=True)
    exists = serializers.BooleanField()
    truncated = serializers.BooleanField()
    text = serializers.CharField(allow_blank=True)


class RecipeSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    overrides = serializers.DictField()


class RunQueueSerializer(StrictInputSerializer):
    snapshot = serializers.IntegerField(help_text="DatasetSnapshot id to train on.")
    recipe = serializers.ChoiceField(
        choices=sorted(RECIPES), help_text="GET /api/v1/training-recipes/ lists them."
    )
    kind = serializers.ChoiceField(
        choices=TrainingRun.Kind.choices,
        required=False,
        help_text="Optional check: must be the recipe's kind.",
    )
    base_model = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Local directory (as the worker sees it) or hub id; default: the "
        "parent run's final checkpoint.",
    )
    parent = serializers.IntegerField(
        required=False, allow_null=True, help_text="Run this one continues."
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    overrides = serializers.DictField(
        required=False,
        help_text="Config settings over the recipe, e.g. "
        '{"learning_rate": 1e-5, "max_steps": 50} (TRL argument names).',
    )
