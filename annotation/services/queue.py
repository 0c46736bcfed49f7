"""The shared annotation queue: leasing comparisons to annotators.

Invariants, per comparison (gold comparisons excepted, see below):

* `judgment_count` = human judgments, `lease_count` = assignments in status
  `leased` (live or expired but not yet reclaimed). Only these services change
  them, always while holding the comparison's row lock.
* `judgment_count + lease_count <= project.target_judgments`: a lease is granted
  only into a free slot, and a late submission on an expired lease only while a slot
  is free (`services.judgments`). So no comparison ever exceeds its target.
* An annotator has at most one assignment row per comparison (database constraint),
  so nobody judges the same comparison twice; their own expired lease may be leased
  to them again (the row is reused).

Picking the next task reads one index, `comparison_queue_order` =
(project, judgment_count, -priority, random_key): fewest judgments first, then
priority, then random. The range `judgment_count < target` keeps completed
comparisons out of the scan, and the scan stops at the first row that has a free slot
and that this annotator has not seen, so its cost depends on the number of live
leases and on the annotator's own recent history, not on the project's size.

Concurrency: on PostgreSQL the candidate is locked with `FOR UPDATE SKIP LOCKED`, so
concurrent callers take different rows instead of queueing on one; the row is
re-checked against the slot condition by PostgreSQL when it is locked. Calls of one
annotator are serialised by locking their membership row (two browser tabs get the
same task). On SQLite the `IMMEDIATE` transaction mode (settings) serialises writers.
The unique constraints on assignments and judgments are the last guard.

Gold comparisons (`gold_choice` set) have no target: each annotator may get each
gold comparison once, and they are mixed into an annotator's tasks with probability
`project.gold_rate` per task while regular work remains for that annotator (gold
alone never keeps an annotator busy once the real work is done).

Expired leases are reclaimed in bounded batches at the start of each call
(`RECLAIM_BATCH`), oldest first, across projects.
"""

import datetime as dt
import random

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import Assignment, Comparison, Membership, Project
from annotation.services.judgments import AssignmentNotFound, JudgmentConflict

RECLAIM_BATCH = 100

NOT_A_MEMBER = "You are not a member of project {slug!r}."
ALREADY_JUDGED = "This task was already judged; it cannot be skipped."


class NotProjectMember(Exception):
    """The user holds no role in the project (HTTP 404 in the API)."""


_SR = ("comparison__project", "comparison__prompt", "comparison__response_a")
_SELECT_RELATED = (*_SR, "comparison__response_b")


def _lock_annotator(*, annotator, project: Project) -> None:
    """Check membership and serialise this annotator's queue calls in the project."""
    locked = (
        Membership.objects.select_for_update()
        .filter(user_id=annotator.pk, project=project)
        .values_list("pk", flat=True)
        .first()
    )
    if locked is not None:
        return
    if not annotator.is_superuser:
        raise NotProjectMember(NOT_A_MEMBER.format(slug=project.slug))
    list(
        get_user_model()
        .objects.select_for_update()
        .filter(pk=annotator.pk)
        .values_list("pk", flat=True)
    )


def leases_reclaim(
    *, now: dt.datetime | None = None, limit: int = RECLAIM_BATCH
) -> int:
    """Mark up to `limit` expired leases as expired and free their slots.

    Locks the expired assignments with SKIP LOCKED (a concurrent submit or reclaim
    holding one keeps it), then the affected comparisons in id order (no deadlock
    between two reclaimers), then recounts their live leases from the assignment
    rows; the recount runs as a new statement after the locks are held, so it sees
    every committed change. Returns the number of leases reclaimed.
    """
    now = now or timezone.now()
    with transaction.atomic(savepoint=False):
        expired = list(
            Assignment.objects.select_for_update(skip_locked=True)
            .filter(status=Assignment.Status.LEASED, expires_at__lte=now)
            .order_by("expires_at")
            .values_list("pk", "comparison_id")[:limit]
        )
        if not expired:
            return 0
        Assignment.objects.filter(pk__in=[pk for pk, _ in expired]).update(
            status=Assignment.Status.EXPIRED
        )
        comparison_ids = sorted({cid for _, cid in expired})
        list(
            Comparison.objects.select_for_update()
            .filter(pk__in=comparison_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        live = (
            Assignment.objects.filter(
                comparison_id=OuterRef("pk"), status=Assignment.Status.LEASED
            )
            .order_by()
            .values("comparison_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        Comparison.objects.filter(pk__in=comparison_ids).update(
            lease_count=Coalesce(Subquery(live), 0)
        )
        return len(expired)


def _seen_by(annotator) -> Exists:
    """Comparisons the annotator holds, judged or skipped (an expired lease is free)."""
    return Exists(
        Assignment.objects.filter(
            comparison_id=OuterRef("pk"), annotator_id=annotator.pk
        ).exclude(status=Assignment.Status.EXPIRED)
    )


def _own_expired(annotator) -> Subquery:
    return Subquery(
        Assignment.objects.filter(
            comparison_id=OuterRef("pk"),
            annotator_id=annotator.pk,
            status=Assignment.Status.EXPIRED,
        ).values("pk")[:1]
    )


def _shown(**flags) -> Coalesce:
    """How often the comparison was shown so far (optionally with response_a left)."""
    count = (
        Assignment.objects.filter(comparison_id=OuterRef("pk"), **flags)
        .order_by()
        .values("comparison_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(count), 0)


def _candidates(*, annotator, project: Project):
    """Open comparisons for the annotator, locked with SKIP LOCKED when picked.

    Annotated with what leasing needs, so it takes no extra round trip: the
    annotator's own expired assignment (reused) and the side counts (balancing).
    """
    return (
        Comparison.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("project", "prompt", "response_a", "response_b")
        .filter(project=project)
        .exclude(_seen_by(annotator))
        .annotate(
            own_expired_id=_own_expired(annotator),
            shown_total=_shown(),
            shown_left=_shown(left_is_first=True),
        )
    )


def _pick_regular(*, annotator, project: Project) -> Comparison | None:
    target = project.target_judgments
    return (
        _candidates(annotator=annotator, project=project)
        .filter(
            gold_choice__isnull=True,
            judgment_count__lt=target,
            lease_count__lt=target - F("judgment_count"),
        )
        .order_by("judgment_count", "-priority", "random_key")
        .first()
    )


def _pick_gold(*, annotator, project: Project) -> Comparison | None:
    return (
        _candidates(annotator=annotator, project=project)
        .filter(gold_choice__isnull=False)
        .order_by("judgment_count", "random_key")
        .first()
    )


def _left_is_first(comparison: Comparison, rng: random.Random) -> bool:
    """Balance sides per comparison: show response_a left if it was shown left less."""
    left = comparison.shown_left
    right = comparison.shown_total - left
    if left == right:
        return rng.random() < 0.5
    return left < right


def _renew_own_lease(*, annotator, project: Project, now: dt.datetime):
    """Return the annotator's leased assignment in the project, renewed if expired."""
    held = (
        Assignment.objects.select_related(*_SELECT_RELATED)
        .filter(
            annotator_id=annotator.pk,
            status=Assignment.Status.LEASED,
            comparison__project=project,
        )
        .order_by("pk")
        .first()
    )
    if held is not None and held.expires_at <= now:
        # Still counted in lease_count (not reclaimed): extending it frees no slot.
        held.leased_at = now
        held.expires_at = now + dt.timedelta(seconds=project.lease_seconds)
        Assignment.objects.filter(pk=held.pk).update(
            leased_at=held.leased_at, expires_at=held.expires_at
        )
    return held


@transaction.atomic
def next_assignment(
    *,
    annotator,
    project: Project,
    now: dt.datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """Lease the annotator's next comparison in `project`, or return None when done.

    Idempotent while a lease is held: the annotator's current lease comes back (a
    reloaded page shows the same task). Raises `NotProjectMember` for users without a
    role in the project. `rng` drives the gold draw and the side tie-break (tests pass
    a seeded one). The returned assignment has its comparison, prompt, responses and
    project loaded, ready for `selectors.queue.task_payload`.
    """
    now = now or timezone.now()
    rng = rng or random.Random()
    _lock_annotator(annotator=annotator, project=project)
    held = _renew_own_lease(annotator=annotator, project=project, now=now)
    if held is not None:
        return held
    leases_reclaim(now=now)

    comparison = _pick_regular(annotator=annotator, project=project)
    if comparison is None:
        return None
    if project.gold_rate > 0 and rng.random() < project.gold_rate:
        comparison = _pick_gold(annotator=annotator, project=project) or comparison

    left_is_first = _left_is_first(comparison, rng)
    expires_at = now + dt.timedelta(seconds=project.lease_seconds)
    fields = {
        "status": Assignment.Status.LEASED,
        "left_is_first": left_is_first,
        "leased_at": now,
        "expires_at": expires_at,
        "completed_at": None,
    }
    if comparison.own_expired_id is not None:
        Assignment.objects.filter(pk=comparison.own_expired_id).update(**fields)
        assignment = Assignment(
            pk=comparison.own_expired_id,
            comparison=comparison,
            annotator_id=annotator.pk,
            **fields,
        )
    else:
        assignment = Assignment.objects.create(
            comparison=comparison, annotator_id=annotator.pk, **fields
        )
    Comparison.objects.filter(pk=comparison.pk).update(lease_count=F("lease_count") + 1)
    comparison.lease_count += 1
    return assignment


@transaction.atomic
def assignment_skip(*, assignment: Assignment, annotator) -> Assignment:
    """Give the task back: it is never offered to this annotator again.

    Frees the comparison's slot if the lease still held one. Skipping twice is a
    no-op; skipping a judged task raises `JudgmentConflict`.
    """
    locked = (
        Assignment.objects.select_for_update()
        .filter(pk=assignment.pk, annotator_id=annotator.pk)
        .first()
    )
    if locked is None:
        raise AssignmentNotFound()
    if locked.status == Assignment.Status.SKIPPED:
        return locked
    if locked.status == Assignment.Status.SUBMITTED:
        raise JudgmentConflict(ALREADY_JUDGED)
    held_slot = locked.status == Assignment.Status.LEASED
    if held_slot:
        Comparison.objects.select_for_update().filter(
            pk=locked.comparison_id
        ).values_list("pk", flat=True).first()
    locked.status = Assignment.Status.SKIPPED
    locked.completed_at = timezone.now()
    locked.save(update_fields=["status", "completed_at"])
    if held_slot:
        Comparison.objects.filter(pk=locked.comparison_id).update(
            lease_count=F("lease_count") - 1
        )
    return locked
