"""Researcher pages: configure, preview and queue snapshots; read and download."""

import json

from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from annotation.models import Role
from annotation.views.access import PageError, project_page
from exports import selectors, services
from exports.formats import SettingsError
from exports.forms import SnapshotForm
from exports.models import SnapshotStatus
from exports.selectors import SNAPSHOT_FILES_GONE
from exports.writers import FilesChanged

SNAPSHOT_NOT_FOUND = "No snapshot {pk} in this project."
NOT_READY = "Snapshot {pk} is {status}; only a finished snapshot can be downloaded."


@project_page(Role.RESEARCHER)
def snapshot_list(request: HttpRequest, project, role) -> HttpResponse:
    """The form; preview counts only when *Preview counts* was pressed (the preview
    reads every vote and prompt of the project), otherwise a POST queues a snapshot.

    The form posts both buttons, so its CSRF token never lands in an address (and
    from there in history, logs and Referer headers); a GET with `preview` in the
    query string previews too, for a link that carries the settings.
    """
    posted = request.method == "POST"
    data = request.POST if posted else request.GET
    wants_preview = "preview" in data
    if not posted and wants_preview:  # a link names only the settings it changes
        data = SnapshotForm.with_defaults(data)
    form = SnapshotForm(data if posted or wants_preview else None)
    preview = None
    if form.is_bound and form.is_valid():
        try:
            config = form.to_config()
            if posted and not wants_preview:
                snapshot = services.snapshot_create(
                    project=project,
                    user=request.user,
                    config=config,
                    name=form.cleaned_data["name"],
                )
                return redirect("snapshot-detail", slug=project.slug, pk=snapshot.pk)
            preview = selectors.export_preview(project, config)
        except SettingsError as exc:  # the settings, or the votes, defeat them
            form.add_settings_errors(exc)
    return render(
        request,
        "exports/snapshot_list.html",
        {
            "project": project,
            "form": form if form.is_bound else SnapshotForm(),
            "preview": preview,
            "snapshots": selectors.snapshots_for(project).defer("hygiene")[:100],
        },
        status=400 if form.is_bound and form.errors else 200,
    )


def _snapshot(project, pk: int):
    snapshot = selectors.snapshots_for(project).filter(pk=pk).first()
    if snapshot is None:
        raise PageError(404, SNAPSHOT_NOT_FOUND.format(pk=pk))
    return snapshot


def _setting_text(value) -> str:
    """A setting as the page shows it: lists joined, JSON's true/false, none."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return value if isinstance(value, str) else json.dumps(value)


@project_page(Role.RESEARCHER)
def snapshot_detail(request: HttpRequest, project, role, pk: int) -> HttpResponse:
    snapshot = _snapshot(project, pk)
    return render(
        request,
        "exports/snapshot_detail.html",
        {
            "project": project,
            "snapshot": snapshot,
            "policy": [(k, _setting_text(v)) for k, v in snapshot.policy.items()],
            "filters": [(k, _setting_text(v)) for k, v in snapshot.filters.items()],
            "files_present": selectors.snapshot_files_present(snapshot),
            "files_gone": SNAPSHOT_FILES_GONE.format(pk=snapshot.pk),
            "card_html": selectors.snapshot_card_html(snapshot),
            "running": snapshot.status
            in (SnapshotStatus.PENDING, SnapshotStatus.RUNNING),
        },
    )


@project_page(Role.RESEARCHER)
def snapshot_download(request: HttpRequest, project, role, pk: int) -> HttpResponse:
    snapshot = _snapshot(project, pk)
    if snapshot.status != SnapshotStatus.SUCCEEDED:
        raise PageError(409, NOT_READY.format(pk=pk, status=snapshot.status))
    try:
        archive = selectors.snapshot_zip(snapshot)
    except FileNotFoundError as exc:
        raise PageError(410, str(exc)) from exc
    except FilesChanged as exc:
        raise PageError(409, str(exc)) from exc
    return FileResponse(
        archive,
        as_attachment=True,
        filename=selectors.snapshot_zip_name(snapshot),
        content_type="application/zip",
    )
