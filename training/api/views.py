"""Training API: runs (list, detail, queue, cancel), metrics, warnings, checkpoints.

Visibility follows `training.selectors`: researchers of the snapshot's project and
superusers see a run; a project member below researcher gets 403; anyone else gets
404. Nothing here imports torch: runs execute in a worker's subprocess.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.pagination import StrictPageNumberPagination
from training import selectors, services
from training.api import serializers as s
from training.models import RunStatus, TrainingRun
from training.pitfalls import PitfallThresholds
from training.recipes_catalog import RECIPES

BAD_INTEGER = "{name} must be a whole number, got {value!r}."
BAD_STATUS = "Unknown status {value!r}; choose one of: {known}."
BAD_KIND = "Unknown kind {value!r}; choose one of: {known}."
MAX_LOG_LINES = 2000


class Pagination(StrictPageNumberPagination):
    max_page_size = 500


@contextmanager
def access_errors():
    """Turn `AccessDenied` into 403/404 and a service's ValidationError into 400."""
    try:
        yield
    except selectors.AccessDenied as exc:
        raise (NotFound if exc.status == 404 else PermissionDenied)(
            exc.message
        ) from exc
    except DjangoValidationError as exc:
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        raise serializers.ValidationError(detail) from exc


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise serializers.ValidationError(
            {name: [BAD_INTEGER.format(name=name, value=raw)]}
        ) from None


class RunView(APIView):
    """Base: load the run named in the URL for the caller."""

    def get_run(self, run_id: int) -> TrainingRun:
        with access_errors():
            return selectors.run_get(user=self.request.user, run_id=run_id)


RUN_FILTERS = [
    OpenApiParameter("status", OpenApiTypes.STR, description="queued, running, ..."),
    OpenApiParameter("kind", OpenApiTypes.STR, description="sft, reward, dpo, rl"),
]


class RunListView(generics.GenericAPIView):
    pagination_class = Pagination
    serializer_class = s.TrainingRunListSerializer

    @extend_schema(
        parameters=RUN_FILTERS,
        summary="Runs you can see, newest first",
        operation_id="v1_runs_list",
    )
    def get(self, request: Request) -> Response:
        run_status = request.query_params.get("status") or None
        kind = request.query_params.get("kind") or None
        if run_status and run_status not in RunStatus.values:
            raise serializers.ValidationError(
                {
                    "status": [
                        BAD_STATUS.format(
                            value=run_status, known=", ".join(RunStatus.values)
                        )
                    ]
                }
            )
        if kind and kind not in TrainingRun.Kind.values:
            raise serializers.ValidationError(
                {
                    "kind": [
                        BAD_KIND.format(
                            value=kind, known=", ".join(TrainingRun.Kind.values)
                        )
                    ]
                }
            )
        runs = selectors.run_list(user=request.user, status=run_status, kind=kind)
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        request=s.RunQueueSerializer,
        responses={201: s.TrainingRunSerializer},
        summary="Queue a run of a recipe on a snapshot (a worker executes it)",
    )
    def post(self, request: Request) -> Response:
        given = s.RunQueueSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        with access_errors():
            snapshot = selectors.snapshot_for_training(
                user=request.user, snapshot_id=data["snapshot"]
            )
            parent = None
            if data.get("parent") is not None:
                parent = selectors.run_get(user=request.user, run_id=data["parent"])
            run = services.run_queue(
                snapshot=snapshot,
                recipe=data["recipe"],
                kind=data.get("kind"),
                base_model=data.get("base_model", ""),
                parent=parent,
                name=data.get("name", ""),
                overrides=data.get("overrides") or {},
                user=request.user,
            )
        return Response(s.TrainingRunSerializer(run).data, status=201)


class RunDetailView(RunView):
    @extend_schema(responses=s.TrainingRunSerializer, summary="One run")
    def get(self, request: Request, run_id: int) -> Response:
        return Response(s.TrainingRunSerializer(self.get_run(run_id)).data)


class RunStateConflict(APIException):
    """The run's state does not allow the request (already finished, already
    cancelling): 409 with {"detail": ...}, as the annotator API's conflicts."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class RunCancelView(RunView):
    @extend_schema(
        request=None,
        responses={202: s.TrainingRunSerializer, 409: OpenApiTypes.OBJECT},
        summary="Cancel a queued run, or ask a running one to stop",
        description="409 when the run has finished or is already being cancelled.",
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = self.get_run(run_id)
        with access_errors():
            try:
                run = services.run_cancel_request(run=run, user=request.user)
            except services.RunStateError as exc:
                raise RunStateConflict(" ".join(exc.messages)) from exc
        return Response(
            s.TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED
        )


class RunMetricsView(RunView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after_step",
                OpenApiTypes.INT,
                description="Only points logged after this step (live polling).",
            )
        ],
        responses=s.MetricSeriesSerializer,
        summary="Metric series of a run",
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = self.get_run(run_id)
        after = _int_param(request, "after_step", None)
        series = selectors.run_metric_series(run=run, after_step=after)
        steps = [step for entry in series.values() for step in entry["steps"]]
        return Response(
            {
                "run": run.pk,
                "status": run.status,
                "last_step": max(steps) if steps else after,
                "series": series,
            }
        )


THRESHOLD_PARAMETERS = [
    OpenApiParameter(
        name, OpenApiTypes.NUMBER, description=spec.metadata.get("help", "")
    )
    for name, spec in PitfallThresholds.__dataclass_fields__.items()
]


class RunWarningsView(RunView):
    @extend_schema(
        parameters=THRESHOLD_PARAMETERS,
        responses=s.WarningsSerializer,
        summary="Pitfall warnings from the run's metrics (thresholds overridable)",
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = self.get_run(run_id)
        overrides = {
            **asdict(selectors.default_thresholds()),
            **{k: v for k, v in request.query_params.items() if k != "format"},
        }
        try:
            thresholds = PitfallThresholds.from_mapping(overrides)
        except ValueError as exc:
            raise serializers.ValidationError({"thresholds": [str(exc)]}) from exc
        findings = selectors.run_warnings(run=run, thresholds=thresholds)
        return Response(
            {
                "run": run.pk,
                "thresholds": asdict(thresholds),
                "warnings": [finding.as_dict() for finding in findings],
            }
        )


class RunCheckpointsView(RunView):
    @extend_schema(
        responses=s.ModelCheckpointSerializer(many=True), summary="Checkpoints"
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = self.get_run(run_id)
        checkpoints = selectors.run_checkpoints(run=run)
        return Response(s.ModelCheckpointSerializer(checkpoints, many=True).data)


class RunLogView(RunView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "lines", OpenApiTypes.INT, description="Lines from the end (200)."
            )
        ],
        responses=s.LogTailSerializer,
        summary="The end of the run's log",
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = self.get_run(run_id)
        lines = _int_param(request, "lines", 200)
        lines = max(1, min(lines, MAX_LOG_LINES))
        tail = selectors.run_log_tail(run=run, lines=lines)
        return Response({"run": run.pk, **asdict(tail)})


class RecipeListView(APIView):
    @extend_schema(responses=s.RecipeSerializer(many=True), summary="Run recipes")
    def get(self, request: Request) -> Response:
        return Response([recipe.as_dict() for recipe in RECIPES.values()])
