"""Serializers of the snapshot API."""

from rest_framework import serializers

from annotation.api.serializers import StrictInputSerializer
from exports.aggregation import POLICIES
from exports.formats import FILE_KINDS, SFT_STYLES, ExportConfig, SettingsError
from exports.models import DatasetFormat, DatasetSnapshot


class SnapshotSettingsSerializer(StrictInputSerializer):
    """Settings of a new snapshot (all optional; defaults as in the command).

    Unknown fields are refused (a typo must not silently fall back to a default).
    `tokenizer_path` is checked where the snapshot is created (services)."""

    name = serializers.CharField(max_length=200, required=False, default="")
    format = serializers.ChoiceField(
        choices=DatasetFormat.choices, default=DatasetFormat.PREFERENCE.value
    )
    policy = serializers.ChoiceField(choices=POLICIES, default="majority")
    min_agreement = serializers.FloatField(default=0.5)
    min_votes = serializers.IntegerField(default=1)
    include_prior = serializers.BooleanField(default=False)
    both_bad_as_negatives = serializers.BooleanField(default=False)
    sft_style = serializers.ChoiceField(choices=SFT_STYLES, default="messages")
    heldout_fraction = serializers.FloatField(default=0.1)
    seed = serializers.IntegerField(default=0)
    max_chars = serializers.IntegerField(default=20_000)
    tokenizer_path = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=4096
    )
    max_tokens = serializers.IntegerField(required=False, allow_null=True, default=None)
    files = serializers.ListField(
        child=serializers.ChoiceField(choices=FILE_KINDS),
        required=False,
        default=list(FILE_KINDS),
        help_text="File kinds to write; parquet is always among them.",
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        settings = {k: v for k, v in attrs.items() if k != "name"}
        settings["files"] = tuple(settings["files"])
        try:
            attrs["config"] = ExportConfig(**settings)
        except SettingsError as exc:
            raise serializers.ValidationError(exc.errors) from exc
        return attrs


class PreviewSerializer(serializers.Serializer):
    comparisons = serializers.IntegerField()
    kept_comparisons = serializers.IntegerField()
    judgments = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    dropped = serializers.DictField(child=serializers.IntegerField())


class SnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = [
            "id",
            "name",
            "format",
            "policy",
            "filters",
            "status",
            "created_by",
            "created_at",
            "finished_at",
            "counts",
            "dropped",
            "judgment_count",
            "judgment_ids_sha256",
            "content_sha256",
            "error",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, obj: DatasetSnapshot) -> str | None:
        if obj.status != DatasetSnapshot.Status.SUCCEEDED:
            return None
        request = self.context.get("request")
        path = f"/api/v1/projects/{obj.project.slug}/snapshots/{obj.pk}/download/"
        return request.build_absolute_uri(path) if request else path


class SnapshotDetailSerializer(SnapshotSerializer):
    judgment_ids_url = serializers.SerializerMethodField()

    class Meta(SnapshotSerializer.Meta):
        fields = [*SnapshotSerializer.Meta.fields, "hygiene", "judgment_ids_url"]
        read_only_fields = fields

    def get_judgment_ids_url(self, obj: DatasetSnapshot) -> str:
        request = self.context.get("request")
        path = f"/api/v1/projects/{obj.project.slug}/snapshots/{obj.pk}/judgment-ids/"
        return request.build_absolute_uri(path) if request else path


class JudgmentIdsSerializer(serializers.Serializer):
    """One page of the ids of the judgments a snapshot used (ascending)."""

    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    sha256 = serializers.CharField(help_text="sha256 of all the ids (see the model).")
    results = serializers.ListField(child=serializers.IntegerField())
