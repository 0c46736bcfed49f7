"""Admin: read snapshots; the only change offered is deletion (files included)."""

from django.contrib import admin

from exports.models import DatasetSnapshot
from exports.services import snapshot_delete


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "name", "format", "status", "created_at")
    list_filter = ("status", "format", "project")
    search_fields = ("name", "content_sha256")
    readonly_fields = [f.name for f in DatasetSnapshot._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj) -> None:
        snapshot_delete(snapshot=obj)

    def delete_queryset(self, request, queryset) -> None:
        for snapshot in queryset:
            snapshot_delete(snapshot=snapshot)
