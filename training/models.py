"""Run registry: every training run, its metrics per logging step and its checkpoints.

Evaluation (stage 4) serves and scores `ModelCheckpoint` rows, so a checkpoint records
what a server needs to load it: its path, whether it is a LoRA adapter, and its base.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class RunKind(models.TextChoices):
    SFT = "sft", "SFT"
    REWARD = "reward", "Reward model"
    DPO = "dpo", "DPO"
    RL = "rl", "Online RL (RLOO/GRPO)"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TrainingRun(models.Model):
    Kind = RunKind
    Status = RunStatus

    kind = models.CharField(max_length=16, choices=RunKind.choices)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    name = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True, help_text="Resolved config.")
    dataset_snapshot = models.ForeignKey(
        "exports.DatasetSnapshot",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
    )
    dataset_path = models.CharField(max_length=1000, blank=True)
    base_model = models.CharField(max_length=500)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
    )
    output_dir = models.CharField(max_length=1000, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    log_path = models.CharField(max_length=1000, blank=True)
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=RunKind.values), name="run_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.kind}, {self.status})"


class TrainingMetric(models.Model):
    """One logging step of a run: `values` holds every number the trainer logged."""

    run = models.ForeignKey(
        TrainingRun, on_delete=models.CASCADE, related_name="metrics"
    )
    step = models.PositiveIntegerField()
    epoch = models.FloatField(null=True, blank=True)
    split = models.CharField(max_length=8, default="train")  # train / eval
    values = models.JSONField(default=dict)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "step", "split"], name="metric_one_row_per_step_split"
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.run_id} step {self.step} ({self.split})"


class ModelCheckpoint(models.Model):
    run = models.ForeignKey(
        TrainingRun, on_delete=models.CASCADE, related_name="checkpoints"
    )
    path = models.CharField(max_length=1000)
    step = models.PositiveIntegerField()
    is_adapter = models.BooleanField(help_text="LoRA adapter (needs its base model).")
    is_merged = models.BooleanField(default=False)
    base_model = models.CharField(max_length=500)
    eval_metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "path"], name="checkpoint_unique_path"
            ),
        ]

    def __str__(self) -> str:
        return f"Checkpoint {self.path} (step {self.step})"
