"""Versioned preference-dataset snapshots.

A snapshot records everything needed to explain and reproduce its files: the filters
and aggregation policy, the judgments that went in, what was dropped and why, counts
per split and the sha256 of the written content.

The ids of the judgments used live in their own table (`SnapshotJudgmentIds`, one
compressed blob per snapshot), so listing or joining snapshots never loads millions of
ids; the snapshot row keeps their count and sha256.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import Project
from exports.formats import SPLITS


class DatasetFormat(models.TextChoices):
    PREFERENCE = "preference", "TRL standard preference (prompt/chosen/rejected)"
    CONVERSATIONAL = "conversational", "TRL conversational preference (messages)"
    UNPAIRED = "unpaired", "TRL unpaired / KTO (prompt/completion/label)"
    SFT = "sft", "SFT (chosen responses)"


class SnapshotStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class DatasetSnapshot(models.Model):
    Status = SnapshotStatus

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="snapshots"
    )
    name = models.CharField(max_length=200, blank=True)
    format = models.CharField(
        max_length=16, choices=DatasetFormat.choices, default=DatasetFormat.PREFERENCE
    )
    policy = models.JSONField(
        default=dict,
        blank=True,
        help_text="Aggregation policy, tie/both-bad handling, min agreement, "
        "prior labels in or out, held-out fraction and seed.",
    )
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.PENDING
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output_dir = models.CharField(max_length=1000, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="Rows per split.")
    dropped = models.JSONField(
        default=dict,
        blank=True,
        help_text="Comparisons left out, per reason (a comparison gives one row, two "
        "in the unpaired format).",
    )
    judgment_count = models.PositiveIntegerField(
        default=0, help_text="Judgments behind the exported rows."
    )
    judgment_ids_sha256 = models.CharField(
        max_length=64,
        blank=True,
        help_text="sha256 of the judgment ids, ascending, as int64 little-endian.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(
        max_length=255,
        blank=True,
        help_text="host:pid of the process building the snapshot (stale-run check).",
    )
    content_sha256 = models.CharField(max_length=64, blank=True)
    hygiene = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(format__in=DatasetFormat.values),
                name="snapshot_format_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=SnapshotStatus.values),
                name="snapshot_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"Snapshot {self.pk} of {self.project} ({self.format})"

    @classmethod
    def from_db(cls, db, field_names, values):
        """Counts in split order and drops by reason, as they were written.

        PostgreSQL's jsonb keeps object keys sorted by length, so without this the
        API, the page and the command would list `test` before `train` there and in
        the written order on SQLite.
        """
        instance = super().from_db(db, field_names, values)
        loaded = instance.__dict__
        if isinstance(loaded.get("counts"), dict):
            instance.counts = _in_order(instance.counts, SPLITS)
        if isinstance(loaded.get("dropped"), dict):
            instance.dropped = dict(sorted(instance.dropped.items()))
        return instance


def _in_order(mapping: dict, order: tuple[str, ...]) -> dict:
    """`mapping` with the keys of `order` first, in that order, then the rest sorted."""
    rank = {key: index for index, key in enumerate(order)}
    return dict(
        sorted(mapping.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    )


class SnapshotJudgmentIds(models.Model):
    """The ids of the judgments a snapshot used (see `exports.judgment_ids`)."""

    snapshot = models.OneToOneField(
        DatasetSnapshot,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="judgment_id_set",
    )
    encoded = models.BinaryField(
        help_text="Ascending ids as zlib-compressed int64 deltas."
    )

    def __str__(self) -> str:
        return f"Judgment ids of snapshot {self.snapshot_id}"
