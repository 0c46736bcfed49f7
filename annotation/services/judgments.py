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

Lock order (shared with `services.queue`, which documents it): comparison row, then
assignment row, both taken by the one statement of `assignment_lock`. The statements
of this path are plain SQL for the reason `services.queue` gives.
"""

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from annotation.models import Assignment, Choice, Comparison, Judgment, Project
from annotation.selectors.queue import (
    from_db_datetime,
    from_db_json,
    loaded,
    to_db_datetime,
)

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
ALREADY_JUDGED = "This task was already judged; it cannot be skipped."
LEASE_EXPIRED_TARGET_MET = (
    "Your time on this task ran out and it has meanwhile been given to other "
    "annotators, who cover all the judgments it needs; your answer was not stored."
)
INVALID_CHOICE = "Choose one of: {allowed}."
TIE_NOT_ALLOWED = "This project does not allow 'tie'."
BOTH_BAD_NOT_ALLOWED = "This project does not allow 'both_bad'."
INVALID_STRENGTH = "Strength must be an integer from 1 to 3."
STRENGTH_NEEDS_A_WINNER = (
    "Strength says how much better the chosen side is; a {choice!r} answer has none."
)
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
    if strength is not None and choice in ("tie", "both_bad"):
        raise ValidationError(
            {"strength": STRENGTH_NEEDS_A_WINNER.format(choice=choice)}
        )
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


def for_update(of: str, *, skip_locked: bool = False) -> str:
    """The row-lock clause for plain SQL (none on SQLite, whose writers queue up).

    PostgreSQL takes the locks of `FOR UPDATE OF x, y` in the order listed, row by
    row, which `assignment_lock` relies on (tests/annotation/test_queue_lock_order.py
    checks it).
    """
    if not connection.features.has_select_for_update:
        return ""
    return f" FOR UPDATE OF {of}" + (" SKIP LOCKED" if skip_locked else "")


_LOCK_SQL = f"""
    SELECT a.status, a.left_is_first, a.leased_at, a.expires_at, a.comparison_id,
           c.judgment_count, c.lease_count, c.gold_choice, c.project_id,
           pr.target_judgments, pr.aspects, pr.allow_tie, pr.allow_both_bad
    FROM {Assignment._meta.db_table} a
    JOIN {Comparison._meta.db_table} c ON c.id = a.comparison_id
    JOIN {Project._meta.db_table} pr ON pr.id = c.project_id
    WHERE a.id = %s AND a.annotator_id = %s"""


def assignment_lock(*, assignment_id: int, annotator) -> Assignment | None:
    """Lock the annotator's assignment and its comparison (in that lock order:
    comparison first); return the assignment with its comparison and project, or
    None when it is not theirs. Call inside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL + for_update("c, a"), [assignment_id, annotator.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    status, left_is_first, leased_at, expires_at, comparison_id = row[:5]
    judgment_count, lease_count, gold_choice, project_id = row[5:9]
    target, aspects, allow_tie, allow_both_bad = row[9:]
    project = loaded(
        Project,
        id=project_id,
        target_judgments=target,
        aspects=from_db_json(aspects),
        allow_tie=allow_tie,
        allow_both_bad=allow_both_bad,
    )
    comparison = loaded(
        Comparison,
        id=comparison_id,
        project_id=project_id,
        gold_choice=gold_choice,
        judgment_count=judgment_count,
        lease_count=lease_count,
    )
    comparison.project = project
    assignment = loaded(
        Assignment,
        id=assignment_id,
        annotator_id=annotator.pk,
        comparison_id=comparison_id,
        status=status,
        left_is_first=left_is_first,
        leased_at=from_db_datetime(leased_at),
        expires_at=from_db_datetime(expires_at),
    )
    assignment.comparison = comparison
    return assignment


_JUDGMENT_FIELDS = (
    "public_id",
    "comparison_id",
    "annotator_id",
    "assignment_id",
    "origin",
    "choice",
    "strength",
    "aspect_choices",
    "rationale",
    "left_is_first",
    "is_gold",
    "started_at",
    "submitted_at",
    "duration_ms",
)
_INSERT_JUDGMENT_SQL = "INSERT INTO {table} ({columns}) VALUES ({values})".format(
    table=Judgment._meta.db_table,
    columns=", ".join(Judgment._meta.get_field(f).column for f in _JUDGMENT_FIELDS),
    values=", ".join(["%s"] * len(_JUDGMENT_FIELDS)),
)
_SUBMITTED_SQL = (
    f"UPDATE {Assignment._meta.db_table} SET status = %s, completed_at = %s "
    "WHERE id = %s"
)
_COUNT_JUDGMENT_SQL = (
    f"UPDATE {Comparison._meta.db_table} "
    "SET judgment_count = judgment_count + 1, lease_count = lease_count - %s "
    "WHERE id = %s"
)


def write_together(
    cursor, first: tuple[str, list], *others: tuple[str, list], pk: int | None = None
) -> int:
    """Run the write `first` (an INSERT, or an UPDATE of the row `pk`) and then
    `others`; return the id of `first`'s row.

    On PostgreSQL they go as one statement (data-modifying WITH queries: one round
    trip, one parse instead of several; all of them run whether or not the final
    SELECT reads them); elsewhere one by one.
    """
    sql, params = first
    rest = [p for _, other_params in others for p in other_params]
    if connection.vendor == "postgresql":
        parts = [f"w0 AS ({sql} RETURNING id)"]
        parts += [f"w{i} AS ({other})" for i, (other, _) in enumerate(others, 1)]
        cursor.execute(f"WITH {', '.join(parts)} SELECT id FROM w0", [*params, *rest])
        return cursor.fetchone()[0]
    if pk is None and connection.features.can_return_columns_from_insert:
        cursor.execute(sql + " RETURNING id", params)
        pk = cursor.fetchone()[0]
    else:
        cursor.execute(sql, params)
        pk = cursor.lastrowid if pk is None else pk
    for other, other_params in others:
        cursor.execute(other, other_params)
    return pk


def _judgment_row(values: dict) -> list:
    """The values in `_JUDGMENT_FIELDS` order, as the backend stores them (what each
    field's `get_db_prep_save` gives, for the fields that need it here)."""
    row = dict(values)
    if not connection.features.has_native_uuid_field:
        row["public_id"] = row["public_id"].hex
    row["aspect_choices"] = connection.ops.adapt_json_value(row["aspect_choices"], None)
    for name in ("started_at", "submitted_at"):
        row[name] = to_db_datetime(row[name])
    return [row[name] for name in _JUDGMENT_FIELDS]


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
    locked = assignment_lock(assignment_id=assignment.pk, annotator=annotator)
    if locked is None:
        raise AssignmentNotFound()
    comparison = locked.comparison
    project = comparison.project
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
        existing = Judgment.objects.get(assignment_id=locked.pk)
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

    holds_slot = locked.status == Assignment.Status.LEASED
    live = holds_slot and locked.expires_at > now
    if not live and not comparison.is_gold:
        others = comparison.judgment_count + comparison.lease_count - int(holds_slot)
        if others >= project.target_judgments:
            raise LeaseExpiredTargetMet()

    start = _duration_start(locked, started_at, now)
    values = {
        "public_id": uuid.uuid4(),
        "comparison_id": comparison.pk,
        "annotator_id": annotator.pk,
        "assignment_id": locked.pk,
        "origin": Judgment.Origin.HUMAN,
        "choice": canonical,
        "strength": strength,
        "aspect_choices": canonical_aspects,
        "rationale": rationale,
        "left_is_first": locked.left_is_first,
        "is_gold": comparison.is_gold,
        "started_at": start,
        "submitted_at": now,
        "duration_ms": _duration_ms(start, now),
    }
    submitted = [Assignment.Status.SUBMITTED, to_db_datetime(now), locked.pk]
    with connection.cursor() as cursor:
        pk = write_together(
            cursor,
            (_INSERT_JUDGMENT_SQL, _judgment_row(values)),
            (_SUBMITTED_SQL, submitted),
            (_COUNT_JUDGMENT_SQL, [int(holds_slot), comparison.pk]),
        )
    judgment = loaded(Judgment, id=pk, import_batch_id=None, **values)
    assignment.status = Assignment.Status.SUBMITTED
    assignment.completed_at = now
    return SubmitResult(judgment=judgment, created=True)
