"""Run pages: the runs list, one run (live plots, warnings, log), queue and cancel.

The pages render what `training.selectors` reads; `static/training/run_live.js` polls
the runs API to redraw the metric plots and the log tail while a run is active.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from training import selectors, services
from training.forms import RunQueueForm
from training.models import RunStatus, TrainingRun
from training.recipes_catalog import RECIPES

RUN_QUEUED = "Run {run_id} queued; a worker (manage.py db_worker) will start it."
RUN_CANCELLED = "Run {run_id} cancelled."
RUN_CANCELLING = "Run {run_id} will stop at its next step."


def error_page(request: HttpRequest, error: selectors.AccessDenied) -> HttpResponse:
    return render(
        request,
        "training/error.html",
        {"status": error.status, "message": error.message},
        status=error.status,
    )


def duration_text(duration: timedelta | None) -> str:
    """Render a duration as "1h 02m 03s" (no microseconds), "" when unknown."""
    if duration is None:
        return ""
    seconds = int(duration.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _snapshot_url(snapshot) -> str | None:
    if snapshot is None:
        return None
    try:
        return reverse(
            "snapshot-detail", kwargs={"slug": snapshot.project.slug, "pk": snapshot.pk}
        )
    except NoReverseMatch:
        return None


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status") or None
    kind = request.GET.get("kind") or None
    runs = selectors.run_list(
        user=request.user,
        status=status if status in RunStatus.values else None,
        kind=kind if kind in TrainingRun.Kind.values else None,
    )[:500]
    return render(
        request,
        "training/run_list.html",
        {
            "runs": [(run, duration_text(selectors.run_duration(run))) for run in runs],
            "statuses": RunStatus.choices,
            "kinds": TrainingRun.Kind.choices,
            "status": status,
            "kind": kind,
            "can_queue": selectors.snapshots_for_training(user=request.user).exists(),
        },
    )


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    try:
        run = selectors.run_get(user=request.user, run_id=run_id)
    except selectors.AccessDenied as error:
        return error_page(request, error)
    return render(
        request,
        "training/run_detail.html",
        {
            "run": run,
            "duration": duration_text(selectors.run_duration(run)),
            "snapshot_url": _snapshot_url(run.dataset_snapshot),
            "config_json": json.dumps(run.config, indent=2, sort_keys=True),
            "summary_json": json.dumps(run.summary, indent=2, sort_keys=True),
            "warnings": selectors.run_warnings(run=run),
            "checkpoints": selectors.run_checkpoints(run=run),
            "log": selectors.run_log_tail(run=run, lines=200),
            "active": run.status in selectors.ACTIVE_STATUSES,
            "can_cancel": selectors.run_can_cancel(user=request.user, run=run),
        },
    )


@login_required
def run_new(request: HttpRequest) -> HttpResponse:
    snapshots = selectors.snapshots_for_training(user=request.user)
    parents = selectors.run_list(user=request.user, status=RunStatus.SUCCEEDED)
    initial = {"snapshot": request.GET.get("snapshot"), "recipe": "sft-lora-tiny"}
    form = RunQueueForm(
        request.POST or None, initial=initial, snapshots=snapshots, parents=parents
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            run = services.run_queue(
                snapshot=data["snapshot"],
                recipe=data["recipe"],
                base_model=data["base_model"],
                parent=data["parent"],
                name=data["name"],
                overrides=form.overrides(),
                user=request.user,
            )
        except ValidationError as exc:
            by_field = exc.message_dict if hasattr(exc, "error_dict") else {}
            by_field = by_field or {None: exc.messages}
            for field, errors in by_field.items():
                for message in errors:
                    form.add_error(field if field in form.fields else None, message)
        else:
            messages.success(request, RUN_QUEUED.format(run_id=run.pk))
            return redirect("training-run-detail", run_id=run.pk)
    return render(
        request,
        "training/run_new.html",
        {
            "form": form,
            "recipes": RECIPES.values(),
            "has_snapshots": snapshots.exists(),
        },
    )


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    try:
        run = selectors.run_get(user=request.user, run_id=run_id)
    except selectors.AccessDenied as error:
        return error_page(request, error)
    try:
        run = services.run_cancel_request(run=run, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        done = run.status == RunStatus.CANCELLED
        text = RUN_CANCELLED if done else RUN_CANCELLING
        messages.success(request, text.format(run_id=run.pk))
    return redirect("training-run-detail", run_id=run_id)
