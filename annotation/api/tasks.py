"""The annotator API: take the next task, judge it, or skip it.

Bodies name only the opaque assignment id; never a model, response or comparison id,
generation parameters or other annotators' votes (annotation is blind).

These three endpoints are the hot path of annotation (a script or many browsers call
them back to back), so they stay lean: the token is checked with one plain query
(`annotation.authentication.LeanTokenAuthentication`), the judgment body is checked
by the service itself (the serializers below document the contract in the OpenAPI
schema), and the bodies are plain dicts.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Assignment
from annotation.selectors.queue import task_payload
from annotation.services.judgments import (
    MAX_RATIONALE_CHARS,
    POSITIONAL_CHOICES,
    AssignmentNotFound,
    JudgmentConflict,
    LeaseExpiredTargetMet,
    judgment_submit,
    to_positional,
)
from annotation.services.queue import NotProjectMember, assignment_skip, next_assignment

PROJECT_NOT_FOUND = "No project {slug!r} among the projects you are a member of."
BODY_NOT_AN_OBJECT = 'Send a JSON object, e.g. {"choice": "left"}.'
INVALID_STARTED_AT = "Give an ISO 8601 date and time, e.g. 2026-11-25T09:00:00Z."
TAGS = ["annotator"]


class JsonOnly(DefaultContentNegotiation):
    """The annotator endpoints answer JSON whatever the Accept header says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class TaskView(APIView):
    """JSON in, JSON out: no browsable API to negotiate for on the hot path."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnly


class TaskMessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()


class TaskResponseTextSerializer(serializers.Serializer):
    text = serializers.CharField()


class TaskPayloadSerializer(serializers.Serializer):
    assignment = serializers.IntegerField(help_text="Opaque id of your lease.")
    prompt = TaskMessageSerializer(many=True, help_text="The conversation so far.")
    left = TaskResponseTextSerializer()
    right = TaskResponseTextSerializer()
    aspects = serializers.ListField(
        child=serializers.CharField(), help_text="Aspects to judge separately."
    )
    allow_tie = serializers.BooleanField()
    allow_both_bad = serializers.BooleanField()
    lease_expires_at = serializers.DateTimeField(
        help_text="Submit before this time to be sure your judgment counts."
    )


class JudgmentSubmitSerializer(serializers.Serializer):
    choice = serializers.ChoiceField(choices=POSITIONAL_CHOICES)
    strength = serializers.IntegerField(
        min_value=1, max_value=3, required=False, allow_null=True
    )
    aspects = serializers.DictField(
        child=serializers.ChoiceField(choices=POSITIONAL_CHOICES),
        required=False,
        help_text="Aspect name -> left / right / tie / both_bad.",
    )
    rationale = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_RATIONALE_CHARS
    )
    started_at = serializers.DateTimeField(
        required=False,
        help_text="When you started reading the task (used for the duration if it "
        "lies within your lease).",
    )


class SubmittedJudgmentSerializer(serializers.Serializer):
    assignment = serializers.IntegerField()
    choice = serializers.ChoiceField(choices=POSITIONAL_CHOICES)
    strength = serializers.IntegerField(allow_null=True)
    aspects = serializers.DictField(child=serializers.CharField())
    rationale = serializers.CharField(allow_blank=True)
    submitted_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField(allow_null=True)


class AnnotatorErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


def _error(status_code: int, exc: Exception) -> Response:
    return Response({"detail": str(exc)}, status=status_code)


def _submission(data) -> dict:
    """Read the judgment body; the service validates the values themselves."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": [BODY_NOT_AN_OBJECT]})
    strength = data.get("strength")
    if isinstance(strength, str) and strength.strip().isdigit():
        strength = int(strength)
    submission = {
        "choice": data.get("choice"),
        "strength": strength,
        "aspects": data.get("aspects"),
        "rationale": data.get("rationale"),
    }
    started_at = data.get("started_at")
    if started_at is not None:
        parsed = parse_datetime(started_at) if isinstance(started_at, str) else None
        if parsed is None:
            raise ValidationError({"started_at": [INVALID_STARTED_AT]})
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        submission["started_at"] = parsed
    return submission


def _judgment_body(assignment_id: int, judgment) -> dict:
    side = judgment.left_is_first
    return {
        "assignment": assignment_id,
        "choice": to_positional(judgment.choice, left_is_first=side),
        "strength": judgment.strength,
        "aspects": {
            name: to_positional(value, left_is_first=side)
            for name, value in judgment.aspect_choices.items()
        },
        "rationale": judgment.rationale,
        "submitted_at": judgment.submitted_at,
        "duration_ms": judgment.duration_ms,
    }


class NextTaskView(TaskView):
    @extend_schema(
        tags=TAGS,
        operation_id="next_task",
        summary="Lease your next task in a project",
        description=(
            "Returns the comparison to judge, left/right as you should show it. "
            "Calling again while your lease is live returns the same task. "
            "204 when nothing is left for you in this project."
        ),
        request=None,
        responses={
            200: TaskPayloadSerializer,
            204: OpenApiResponse(description="Nothing left for you to judge."),
            404: AnnotatorErrorSerializer,
        },
    )
    def post(self, request, slug: str) -> Response:
        try:
            assignment = next_assignment(annotator=request.user, project_slug=slug)
        except NotProjectMember:
            raise NotFound(PROJECT_NOT_FOUND.format(slug=slug)) from None
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(task_payload(assignment))


class JudgmentView(TaskView):
    @extend_schema(
        tags=TAGS,
        operation_id="judgment_submit",
        summary="Submit your judgment for a leased task",
        description=(
            "201 when stored; 200 with the stored judgment when the identical "
            "judgment was already submitted (safe retry); 409 when a different "
            "judgment exists, the task was skipped, or the lease expired and the "
            "task's judgments are covered by others."
        ),
        request=JudgmentSubmitSerializer,
        responses={
            201: SubmittedJudgmentSerializer,
            200: SubmittedJudgmentSerializer,
            400: OpenApiResponse(description="Invalid field; body maps field->errors."),
            404: AnnotatorErrorSerializer,
            409: AnnotatorErrorSerializer,
        },
        examples=[
            OpenApiExample(
                "Left is better",
                value={"choice": "left", "strength": 2, "rationale": "More precise."},
                request_only=True,
            )
        ],
    )
    def post(self, request, assignment_id: int) -> Response:
        submission = _submission(request.data)
        # The service looks the assignment up among the caller's own (404 otherwise).
        try:
            result = judgment_submit(
                assignment=Assignment(pk=assignment_id),
                annotator=request.user,
                **submission,
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from None
        except AssignmentNotFound as exc:
            raise NotFound(str(exc)) from None
        except (JudgmentConflict, LeaseExpiredTargetMet) as exc:
            return _error(status.HTTP_409_CONFLICT, exc)
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(_judgment_body(assignment_id, result.judgment), status=code)


class SkipView(TaskView):
    @extend_schema(
        tags=TAGS,
        operation_id="assignment_skip",
        summary="Skip a task (it is not offered to you again)",
        request=None,
        responses={
            204: OpenApiResponse(description="Skipped."),
            404: AnnotatorErrorSerializer,
            409: AnnotatorErrorSerializer,
        },
    )
    def post(self, request, assignment_id: int) -> Response:
        try:
            assignment_skip(
                assignment=Assignment(pk=assignment_id), annotator=request.user
            )
        except AssignmentNotFound as exc:
            raise NotFound(str(exc)) from None
        except JudgmentConflict as exc:
            return _error(status.HTTP_409_CONFLICT, exc)
        return Response(status=status.HTTP_204_NO_CONTENT)
