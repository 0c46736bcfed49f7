"""Worker task: build a queued snapshot (`manage.py db_worker` runs it).

The web process only enqueues; `datasets` and the writers load here, in the worker.
"""

from django_tasks import task

from exports.models import DatasetSnapshot, SnapshotStatus


@task()
def build_snapshot(snapshot_id: int) -> str:
    """Build one pending snapshot; a snapshot already claimed or gone is left alone."""
    from exports.services import snapshot_build

    snapshot = DatasetSnapshot.objects.filter(
        pk=snapshot_id, status=SnapshotStatus.PENDING
    ).first()
    if snapshot is None:
        return "skipped"
    snapshot = snapshot_build(snapshot=snapshot)
    return snapshot.content_sha256
