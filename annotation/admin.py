"""Django admin for the annotation app: browse, search and fix data by hand.

Plain edits go through Django's own admin forms; custom actions call services.
Hashes, counters kept by the queue, and ids are read-only.
"""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from annotation.models import (
    Assignment,
    Comparison,
    ImportBatch,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
)
from annotation.services.comparisons import comparison_update


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "target_judgments",
        "lease_seconds",
        "allow_tie",
        "allow_both_bad",
        "gold_rate",
        "created_at",
    ]
    list_filter = ["allow_tie", "allow_both_bad"]
    search_fields = ["slug", "name"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__slug"]
    autocomplete_fields = ["user", "project"]
    list_select_related = ["user", "project"]


@admin.register(ImportBatch)
class ImportBatchAdmin(admin.ModelAdmin):
    list_display = [
        "file_name",
        "project",
        "format",
        "split",
        "status",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "format", "split", "project"]
    search_fields = ["file_name", "sha256", "project__slug"]
    autocomplete_fields = ["project", "created_by"]
    readonly_fields = ["sha256", "counts", "errors", "created_at"]
    list_select_related = ["project", "created_by"]
    date_hierarchy = "created_at"


class ResponseInline(admin.StackedInline):
    model = Response
    extra = 0
    fields = ["model_name", "text", "generation_params", "external_id", "content_hash"]
    readonly_fields = ["content_hash"]
    show_change_link = True


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "external_id", "split", "created_at"]
    list_filter = ["split", "project"]
    search_fields = ["external_id", "content_hash"]
    autocomplete_fields = ["project"]
    raw_id_fields = ["import_batch"]
    readonly_fields = ["content_hash", "created_at"]
    list_select_related = ["project"]
    inlines = [ResponseInline]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "model_name", "external_id", "created_at"]
    list_filter = ["model_name", "prompt__project"]
    search_fields = ["model_name", "external_id", "content_hash", "text"]
    raw_id_fields = ["prompt"]
    readonly_fields = ["content_hash", "created_at"]
    list_select_related = ["prompt"]


@admin.action(description="Raise priority by 10 (served sooner)")
def raise_priority(modeladmin, request, queryset):
    for comparison in queryset:
        comparison_update(comparison=comparison, priority=comparison.priority + 10)
    modeladmin.message_user(
        request, f"Raised the priority of {queryset.count()} comparison(s)."
    )


@admin.action(description="Unmark gold (clear the known answer)")
def clear_gold(modeladmin, request, queryset):
    for comparison in queryset:
        try:
            comparison_update(comparison=comparison, gold_choice=None)
        except ValidationError as exc:
            modeladmin.message_user(
                request, f"{comparison}: {' '.join(exc.messages)}", messages.ERROR
            )
            return
    modeladmin.message_user(request, f"Unmarked {queryset.count()} comparison(s).")


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "prompt",
        "response_a",
        "response_b",
        "priority",
        "origin",
        "gold_choice",
        "judgment_count",
        "lease_count",
    ]
    list_filter = ["origin", "project", ("gold_choice", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "prompt__external_id", "response_a__model_name"]
    raw_id_fields = ["prompt", "response_a", "response_b", "import_batch"]
    autocomplete_fields = ["project"]
    readonly_fields = ["judgment_count", "lease_count", "random_key", "created_at"]
    list_select_related = ["project", "prompt", "response_a", "response_b"]
    actions = [raise_priority, clear_gold]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "comparison",
        "annotator",
        "status",
        "left_is_first",
        "leased_at",
        "expires_at",
        "completed_at",
    ]
    list_filter = ["status", "comparison__project"]
    search_fields = ["annotator__username", "=comparison__id"]
    raw_id_fields = ["comparison"]
    autocomplete_fields = ["annotator"]
    list_select_related = ["comparison", "annotator"]
    date_hierarchy = "leased_at"


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = [
        "public_id",
        "comparison",
        "annotator",
        "origin",
        "choice",
        "strength",
        "is_gold",
        "submitted_at",
    ]
    list_filter = ["origin", "choice", "is_gold", "comparison__project"]
    search_fields = ["annotator__username", "=public_id", "rationale"]
    raw_id_fields = ["comparison", "assignment", "import_batch"]
    autocomplete_fields = ["annotator"]
    readonly_fields = ["public_id"]
    list_select_related = ["comparison", "annotator"]
    date_hierarchy = "submitted_at"
