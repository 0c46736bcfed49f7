"""Snapshot API: list, preview, create (queued), read, judgment ids, download as zip.

Researchers and admins of the project only; outsiders get 404, annotators 403.
Lists and details never load the judgment ids; `judgment-ids/` pages through them.
"""

from contextlib import contextmanager

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.response import Response as ApiResponse

from annotation.api.views import PROJECT_SLUG, ProjectScopedMixin
from annotation.models import Role
from config.pagination import StrictPageNumberPagination
from exports import selectors, services
from exports.api import serializers as s
from exports.formats import SettingsError
from exports.models import DatasetSnapshot, SnapshotStatus
from exports.writers import FilesChanged

NOT_READY = "Snapshot {pk} is {status}; only a succeeded snapshot can be downloaded."
IDS_PAGE, IDS_MAX_PAGE = 10_000, 100_000


@contextmanager
def settings_errors_as_400():
    """A SettingsError raised past the serializer (a tokenizer gone since it was
    checked, votes that defeat the policy) is a 400 on its field, not a 500."""
    try:
        yield
    except SettingsError as exc:
        errors = {field: [message] for field, message in exc.errors.items()}
        raise ValidationError(errors) from exc


class JudgmentIdsPagination(StrictPageNumberPagination):
    page_size = IDS_PAGE
    max_page_size = IDS_MAX_PAGE


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class Gone(APIException):
    status_code = status.HTTP_410_GONE
    default_code = "gone"


@extend_schema(tags=["exports"], parameters=[PROJECT_SLUG])
class SnapshotViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Dataset snapshots of a project."""

    minimum_role = Role.RESEARCHER
    noun = "snapshot"
    queryset = DatasetSnapshot.objects.none()

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        snapshots = selectors.snapshots_for(self.project)
        return snapshots.defer("hygiene") if self.action == "list" else snapshots

    def get_serializer_class(self):
        if self.action == "retrieve":
            return s.SnapshotDetailSerializer
        if self.action in ("create", "preview"):
            return s.SnapshotSettingsSerializer
        return s.SnapshotSerializer

    @extend_schema(
        request=s.SnapshotSettingsSerializer,
        responses={202: s.SnapshotSerializer},
        description="Queue a snapshot; the worker builds it (poll its `status`).",
    )
    def create(self, request, *args, **kwargs):
        settings = s.SnapshotSettingsSerializer(data=request.data)
        settings.is_valid(raise_exception=True)
        with settings_errors_as_400():
            snapshot = services.snapshot_create(
                project=self.project,
                user=request.user,
                config=settings.validated_data["config"],
                name=settings.validated_data["name"],
            )
        body = s.SnapshotSerializer(snapshot, context={"request": request}).data
        return ApiResponse(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=s.SnapshotSettingsSerializer,
        responses={200: s.PreviewSerializer},
        description="Counts a snapshot with these settings would have now.",
    )
    @action(detail=False, methods=["post"])
    def preview(self, request, *args, **kwargs):
        settings = s.SnapshotSettingsSerializer(data=request.data)
        settings.is_valid(raise_exception=True)
        with settings_errors_as_400():
            counts = selectors.export_preview(
                self.project, settings.validated_data["config"]
            )
        return ApiResponse(s.PreviewSerializer(counts).data)

    @extend_schema(
        responses={200: s.JudgmentIdsSerializer},
        parameters=[
            OpenApiParameter("page", int, description="Page number, from 1."),
            OpenApiParameter(
                "page_size", int, description=f"Ids per page (at most {IDS_MAX_PAGE})."
            ),
        ],
        description="The ids of the judgments behind the snapshot's rows, ascending.",
    )
    @action(detail=True, methods=["get"], url_path="judgment-ids")
    def judgment_ids(self, request, *args, **kwargs):
        snapshot = self.get_object()
        paginator = JudgmentIdsPagination()
        page = paginator.paginate_queryset(
            selectors.snapshot_judgment_ids(snapshot), request, view=self
        )
        body = paginator.get_paginated_response([int(i) for i in page]).data
        body["sha256"] = snapshot.judgment_ids_sha256
        return ApiResponse(s.JudgmentIdsSerializer(body).data)

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The snapshot folder as a zip."
            ),
            409: OpenApiResponse(description="The snapshot is not finished."),
        }
    )
    @action(detail=True, methods=["get"])
    def download(self, request, *args, **kwargs):
        snapshot = self.get_object()
        if snapshot.status != SnapshotStatus.SUCCEEDED:
            raise Conflict(NOT_READY.format(pk=snapshot.pk, status=snapshot.status))
        try:
            archive = selectors.snapshot_zip(snapshot)
        except FileNotFoundError as exc:
            raise Gone(str(exc)) from exc
        except FilesChanged as exc:
            raise Conflict(str(exc)) from exc
        return FileResponse(
            archive,
            as_attachment=True,
            filename=selectors.snapshot_zip_name(snapshot),
            content_type="application/zip",
        )

    def get_object(self):
        if not str(self.kwargs.get("pk", "")).isdigit():
            raise NotFound(f"No snapshot {self.kwargs.get('pk')!r}.")
        return super().get_object()
