"""Serializers of the annotation API.

Output serializers say what each role sees: annotators get a project's guidelines-level
fields and their own judgments without model names; researchers and admins get
everything of their projects. Input serializers only validate; views pass the result
to a service.
"""

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from annotation.models import (
    Choice,
    Comparison,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
    Role,
)
from annotation.services.judgments import to_positional

INVALID_CREDENTIALS = "Unable to log in with that username and password."
UNKNOWN_FIELDS = "Unknown field(s): {unknown}. Accepted: {accepted}."


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that rejects fields it does not know (typos, read-only)."""

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                UNKNOWN_FIELDS.format(
                    unknown=", ".join(unknown), accepted=", ".join(self.fields)
                )
            )
        return attrs


GUIDELINES_FIELDS = (
    "slug",
    "name",
    "guidelines",
    "aspects",
    "allow_tie",
    "allow_both_bad",
)


class ProjectSerializer(serializers.ModelSerializer):
    """A project; annotators get only the guidelines-level fields and their role.

    The other fields (overlap, lease, gold rate, dates) are how the project is run,
    which researchers and admins see.
    """

    role = serializers.SerializerMethodField(help_text="Your role in this project.")

    class Meta:
        model = Project
        fields = [
            *GUIDELINES_FIELDS,
            "role",
            "target_judgments",
            "lease_seconds",
            "gold_rate",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_role(self, project: Project) -> str | None:
        return self.context.get("roles", {}).get(project.pk)

    def to_representation(self, project: Project) -> dict:
        data = super().to_representation(project)
        if self.get_role(project) == Role.ANNOTATOR:
            return {k: v for k, v in data.items() if k in GUIDELINES_FIELDS + ("role",)}
        return data


class ProjectCreateSerializer(StrictInputSerializer):
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    guidelines = serializers.CharField(required=False, allow_blank=True, default="")
    aspects = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list
    )
    target_judgments = serializers.IntegerField(min_value=1, default=3)
    lease_seconds = serializers.IntegerField(min_value=10, default=600)
    allow_tie = serializers.BooleanField(default=True)
    allow_both_bad = serializers.BooleanField(default=True)
    gold_rate = serializers.FloatField(min_value=0.0, max_value=1.0, default=0.0)


class ProjectUpdateSerializer(StrictInputSerializer):
    """Every field optional (PATCH semantics); the slug cannot change."""

    name = serializers.CharField(max_length=200, required=False)
    guidelines = serializers.CharField(required=False, allow_blank=True)
    aspects = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False
    )
    target_judgments = serializers.IntegerField(min_value=1, required=False)
    lease_seconds = serializers.IntegerField(min_value=10, required=False)
    allow_tie = serializers.BooleanField(required=False)
    allow_both_bad = serializers.BooleanField(required=False)
    gold_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]
        read_only_fields = fields


class MembershipCreateSerializer(StrictInputSerializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)


class MembershipUpdateSerializer(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class PromptSerializer(serializers.ModelSerializer):
    response_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Prompt
        fields = [
            "id",
            "messages",
            "external_id",
            "metadata",
            "split",
            "content_hash",
            "import_batch",
            "response_count",
            "created_at",
        ]
        read_only_fields = fields


class ResponseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = [
            "id",
            "prompt",
            "text",
            "model_name",
            "generation_params",
            "external_id",
            "content_hash",
            "created_at",
        ]
        read_only_fields = fields


class ComparisonResponseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = ["id", "model_name", "text"]
        read_only_fields = fields


class ComparisonSerializer(serializers.ModelSerializer):
    """A pair with its responses inline; `response_a` is the canonical first."""

    response_a = ComparisonResponseSerializer(read_only=True)
    response_b = ComparisonResponseSerializer(read_only=True)
    split = serializers.CharField(source="prompt.split", read_only=True)
    is_gold = serializers.BooleanField(read_only=True)
    is_complete = serializers.SerializerMethodField()

    class Meta:
        model = Comparison
        fields = [
            "id",
            "prompt",
            "split",
            "response_a",
            "response_b",
            "priority",
            "origin",
            "gold_choice",
            "is_gold",
            "judgment_count",
            "is_complete",
            "lease_count",
            "import_batch",
            "created_at",
        ]
        read_only_fields = fields

    def get_is_complete(self, comparison: Comparison) -> bool:
        return comparison.judgment_count >= comparison.project.target_judgments


class ComparisonUpdateSerializer(StrictInputSerializer):
    priority = serializers.IntegerField(
        required=False, help_text="Higher is served first."
    )
    gold_choice = serializers.ChoiceField(
        choices=Choice.choices,
        required=False,
        allow_null=True,
        help_text="Known answer against response_a/response_b; null unmarks gold.",
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if not attrs:
            raise serializers.ValidationError(
                "Send at least one of: priority, gold_choice."
            )
        return attrs


class JudgmentSerializer(serializers.ModelSerializer):
    """A researcher's view: every field, the annotator by username."""

    id = serializers.UUIDField(source="public_id", read_only=True)
    annotator = serializers.CharField(
        source="annotator.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Judgment
        fields = [
            "id",
            "comparison",
            "annotator",
            "origin",
            "choice",
            "strength",
            "aspect_choices",
            "rationale",
            "left_is_first",
            "is_gold",
            "import_batch",
            "started_at",
            "submitted_at",
            "duration_ms",
        ]
        read_only_fields = fields


PICKED_SIDE = serializers.ChoiceField(choices=["left", "right", "tie", "both_bad"])


class OwnJudgmentSerializer(serializers.ModelSerializer):
    """An annotator's view of their own judgment: what they saw and picked, only.

    Positional, like the task itself: the side they picked and, per aspect, the side
    picked there. Never the canonical choice or the position flag (`left_is_first`):
    together with the picked side either one tells which response was the first of
    the pair, i.e. maps positions to the comparison's responses.
    """

    id = serializers.UUIDField(source="public_id", read_only=True)
    picked_side = serializers.SerializerMethodField(
        help_text="left, right, tie or both_bad, as it was shown to you."
    )
    aspects = serializers.SerializerMethodField(
        help_text="Aspect name -> the side you picked for it (left / right / ...)."
    )

    class Meta:
        model = Judgment
        fields = [
            "id",
            "picked_side",
            "strength",
            "aspects",
            "rationale",
            "started_at",
            "submitted_at",
            "duration_ms",
        ]
        read_only_fields = fields

    @extend_schema_field(PICKED_SIDE)
    def get_picked_side(self, judgment: Judgment) -> str:
        return to_positional(judgment.choice, left_is_first=_shown_first(judgment))

    @extend_schema_field(serializers.DictField(child=PICKED_SIDE))
    def get_aspects(self, judgment: Judgment) -> dict[str, str]:
        first_left = _shown_first(judgment)
        return {
            name: to_positional(value, left_is_first=first_left)
            for name, value in (judgment.aspect_choices or {}).items()
        }


def _shown_first(judgment: Judgment) -> bool:
    """Whether response_a was on the left (unknown counts as left, as it was shown)."""
    return judgment.left_is_first is not False


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, write_only=True)

    def validate(self, attrs):
        user = authenticate(
            request=self.context.get("request"),
            username=attrs["username"],
            password=attrs["password"],
        )
        if user is None:
            raise serializers.ValidationError(INVALID_CREDENTIALS)
        attrs["user"] = user
        return attrs


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")
    username = serializers.CharField()
