"""Submitting a judgment on a leased assignment.

The annotator answers positionally ("left" / "right" / "tie" / "both_bad"); the
judgment is stored canonically against `Comparison.response_a` / `response_b` using
the side the assignment showed (`Assignment.left_is_first`), and keeps that side too
so position bias can be measured.

Submitting is idempotent: the same answer sent twice (a client retry after a dropped
response) returns the stored judgment; a different second answer is a conflict. A
lease that expired is still honoured while the comparison has a free slot (its
judgments plus the other live leases stay under the project's target); otherwise the
submission is refused, so no comparison ever gets more judgments than its target.

Lock order (shared with `services.queue`): assignment row, then comparison row.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Assignment, Choice, Comparison, Judgment

LEFT, RIGHT, TIE, BOTH_BAD = "left", "right", "tie", "both_bad"
POSITIONAL_CHOICES = (LEFT, RIGHT, TIE, BOTH_BAD)
MAX_RATIONALE_CHARS = 10_000
# A client-supplied start time is trusted only inside the lease (with some clock skew).
CLIENT_CLOCK_SKEW = dt.timedelta(seconds=30)
# Longer than this is not time spent on the task (a tab left open): stored as unknown.
MAX_DURATION = dt.timedelta(hours=24)

ASSIGNMENT_NOT_FOUND = "No such task assignment for you."
JUDGMENT_CONFLICT = (
    "This task was already judged with a different answer; a judgment cannot be "
    "changed."
)
ASSIGNMENT_SKIPPED = "You skipped this task; it can no longer be judged."
LEASE_EXPIRED_TARGET_MET = (
    "Your time on this task ran out and it has meanwhile been given to other "
    "annotators, who cover all the judgments it needs; your answer was not stored. "
    "Ask for the next task."
)
INVALID_CHOICE = "Choose one of: {allowed}."
TIE_NOT_ALLOWED = "This project does not allow 'tie'."
BOTH_BAD_NOT_ALLOWED = "This project does not allow 'both_bad'."
INVALID_STRENGTH = "Strength must be an integer from 1 to 3."
INVALID_ASPECTS = "Aspects must be an object mapping aspect names to choices."
UNKNOWN_ASPECT = "Unknown aspect {name!r}; this project's aspects are: {known}."
RATIONALE_TOO_LONG = "Rationale is limited to {limit} characters."
INVALID_RATIONALE = "Rationale must be text."


class AssignmentNotFound(Exception):
    """The assignment does not exist or belongs to someone else (HTTP 404)."""

    def __init__(self, message: str = ASSIGNMENT_NOT_FOUND):
        super().__init__(message)


class JudgmentConflict(Exception):
    """A different judgment was already stored for the assignment (HTTP 409)."""

    def __init__(self, message: str = JUDGMENT_CONFLICT):
        super().__init__(message)


class LeaseExpiredTargetMet(Exception):
    """The lease expired and the comparison's slots are taken (HTTP 409)."""

    def __init__(self, message: str = LEASE_EXPIRED_TARGET_MET):
        super().__init__(message)


@dataclass(frozen=True)
class SubmitResult:
    judgment: Judgment
    created: bool


def to_canonical(choice: str, *, left_is_first: bool) -> str:
    """Map a positional choice to the stored one (`Choice` values)."""
    if choice == LEFT:
        return Choice.FIRST if left_is_first else Choice.SECOND
    if choice == RIGHT:
        return Choice.SECOND if left_is_first else Choice.FIRST
    return choice


def to_positional(choice: str, *, left_is_first: bool) -> str:
    """Map a stored choice back to the side the annotator saw."""
    if choice == Choice.FIRST:
        return LEFT if left_is_first else RIGHT
    if choice == Choice.SECOND:
        return RIGHT if left_is_first else LEFT
    return choice


def _check_choice(value: Any, *, project, field: str) -> str:
    allowed = [
        c
        for c in POSITIONAL_CHOICES
        if (c != TIE or project.allow_tie) and (c != BOTH_BAD or project.allow_both_bad)
    ]
    if value == TIE and not project.allow_tie:
        raise ValidationError({field: TIE_NOT_ALLOWED})
    if value == BOTH_BAD and not project.allow_both_bad:
        raise ValidationError({field: BOTH_BAD_NOT_ALLOWED})
    if value not in allowed:
        raise ValidationError(
            {field: INVALID_CHOICE.format(allowed=", ".join(allowed))}
        )
    return value


def judgment_validate(
    *, project, choice: Any, strength: Any, aspects: Any, rationale: Any
) -> tuple[str, int | None, dict[str, str], str]:
    """Check a submission against the project's rules; return it normalised.

    Raises `ValidationError` keyed by field, so an API can answer 400 per field.
    """
    choice = _check_choice(choice, project=project, field="choice")
    if strength is not None and (
        isinstance(strength, bool)
        or not isinstance(strength, int)
        or not 1 <= strength <= 3
    ):
        raise ValidationError({"strength": INVALID_STRENGTH})
    aspects = {} if aspects is None else aspects
    if not isinstance(aspects, dict):
        raise ValidationError({"aspects": INVALID_ASPECTS})
    known = list(project.aspects or [])
    for name, value in aspects.items():
        if name not in known:
            raise ValidationError(
                {
                    "aspects": UNKNOWN_ASPECT.format(
                        name=name, known=", ".join(known) or "(none)"
                    )
                }
            )
        _check_choice(value, project=project, field=f"aspects.{name}")
    rationale = "" if rationale is None else rationale
    if not isinstance(rationale, str):
        raise ValidationError({"rationale": INVALID_RATIONALE})
    if len(rationale) > MAX_RATIONALE_CHARS:
        raise ValidationError(
            {"rationale": RATIONALE_TOO_LONG.format(limit=MAX_RATIONALE_CHARS)}
        )
    return choice, strength, dict(aspects), rationale.strip()


def _duration_start(
    assignment: Assignment, started_at: dt.datetime | None, now: dt.datetime
) -> dt.datetime:
    """Trust the client's start time only if it lies within the lease."""
    if (
        started_at is not None
        and timezone.is_aware(started_at)
        and assignment.leased_at - CLIENT_CLOCK_SKEW <= started_at <= now
    ):
        return started_at
    return assignment.leased_at


def _duration_ms(start: dt.datetime, end: dt.datetime) -> int | None:
    if end - start > MAX_DURATION:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


@transaction.atomic
def judgment_submit(
    *,
    assignment: Assignment,
    annotator,
    choice: str,
    strength: int | None = None,
    aspects: dict[str, str] | None = None,
    rationale: str = "",
    now: dt.datetime | None = None,
    started_at: dt.datetime | None = None,
) -> SubmitResult:
    """Store the annotator's judgment for `assignment` (idempotent on retries).

    `choice` and the aspect values are positional ("left", "right", "tie",
    "both_bad"). Returns the stored judgment with `created=False` when the identical
    judgment was already stored. Raises `AssignmentNotFound` (not the annotator's
    assignment), `ValidationError` (bad input), `JudgmentConflict` (a different
    judgment exists, or the task was skipped) and `LeaseExpiredTargetMet`.
    """
    now = now or timezone.now()
    locked = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("comparison__project")
        .filter(pk=assignment.pk, annotator_id=annotator.pk)
        .first()
    )
    if locked is None:
        raise AssignmentNotFound()
    project = locked.comparison.project
    choice, strength, aspects, rationale = judgment_validate(
        project=project,
        choice=choice,
        strength=strength,
        aspects=aspects,
        rationale=rationale,
    )
    canonical = to_canonical(choice, left_is_first=locked.left_is_first)
    canonical_aspects = {
        name: to_canonical(value, left_is_first=locked.left_is_first)
        for name, value in aspects.items()
    }

    if locked.status == Assignment.Status.SUBMITTED:
        existing = Judgment.objects.get(assignment=locked)
        same = (
            existing.choice == canonical
            and existing.strength == strength
            and existing.aspect_choices == canonical_aspects
            and existing.rationale == rationale
        )
        if not same:
            raise JudgmentConflict()
        return SubmitResult(judgment=existing, created=False)
    if locked.status == Assignment.Status.SKIPPED:
        raise JudgmentConflict(ASSIGNMENT_SKIPPED)

    comparison = Comparison.objects.select_for_update().get(pk=locked.comparison_id)
    holds_slot = locked.status == Assignment.Status.LEASED
    live = holds_slot and locked.expires_at > now
    if not live and not comparison.is_gold:
        others = comparison.judgment_count + comparison.lease_count - int(holds_slot)
        if others >= project.target_judgments:
            raise LeaseExpiredTargetMet()

    start = _duration_start(locked, started_at, now)
    judgment = Judgment.objects.create(
        comparison=comparison,
        annotator_id=annotator.pk,
        assignment=locked,
        origin=Judgment.Origin.HUMAN,
        choice=canonical,
        strength=strength,
        aspect_choices=canonical_aspects,
        rationale=rationale,
        left_is_first=locked.left_is_first,
        is_gold=comparison.is_gold,
        started_at=start,
        submitted_at=now,
        duration_ms=_duration_ms(start, now),
    )
    Assignment.objects.filter(pk=locked.pk).update(
        status=Assignment.Status.SUBMITTED, completed_at=now
    )
    Comparison.objects.filter(pk=comparison.pk).update(
        judgment_count=F("judgment_count") + 1,
        lease_count=F("lease_count") - int(holds_slot),
    )
    assignment.status = Assignment.Status.SUBMITTED
    assignment.completed_at = now
    return SubmitResult(judgment=judgment, created=True)
