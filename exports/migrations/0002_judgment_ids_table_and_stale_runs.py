"""Judgment ids move to their own compact table; builds record who runs them.

Existing snapshots keep their provenance: each JSON list of judgment ids is encoded
into `SnapshotJudgmentIds` (ascending, zlib-compressed int64 deltas, as
`exports.judgment_ids.encode` writes) with its count and sha256, before the JSON
column is dropped. Going back decodes them into the JSON column again.
"""

import hashlib
import zlib

import django.db.models.deletion
import numpy as np
from django.db import migrations, models


def _canonical(ids):
    return np.unique(np.asarray(ids, dtype=np.int64))


def _encode(ids) -> bytes:
    deltas = np.diff(_canonical(ids), prepend=np.int64(0)).astype("<i8")
    return zlib.compress(deltas.tobytes(), 6)


def move_ids_to_table(apps, schema_editor):
    Snapshot = apps.get_model("exports", "DatasetSnapshot")
    Ids = apps.get_model("exports", "SnapshotJudgmentIds")
    for snapshot in Snapshot.objects.exclude(judgment_ids=[]).iterator(chunk_size=50):
        ids = _canonical(snapshot.judgment_ids or [])
        Ids.objects.create(snapshot_id=snapshot.pk, encoded=_encode(ids))
        snapshot.judgment_count = len(ids)
        snapshot.judgment_ids_sha256 = hashlib.sha256(
            ids.astype("<i8").tobytes()
        ).hexdigest()
        snapshot.save(update_fields=["judgment_count", "judgment_ids_sha256"])


def move_ids_back(apps, schema_editor):
    Snapshot = apps.get_model("exports", "DatasetSnapshot")
    Ids = apps.get_model("exports", "SnapshotJudgmentIds")
    for row in Ids.objects.iterator(chunk_size=50):
        deltas = np.frombuffer(zlib.decompress(bytes(row.encoded)), dtype="<i8")
        Snapshot.objects.filter(pk=row.snapshot_id).update(
            judgment_ids=np.cumsum(deltas).tolist()
        )


class Migration(migrations.Migration):

    dependencies = [
        ("exports", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="SnapshotJudgmentIds",
            fields=[
                (
                    "snapshot",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="judgment_id_set",
                        serialize=False,
                        to="exports.datasetsnapshot",
                    ),
                ),
                (
                    "encoded",
                    models.BinaryField(
                        help_text="Ascending ids as zlib-compressed int64 deltas."
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="datasetsnapshot",
            name="judgment_count",
            field=models.PositiveIntegerField(
                default=0, help_text="Judgments behind the exported rows."
            ),
        ),
        migrations.AddField(
            model_name="datasetsnapshot",
            name="judgment_ids_sha256",
            field=models.CharField(
                blank=True,
                help_text="sha256 of the judgment ids, ascending, as int64 "
                "little-endian.",
                max_length=64,
            ),
        ),
        migrations.AddField(
            model_name="datasetsnapshot",
            name="started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="datasetsnapshot",
            name="worker",
            field=models.CharField(
                blank=True,
                help_text="host:pid of the process building the snapshot "
                "(stale-run check).",
                max_length=255,
            ),
        ),
        migrations.AlterField(
            model_name="datasetsnapshot",
            name="dropped",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Comparisons left out, per reason (a comparison gives one "
                "row, two in the unpaired format).",
            ),
        ),
        migrations.RunPython(move_ids_to_table, move_ids_back),
        migrations.RemoveField(
            model_name="datasetsnapshot",
            name="judgment_ids",
        ),
    ]
