"""Reads of a project's prompts, responses, comparisons and judgments for the API.

Every function takes the project, so a caller can never read across projects by
guessing ids; who may call which is decided by the views' role checks.
"""

from django.db.models import Count, QuerySet

from annotation.models import Comparison, Judgment, Project, Prompt, Response, Role


def prompt_list(*, project: Project) -> QuerySet[Prompt]:
    # Explicit order: Meta.ordering does not apply to a GROUP BY query, and pages of
    # an unordered list could repeat or skip prompts.
    return (
        Prompt.objects.filter(project=project)
        .annotate(response_count=Count("responses", distinct=True))
        .order_by("pk")
    )


def response_list(*, project: Project) -> QuerySet[Response]:
    return Response.objects.filter(prompt__project=project).select_related("prompt")


def comparison_list(*, project: Project) -> QuerySet[Comparison]:
    return Comparison.objects.filter(project=project).select_related(
        "project", "prompt", "response_a", "response_b"
    )


def judgment_list(*, project: Project, user, role: str) -> QuerySet[Judgment]:
    """All judgments (human and prior) for researchers; an annotator's own otherwise."""
    judgments = Judgment.objects.filter(comparison__project=project).select_related(
        "annotator", "comparison"
    )
    if role == Role.ANNOTATOR:
        judgments = judgments.filter(annotator=user, origin=Judgment.Origin.HUMAN)
    return judgments.order_by("-submitted_at", "-id")
