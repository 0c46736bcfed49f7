"""Reads about import batches."""

from django.db.models import QuerySet

from annotation.models import ImportBatch, Project


def import_batch_list(*, project: Project) -> QuerySet[ImportBatch]:
    """A project's import attempts, newest first, with who made them."""
    return (
        ImportBatch.objects.filter(project=project)
        .select_related("created_by", "project")
        .order_by("-created_at", "-id")
    )
