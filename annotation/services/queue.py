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

Lock order, the same in every service (so two transactions never wait on each other
in a cycle, which PostgreSQL would break with a deadlock error, a 500):

1. the annotator's membership row (`next_assignment` only: serialises one
   annotator's next-task calls, so two browser tabs get the same task);
2. comparison rows, in ascending id when there are several;
3. assignment rows.

`next_assignment` locks its candidate comparison (`FOR UPDATE SKIP LOCKED`, so it
never waits for one) before it writes the annotator's assignment; submit and skip
lock the comparison and then the assignment in one statement
(`services.judgments.assignment_lock`); the reclaimer locks comparisons (SKIP
LOCKED) before it expires their assignments. Renewing one's own lease updates the
assignment row alone and takes no further lock in that transaction. On SQLite the
`IMMEDIATE` transaction mode (settings) serialises writers instead. The unique
constraints on assignments and judgments are the last guard.

Picking the next task reads the index `comparison_queue_order` = (project,
judgment_count, -priority, random_key): fewest judgments first, then priority, then
random. Its cost is bounded whatever the project's size or the annotator's history:

* the hot query walks at most `QUEUE_WINDOW` open comparisons with a free slot, in
  queue order, and stops at the first one this annotator has not seen (an index probe
  into the (comparison, annotator) unique index per candidate) that no concurrent
  caller has locked; comparisons without a free slot are passed over on the way, and
  there are at most as many of them as live leases;
* if that window holds nothing for the annotator (they have judged or skipped its
  comparisons: an annotator far ahead of the others), a fallback query looks at the
  first and the last `QUEUE_WINDOW` comparisons of each judgment level
  (`judgment_count` = 0 .. target - 1), again stopping at the first fit;
* otherwise the annotator gets 204. A 204 is therefore exact unless, in every
  level, the annotator has judged or skipped (or concurrent callers hold) all of
  the first and the last `QUEUE_WINDOW` comparisons with a free slot while unseen
  ones remain between them; that early 204 is the price of the bound, and no path
  ever hands out a comparison twice or over its target.

At most: 1 statement for the membership and project, 1 for the held lease (+1 to
renew it), 1 for the hot window, 1 for the fallback, 1 for a gold draw, 1 for the
lease's writes (2 on SQLite), and a reclaim (4) plus a second pick (2) when one is
due or the pick came back empty. A 1M-comparison project costs what a 1k one does
(`bench/queue_scaling.py`).

Gold comparisons (`gold_choice` set) have no target: each annotator may get each
gold comparison once, and they are mixed into an annotator's tasks with probability
`project.gold_rate` per task while regular work remains for that annotator (gold
alone never keeps an annotator busy once the real work is done). The gold pick reads
the first `QUEUE_WINDOW` gold comparisons (fewest judgments first) of its own index.

Expired leases are reclaimed in bounded batches (`RECLAIM_BATCH`), oldest first,
across projects: at most every `RECLAIM_EVERY` per process, and whenever the pick
finds nothing (then the pick runs once more if a slot came free), so a lease that
ran out never causes a wrong 204.

The next-task and submit paths run plain SQL rather than querysets: compiling the
candidate queryset alone cost more CPU than the database spent on the whole call
(profiled under `bench/annotation_load.py`; the web CPU per judgment fell about 4x).
Every statement lives in this module and `services.judgments`, each one indexed
query; the rows come back as model instances (`selectors.queue.loaded`).
"""

import datetime as dt
import random
from functools import cache

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import (
    Assignment,
    Comparison,
    Membership,
    Project,
    Prompt,
    Response,
)
from annotation.selectors.queue import (
    from_db_datetime,
    from_db_json,
    loaded,
    to_db_datetime,
)
from annotation.services.judgments import (
    ALREADY_JUDGED,
    AssignmentNotFound,
    JudgmentConflict,
    assignment_lock,
    for_update,
    write_together,
)

QUEUE_WINDOW = 200
RECLAIM_BATCH = 100
RECLAIM_EVERY = dt.timedelta(seconds=5)

NOT_A_MEMBER = "You are not a member of project {slug!r}."

LEASED = Assignment.Status.LEASED
EXPIRED = Assignment.Status.EXPIRED
SKIPPED = Assignment.Status.SKIPPED
SUBMITTED = Assignment.Status.SUBMITTED

_ASSIGNMENT = Assignment._meta.db_table
_COMPARISON = Comparison._meta.db_table
_MEMBERSHIP = Membership._meta.db_table
_PROJECT = Project._meta.db_table
_PROMPT = Prompt._meta.db_table
_RESPONSE = Response._meta.db_table

# The project fields a task needs (`task_payload`, `judgment_validate`).
_PROJECT_FIELDS = (
    "id",
    "slug",
    "aspects",
    "target_judgments",
    "lease_seconds",
    "allow_tie",
    "allow_both_bad",
    "gold_rate",
)


class NotProjectMember(Exception):
    """The user holds no role in the project (HTTP 404 in the API)."""


# --- statements -------------------------------------------------------------------


@cache
def _member_sql(by_slug: bool) -> str:
    """Lock the annotator's membership row and read the project, in one statement."""
    columns = ", ".join(f"pr.{name}" for name in _PROJECT_FIELDS)
    key = "pr.slug = %s" if by_slug else "pr.id = %s"
    return (
        f"SELECT {columns} FROM {_MEMBERSHIP} m "
        f"JOIN {_PROJECT} pr ON pr.id = m.project_id "
        f"WHERE {key} AND m.user_id = %s" + for_update("m")
    )


# The texts `task_payload` shows, read with the comparison ("c") they belong to.
_TEXTS_COLUMNS = """
    c.prompt_id, c.response_a_id, c.response_b_id, p.messages, ra.text, rb.text"""
_TEXTS_JOINS = f"""
    JOIN {_PROMPT} p ON p.id = c.prompt_id
    JOIN {_RESPONSE} ra ON ra.id = c.response_a_id
    JOIN {_RESPONSE} rb ON rb.id = c.response_b_id"""

_HELD_SQL = f"""
    SELECT a.id, a.left_is_first, a.leased_at, a.expires_at, c.id, c.gold_choice,
           c.judgment_count, c.lease_count, {_TEXTS_COLUMNS}
    FROM {_ASSIGNMENT} a
    JOIN {_COMPARISON} c ON c.id = a.comparison_id {_TEXTS_JOINS}
    WHERE a.annotator_id = %s AND a.status = '{LEASED}' AND c.project_id = %s
    ORDER BY a.id
    LIMIT 1"""

_RENEW_SQL = f"""
    UPDATE {_ASSIGNMENT} SET leased_at = %s, expires_at = %s
    WHERE id = %s AND status = '{LEASED}'"""

# Windows: the first `QUEUE_WINDOW` rows of a range of the queue index, in queue
# order. Params: project, the range's own. The size is written into the statement
# (not a parameter) so that a prepared statement's generic plan knows it is small.
_REGULAR_WINDOW = f"""
    SELECT id, judgment_count, priority, random_key FROM {_COMPARISON}
    WHERE project_id = %s AND gold_choice IS NULL
      AND judgment_count < %s AND lease_count < %s - judgment_count
    ORDER BY judgment_count, priority DESC, random_key
    LIMIT {{window:d}}"""
_LEVEL_WINDOW = f"""
    SELECT * FROM (
        SELECT id, judgment_count, priority, random_key FROM {_COMPARISON}
        WHERE project_id = %s AND gold_choice IS NULL
          AND judgment_count = %s AND lease_count < %s - judgment_count
        ORDER BY priority {{direction}}, random_key {{tiebreak}}
        LIMIT {{window:d}}
    ) AS level_window"""
_GOLD_WINDOW = f"""
    SELECT id, judgment_count, 0 AS priority, random_key FROM {_COMPARISON}
    WHERE project_id = %s AND gold_choice IS NOT NULL
    ORDER BY judgment_count, random_key
    LIMIT {{window:d}}"""
_QUEUE_ORDER = "judgment_count, priority DESC, random_key"
_PICKED_COLUMNS = """
    c.id, c.gold_choice, c.judgment_count, c.lease_count, c.a_left_count,
    c.b_left_count, own.id AS own_id, c.prompt_id, c.response_a_id,
    c.response_b_id"""
_OWN_JOIN = f"""
    LEFT JOIN {_ASSIGNMENT} own
        ON own.comparison_id = c.id AND own.annotator_id = %s"""


def _pick_sql(window: str, *, regular: bool) -> str:
    """Take the first comparison of `window` the annotator may lease now.

    The left join finds the annotator's own assignment row: none (never seen) or an
    expired lease (reused). The slot condition is repeated on `c`: PostgreSQL
    re-checks it on the row's newest version when it locks the row (another caller
    may have taken the last slot since this statement's snapshot).

    On PostgreSQL the candidates are locked inside a LATERAL subquery driven by the
    sorted window, so the plan is a nested loop whatever the planner estimates: it
    walks the window in queue order, locks (SKIP LOCKED) only rows it returns, and
    stops at the first. (A plain join let the planner hash-join the window against
    a scan of every open comparison.) SQLite's nested loops do the same unforced.
    Params: the window's, then the annotator (and the target twice when `regular`).
    """
    slot = (
        "AND c.judgment_count < %s AND c.lease_count < %s - c.judgment_count"
        if regular
        else "AND c.gold_choice IS NOT NULL"
    )
    ordered = f"SELECT * FROM ({window}) AS u ORDER BY {_QUEUE_ORDER}"
    mine = f"(own.id IS NULL OR own.status = '{EXPIRED}') {slot}"
    if connection.features.has_select_for_update_skip_locked:
        chosen = f"""
            SELECT pick.* FROM ({ordered}) AS w
            CROSS JOIN LATERAL (
                SELECT {_PICKED_COLUMNS}
                FROM {_COMPARISON} c {_OWN_JOIN}
                WHERE c.id = w.id AND {mine}
                {for_update("c", skip_locked=True)}
            ) AS pick
            ORDER BY w.judgment_count, w.priority DESC, w.random_key
            LIMIT 1"""
    else:
        chosen = f"""
            SELECT {_PICKED_COLUMNS}
            FROM ({ordered}) AS w
            JOIN {_COMPARISON} c ON c.id = w.id {_OWN_JOIN}
            WHERE {mine}
            ORDER BY w.judgment_count, w.priority DESC, w.random_key
            LIMIT 1"""
    # The texts are joined to the one row chosen, not to every candidate.
    return f"""
        SELECT chosen.*, p.messages, ra.text, rb.text FROM ({chosen}) AS chosen
        JOIN {_PROMPT} p ON p.id = chosen.prompt_id
        JOIN {_RESPONSE} ra ON ra.id = chosen.response_a_id
        JOIN {_RESPONSE} rb ON rb.id = chosen.response_b_id"""


@cache
def _regular_sql(window: int) -> str:
    return _pick_sql(_REGULAR_WINDOW.format(window=window), regular=True)


@cache
def _fallback_sql(levels: int, window: int) -> str:
    """Head and tail window of every judgment level, for an annotator far ahead."""
    head = _LEVEL_WINDOW.format(direction="DESC", tiebreak="ASC", window=window)
    tail = _LEVEL_WINDOW.format(direction="ASC", tiebreak="DESC", window=window)
    windows = " UNION ALL ".join(part for _ in range(levels) for part in (head, tail))
    return _pick_sql(windows, regular=True)


@cache
def _gold_sql(window: int) -> str:
    return _pick_sql(_GOLD_WINDOW.format(window=window), regular=False)


_LEASE_AGAIN_SQL = f"""
    UPDATE {_ASSIGNMENT}
    SET status = '{LEASED}', left_is_first = %s, leased_at = %s, expires_at = %s,
        completed_at = NULL
    WHERE id = %s"""
_LEASE_NEW_SQL = f"""
    INSERT INTO {_ASSIGNMENT}
        (comparison_id, annotator_id, status, left_is_first, leased_at, expires_at)
    VALUES (%s, %s, '{LEASED}', %s, %s, %s)"""
_COUNT_LEASE_SQL = f"""
    UPDATE {_COMPARISON}
    SET lease_count = lease_count + 1,
        a_left_count = a_left_count + %s, b_left_count = b_left_count + %s
    WHERE id = %s"""


# --- membership and the held lease ----------------------------------------------


def _lock_member(cursor, *, annotator, project: Project | None, slug: str | None):
    """Lock the annotator's membership row; return the project (or raise).

    Superusers may take tasks in any project: without a membership their user row
    is locked instead.
    """
    by_slug = project is None
    cursor.execute(
        _member_sql(by_slug), [slug if by_slug else project.pk, annotator.pk]
    )
    row = cursor.fetchone()
    if row is None:
        return _lock_superuser(annotator=annotator, project=project, slug=slug)
    if project is not None:
        return project
    values = dict(zip(_PROJECT_FIELDS, row, strict=True))
    values["aspects"] = from_db_json(values["aspects"])
    return loaded(Project, **values)


def _lock_superuser(*, annotator, project: Project | None, slug: str | None):
    slug = slug if project is None else project.slug
    if not annotator.is_superuser:
        raise NotProjectMember(NOT_A_MEMBER.format(slug=slug))
    if project is None:
        project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise NotProjectMember(NOT_A_MEMBER.format(slug=slug))
    list(
        get_user_model()
        .objects.select_for_update()
        .filter(pk=annotator.pk)
        .values_list("pk", flat=True)
    )
    return project


def _task(texts, *, annotator, project, comparison, **fields) -> Assignment:
    """Build the leased assignment with its comparison, prompt and responses.

    `texts` are the `_TEXTS_COLUMNS` of the comparison's row.
    """
    prompt_id, a_id, b_id, messages, a_text, b_text = texts
    comparison.project = project
    comparison.prompt = loaded(
        Prompt, id=prompt_id, project_id=project.pk, messages=from_db_json(messages)
    )
    comparison.response_a = loaded(Response, id=a_id, prompt_id=prompt_id, text=a_text)
    comparison.response_b = loaded(Response, id=b_id, prompt_id=prompt_id, text=b_text)
    assignment = loaded(
        Assignment,
        annotator_id=annotator.pk,
        comparison_id=comparison.pk,
        status=LEASED,
        completed_at=None,
        **fields,
    )
    assignment.comparison = comparison
    return assignment


def _held_lease(cursor, *, annotator, project: Project, now: dt.datetime):
    """Return the annotator's leased assignment in the project, renewed if expired.

    The renewal updates the row only while it is still leased: a reclaimer may have
    expired it since it was read (the lease's slot is then free, and the caller
    leases anew). Returns None when there is no live lease to hand back.
    """
    cursor.execute(_HELD_SQL, [annotator.pk, project.pk])
    row = cursor.fetchone()
    if row is None:
        return None
    assignment_id, left_is_first, leased_at, expires_at = row[:4]
    comparison_id, gold_choice, judgment_count, lease_count = row[4:8]
    expires_at = from_db_datetime(expires_at)
    leased_at = from_db_datetime(leased_at)
    if expires_at <= now:
        # Still counted in lease_count (not reclaimed): extending it frees no slot.
        leased_at, expires_at = now, now + dt.timedelta(seconds=project.lease_seconds)
        cursor.execute(
            _RENEW_SQL,
            [to_db_datetime(leased_at), to_db_datetime(expires_at), assignment_id],
        )
        if cursor.rowcount != 1:
            return None
    comparison = loaded(
        Comparison,
        id=comparison_id,
        project_id=project.pk,
        gold_choice=gold_choice,
        judgment_count=judgment_count,
        lease_count=lease_count,
    )
    return _task(
        row[8:14],
        annotator=annotator,
        project=project,
        comparison=comparison,
        id=assignment_id,
        left_is_first=left_is_first,
        leased_at=leased_at,
        expires_at=expires_at,
    )


# --- reclaiming expired leases ----------------------------------------------------

_next_reclaim_at: dt.datetime | None = None


def _reclaim_due(now: dt.datetime) -> bool:
    """True at most once per `RECLAIM_EVERY` of `now` in this process.

    A `now` earlier than the last reclaim (a test's clock, a clock step) counts as
    due, so a reclaim is never skipped for long.
    """
    global _next_reclaim_at
    last = _next_reclaim_at
    if last is not None and last - RECLAIM_EVERY <= now < last:
        return False
    _next_reclaim_at = now + RECLAIM_EVERY
    return True


def leases_reclaim(
    *, now: dt.datetime | None = None, limit: int = RECLAIM_BATCH
) -> int:
    """Mark up to `limit` expired leases as expired and free their slots.

    Finds the oldest expired leases, locks their comparisons in id order with SKIP
    LOCKED (a comparison another caller holds keeps its leases until a later round),
    then expires the leases of the locked comparisons that are still leased and
    expired (a lease renewed meanwhile stays), and recounts those comparisons' live
    leases from the assignment rows. Returns the number of leases reclaimed.
    """
    now = now or timezone.now()
    with transaction.atomic(savepoint=False):
        expired = list(
            Assignment.objects.filter(status=LEASED, expires_at__lte=now)
            .order_by("expires_at")
            .values_list("pk", "comparison_id")[:limit]
        )
        if not expired:
            return 0
        locked = list(
            Comparison.objects.select_for_update(skip_locked=True)
            .filter(pk__in=sorted({cid for _, cid in expired}))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not locked:
            return 0
        held = set(locked)
        reclaimed = Assignment.objects.filter(
            pk__in=[pk for pk, cid in expired if cid in held],
            status=LEASED,
            expires_at__lte=now,
        ).update(status=EXPIRED)
        live = (
            Assignment.objects.filter(comparison_id=OuterRef("pk"), status=LEASED)
            .order_by()
            .values("comparison_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        Comparison.objects.filter(pk__in=locked).update(
            lease_count=Coalesce(Subquery(live), 0)
        )
        return reclaimed


# --- picking and leasing ----------------------------------------------------------


def _pick(cursor, *, annotator, project: Project, gold: bool):
    """Lock the next comparison for the annotator; return its row or None."""
    target, window = project.target_judgments, QUEUE_WINDOW
    if gold:
        cursor.execute(_gold_sql(window), [project.pk, annotator.pk])
        return cursor.fetchone()
    pick = [annotator.pk, target, target]
    cursor.execute(_regular_sql(window), [project.pk, target, target, *pick])
    row = cursor.fetchone()
    if row is None:
        # Head and tail window of each level, in the order `_fallback_sql` has them.
        levels = [
            param
            for level in range(target)
            for _ in ("head", "tail")
            for param in (project.pk, level, target)
        ]
        cursor.execute(_fallback_sql(target, window), [*levels, *pick])
        row = cursor.fetchone()
    return row


def _left_is_first(a_left: int, b_left: int, rng: random.Random) -> bool:
    """Balance sides per comparison: show response_a left if it was shown left less."""
    if a_left == b_left:
        return rng.random() < 0.5
    return a_left < b_left


def _lease(cursor, row, *, annotator, project: Project, now, rng) -> Assignment:
    """Lease the picked comparison `row` to the annotator (its row lock is held)."""
    comparison_id, gold_choice, judgment_count, lease_count = row[:4]
    a_left, b_left, own_expired_id = row[4:7]
    left_is_first = _left_is_first(a_left, b_left, rng)
    expires_at = now + dt.timedelta(seconds=project.lease_seconds)
    times = [to_db_datetime(now), to_db_datetime(expires_at)]
    if own_expired_id is not None:
        lease = (_LEASE_AGAIN_SQL, [left_is_first, *times, own_expired_id])
    else:
        lease = (_LEASE_NEW_SQL, [comparison_id, annotator.pk, left_is_first, *times])
    sides = [int(left_is_first), int(not left_is_first), comparison_id]
    assignment_id = write_together(
        cursor, lease, (_COUNT_LEASE_SQL, sides), pk=own_expired_id
    )
    comparison = loaded(
        Comparison,
        id=comparison_id,
        project_id=project.pk,
        gold_choice=gold_choice,
        judgment_count=judgment_count,
        lease_count=lease_count + 1,
        a_left_count=a_left + left_is_first,
        b_left_count=b_left + (not left_is_first),
    )
    return _task(
        row[7:13],
        annotator=annotator,
        project=project,
        comparison=comparison,
        id=assignment_id,
        left_is_first=left_is_first,
        leased_at=now,
        expires_at=expires_at,
    )


@transaction.atomic
def next_assignment(
    *,
    annotator,
    project: Project | None = None,
    project_slug: str | None = None,
    now: dt.datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """Lease the annotator's next comparison in a project, or return None when done.

    Give the project, or its slug (then the project is read in the same statement
    that locks the membership: one query less for the API). Idempotent while a lease
    is held: the annotator's current lease comes back (a reloaded page shows the same
    task). Raises `NotProjectMember` for users without a role in the project (or a
    slug that names none). `rng` drives the gold draw and the side tie-break (tests
    pass a seeded one). The returned assignment has its comparison, prompt, responses
    and project loaded, ready for `selectors.queue.task_payload`.
    """
    if (project is None) == (project_slug is None):
        raise TypeError("next_assignment() takes one of project and project_slug")
    now = now or timezone.now()
    rng = rng or random.Random()
    with connection.cursor() as cursor:
        project = _lock_member(
            cursor, annotator=annotator, project=project, slug=project_slug
        )
        held = _held_lease(cursor, annotator=annotator, project=project, now=now)
        if held is not None:
            return held
        reclaimed_now = _reclaim_due(now)
        if reclaimed_now:
            leases_reclaim(now=now)
        row = _pick(cursor, annotator=annotator, project=project, gold=False)
        if row is None and not reclaimed_now and leases_reclaim(now=now):
            row = _pick(cursor, annotator=annotator, project=project, gold=False)
        if row is None:
            return None
        if project.gold_rate > 0 and rng.random() < project.gold_rate:
            row = _pick(cursor, annotator=annotator, project=project, gold=True) or row
        return _lease(
            cursor, row, annotator=annotator, project=project, now=now, rng=rng
        )


@transaction.atomic
def assignment_skip(*, assignment: Assignment, annotator) -> Assignment:
    """Give the task back: it is never offered to this annotator again.

    Frees the comparison's slot if the lease still held one. Skipping twice is a
    no-op; skipping a judged task raises `JudgmentConflict`.
    """
    locked = assignment_lock(assignment_id=assignment.pk, annotator=annotator)
    if locked is None:
        raise AssignmentNotFound()
    if locked.status == SKIPPED:
        return locked
    if locked.status == SUBMITTED:
        raise JudgmentConflict(ALREADY_JUDGED)
    held_slot = locked.status == LEASED
    locked.status = SKIPPED
    locked.completed_at = timezone.now()
    Assignment.objects.filter(pk=locked.pk).update(
        status=SKIPPED, completed_at=locked.completed_at
    )
    if held_slot:
        Comparison.objects.filter(pk=locked.comparison_id).update(
            lease_count=F("lease_count") - 1
        )
    return locked
