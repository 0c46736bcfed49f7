"""Django admin for the annotation app: browse, search and fix settings by hand.

Every write goes through a service, as everywhere else: projects and memberships
are saved with `project_create` / `project_update` / `membership_set`, a comparison's
priority and gold answer with `comparison_update` (which keeps `Judgment.is_gold` in
step). The records of the annotation loop (prompts, responses, imports, assignments,
judgments) are read-only here: they enter through imports and the queue, and an edit
by hand would break the counters the queue keeps or the hashes duplicates are found
by. Projects and comparisons are not deleted from the admin: that would delete the
judgments behind them.
"""

from django import forms
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
from annotation.services.comparisons import comparison_update, gold_choice_check
from annotation.services.projects import (
    PROJECT_UPDATABLE_FIELDS,
    aspects_check,
    membership_remove,
    membership_set,
    project_create,
    project_settings_check,
    project_update,
)


def field_errors(check, *args, **kwargs):
    """Run a service check in a form's clean_<field>: its errors become the field's."""
    try:
        return check(*args, **kwargs)
    except ValidationError as exc:
        raise ValidationError(exc.messages) from None


class ReadOnlyMixin:
    """Browse and search only: these rows are written by imports and the queue."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


class MembershipWritesMixin:
    """Save and delete memberships through the services."""

    def save_membership(self, membership: Membership) -> Membership:
        return membership_set(
            project=membership.project, user=membership.user, role=membership.role
        )

    def delete_membership(self, membership: Membership) -> None:
        membership_remove(project=membership.project, user=membership.user)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class ProjectAdminForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["slug", *PROJECT_UPDATABLE_FIELDS]

    def clean_aspects(self):
        return field_errors(aspects_check, self.cleaned_data.get("aspects"))

    def clean(self):
        cleaned = super().clean()
        project_settings_check(Project(**cleaned))
        return cleaned


@admin.register(Project)
class ProjectAdmin(MembershipWritesMixin, admin.ModelAdmin):
    form = ProjectAdminForm
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

    def get_readonly_fields(self, request, obj=None):
        # The slug names the project in URLs, exports and training runs.
        return [*self.readonly_fields, *(["slug"] if obj else [])]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        if not change:
            created = project_create(
                slug=obj.slug,
                **{name: getattr(obj, name) for name in PROJECT_UPDATABLE_FIELDS},
            )
            obj.pk, obj.created_at, obj.updated_at = (
                created.pk,
                created.created_at,
                created.updated_at,
            )
            return
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in PROJECT_UPDATABLE_FIELDS
        }
        if changes:
            project_update(project=obj, **changes)

    def save_formset(self, request, form, formset, change):
        memberships = formset.save(commit=False)
        for membership in formset.deleted_objects:
            self.delete_membership(membership)
        for membership in memberships:
            membership.project = form.instance
            self.save_membership(membership)


@admin.register(Membership)
class MembershipAdmin(MembershipWritesMixin, admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__slug"]
    autocomplete_fields = ["user", "project"]
    list_select_related = ["user", "project"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "project"] if obj else []

    def save_model(self, request, obj, form, change):
        obj.pk = self.save_membership(obj).pk

    def delete_model(self, request, obj):
        self.delete_membership(obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("user", "project"):
            self.delete_membership(membership)


@admin.register(ImportBatch)
class ImportBatchAdmin(ReadOnlyAdmin):
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


class ResponseInline(ReadOnlyMixin, admin.StackedInline):
    model = Response
    extra = 0
    fields = ["model_name", "text", "generation_params", "external_id", "content_hash"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Prompt)
class PromptAdmin(ReadOnlyAdmin):
    list_display = ["id", "project", "external_id", "split", "created_at"]
    list_filter = ["split", "project"]
    search_fields = ["external_id", "content_hash"]
    autocomplete_fields = ["project"]
    raw_id_fields = ["import_batch"]
    readonly_fields = ["content_hash", "created_at"]
    list_select_related = ["project"]
    inlines = [ResponseInline]


@admin.register(Response)
class ResponseAdmin(ReadOnlyAdmin):
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


class ComparisonAdminForm(forms.ModelForm):
    class Meta:
        model = Comparison
        fields = ["priority", "gold_choice"]

    def clean_gold_choice(self):
        gold_choice = self.cleaned_data.get("gold_choice") or None
        field_errors(
            gold_choice_check, project=self.instance.project, gold_choice=gold_choice
        )
        return gold_choice


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    """Priority and gold answer are editable (through `comparison_update`)."""

    form = ComparisonAdminForm
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
    readonly_fields = [
        "project",
        "prompt",
        "response_a",
        "response_b",
        "origin",
        "import_batch",
        "judgment_count",
        "lease_count",
        "random_key",
        "created_at",
    ]
    fields = ["priority", "gold_choice", *readonly_fields]
    list_select_related = ["project", "prompt", "response_a", "response_b"]
    actions = [raise_priority, clear_gold]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        comparison_update(
            comparison=obj,
            priority=form.cleaned_data["priority"],
            gold_choice=form.cleaned_data["gold_choice"],
        )


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
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
class JudgmentAdmin(ReadOnlyAdmin):
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
