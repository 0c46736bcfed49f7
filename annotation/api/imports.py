"""Import API: upload a file into a project, list and read past import batches.

`POST /api/v1/projects/{project_slug}/imports/` (multipart, researchers and admins)
answers 201 with the new batch, 200 with the earlier batch when the same file was
already imported (`already_imported: true`, nothing changed), or 400 with every error
as {file, line, unit, field, reason} when the file was rejected (nothing written; the
failed attempt is listed with status `failed`).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response as ApiResponse

from annotation.api.views import PROJECT_SLUG, ProjectScopedMixin
from annotation.importers.records import FORMATS
from annotation.models import ImportBatch, Split
from annotation.selectors.imports import import_batch_list
from annotation.services.imports import ImportRejected, batch_summary, import_upload

UNKNOWN_FORMAT = "Unknown format {value!r}; choose one of: {choices} (or leave it out)."


class ImportBatchSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    already_imported = serializers.SerializerMethodField(
        help_text="True when this file had been imported before and nothing changed."
    )
    summary = serializers.SerializerMethodField(help_text="What the import did.")

    class Meta:
        model = ImportBatch
        fields = [
            "id",
            "file_name",
            "sha256",
            "format",
            "split",
            "status",
            "counts",
            "errors",
            "created_by",
            "created_at",
            "already_imported",
            "summary",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_already_imported(self, batch: ImportBatch) -> bool:
        return getattr(batch, "already_imported", False)

    @extend_schema_field(OpenApiTypes.STR)
    def get_summary(self, batch: ImportBatch) -> str:
        return batch_summary(batch)


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A .jsonl, .json (array), .csv or .parquet file."
    )
    format = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text=(
            "Record format, one of: " + ", ".join(FORMATS) + ". Detected from the "
            "first record when omitted."
        ),
    )
    split = serializers.ChoiceField(choices=Split.choices, default=Split.TRAIN)
    pairs_per_prompt = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        default=None,
        help_text="Comparisons sampled per prompt (all pairs when omitted).",
    )
    seed = serializers.IntegerField(default=0, help_text="Seed of the pair sampling.")

    def validate_format(self, value: str | None) -> str | None:
        if not value:
            return None
        if value not in FORMATS:
            raise serializers.ValidationError(
                UNKNOWN_FORMAT.format(value=value, choices=", ".join(FORMATS))
            )
        return value


class RowErrorSerializer(serializers.Serializer):
    file = serializers.CharField()
    line = serializers.IntegerField(
        allow_null=True, help_text="Line (or 0-based row for Parquet); null: the file."
    )
    unit = serializers.CharField(help_text="'line' or 'row'.")
    field = serializers.CharField(help_text="Path of the field, e.g. responses[1].text")
    reason = serializers.CharField()


class ImportRejectedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = RowErrorSerializer(many=True)
    more_errors = serializers.IntegerField(help_text="Errors beyond those listed.")
    batch = serializers.IntegerField(help_text="Id of the failed import batch.")


@extend_schema(tags=["imports"], parameters=[PROJECT_SLUG])
class ImportBatchViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Import attempts of a project (succeeded and failed), researchers and admins."""

    serializer_class = ImportBatchSerializer
    queryset = ImportBatch.objects.none()
    parser_classes = [MultiPartParser, FormParser]
    filterset_fields = ["status", "split", "format"]
    noun = "import batch"

    def get_queryset(self):
        if self.is_schema_view():
            return self.queryset
        return import_batch_list(project=self.project)

    @extend_schema(
        request={"multipart/form-data": ImportUploadSerializer},
        responses={
            201: ImportBatchSerializer,
            200: OpenApiResponse(
                ImportBatchSerializer,
                description="Already imported: the earlier batch, nothing changed.",
            ),
            400: ImportRejectedSerializer,
        },
    )
    def create(self, request, project_slug: str):
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        options = dict(upload.validated_data)
        try:
            batch = import_upload(
                project=self.project,
                upload=options.pop("file"),
                user=request.user,
                **options,
            )
        except ImportRejected as exc:
            return ApiResponse(
                {
                    "detail": str(exc).splitlines()[0],
                    "errors": [error.as_dict() for error in exc.errors],
                    "more_errors": exc.more,
                    "batch": exc.batch.pk,
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        code = status.HTTP_200_OK if batch.already_imported else status.HTTP_201_CREATED
        return ApiResponse(ImportBatchSerializer(batch).data, status=code)
