"""Admin: read the run registry; the one action offered is cancelling runs.

Runs, metrics and checkpoints are written by the training commands and the worker;
the admin shows them and cancels through the same service as the web button.
"""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from training.models import ModelCheckpoint, TrainingMetric, TrainingRun
from training.services import run_cancel_request


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class CheckpointInline(admin.TabularInline):
    model = ModelCheckpoint
    fields = ("step", "path", "is_adapter", "is_merged", "base_model")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "name",
        "base_model",
        "dataset_snapshot",
        "created_by",
        "created_at",
        "host",
    )
    list_filter = ("status", "kind")
    search_fields = ("name", "base_model", "output_dir", "host")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]
    inlines = [CheckpointInline]
    actions = ["cancel_runs"]

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request, queryset) -> None:
        for run in queryset:
            try:
                run_cancel_request(run=run, user=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.WARNING)
            else:
                self.message_user(request, f"Run {run.pk}: cancel requested.")


@admin.register(TrainingMetric)
class TrainingMetricAdmin(ReadOnlyAdmin):
    list_display = ("run", "step", "split", "epoch", "recorded_at")
    list_filter = ("split",)
    readonly_fields = [f.name for f in TrainingMetric._meta.fields]


@admin.register(ModelCheckpoint)
class ModelCheckpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "step", "path", "is_adapter", "is_merged")
    list_filter = ("is_adapter", "is_merged")
    search_fields = ("path", "base_model")
    readonly_fields = [f.name for f in ModelCheckpoint._meta.fields]
