"""Reads behind the researcher's judgments browser and its CSV download."""

import datetime as dt
import json
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from annotation.models import Comparison, Judgment, Project


@dataclass(frozen=True)
class JudgmentFilters:
    """Validated filters; `None` means "any"."""

    annotator: str | None = None  # username, as the API filters
    choice: str | None = None
    origin: str | None = None
    gold: bool | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None


def judgment_browse(
    *, project: Project, filters: JudgmentFilters
) -> QuerySet[Judgment]:
    """The project's judgments (human and prior) matching `filters`, newest first."""
    qs = Judgment.objects.filter(comparison__project=project).select_related(
        "annotator",
        "comparison__prompt",
        "comparison__response_a",
        "comparison__response_b",
    )
    if filters.annotator is not None:
        qs = qs.filter(annotator__username=filters.annotator)
    if filters.choice is not None:
        qs = qs.filter(choice=filters.choice)
    if filters.origin is not None:
        qs = qs.filter(origin=filters.origin)
    if filters.gold is not None:
        qs = qs.filter(comparison__gold_choice__isnull=not filters.gold)
    if filters.date_from is not None:
        qs = qs.filter(submitted_at__date__gte=filters.date_from)
    if filters.date_to is not None:
        qs = qs.filter(submitted_at__date__lte=filters.date_to)
    return qs.order_by("-submitted_at", "-id")


def project_annotators(*, project: Project) -> QuerySet:
    """Users with at least one human judgment in the project, by username."""
    return (
        get_user_model()
        .objects.filter(judgments__comparison__project=project)
        .distinct()
        .order_by("username")
    )


def comparison_detail(*, project: Project, comparison_id: int) -> Comparison | None:
    """A comparison of the project with prompt and responses, or None."""
    return (
        Comparison.objects.select_related("prompt", "response_a", "response_b")
        .filter(project=project, pk=comparison_id)
        .first()
    )


def comparison_judgments(*, comparison: Comparison) -> QuerySet[Judgment]:
    return comparison.judgments.select_related("annotator").order_by("submitted_at")


CSV_COLUMNS = [
    "judgment_id",
    "comparison_id",
    "prompt_id",
    "response_a_id",
    "response_b_id",
    "model_a",
    "model_b",
    "origin",
    "annotator",
    "choice",
    "strength",
    "aspects",
    "rationale",
    "left_is_first",
    "is_gold",
    "gold_choice",
    "submitted_at",
    "duration_ms",
]


def csv_row(judgment: Judgment) -> list:
    """One CSV row; choices are canonical (about response_a / response_b)."""
    comparison = judgment.comparison
    return [
        str(judgment.public_id),
        comparison.pk,
        comparison.prompt_id,
        comparison.response_a_id,
        comparison.response_b_id,
        comparison.response_a.model_name,
        comparison.response_b.model_name,
        judgment.origin,
        judgment.annotator.username if judgment.annotator else "",
        judgment.choice,
        "" if judgment.strength is None else judgment.strength,
        json.dumps(judgment.aspect_choices, sort_keys=True)
        if judgment.aspect_choices
        else "",
        judgment.rationale,
        "" if judgment.left_is_first is None else judgment.left_is_first,
        comparison.gold_choice is not None,
        comparison.gold_choice or "",
        judgment.submitted_at.isoformat(),
        "" if judgment.duration_ms is None else judgment.duration_ms,
    ]
