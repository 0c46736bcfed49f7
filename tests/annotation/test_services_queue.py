"""The queue service: who gets which comparison, leases, reclaim, gold mixing."""

import datetime as dt
import random

import pytest
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from annotation.models import Assignment, Comparison, Role
from annotation.selectors.queue import task_payload
from annotation.services import queue
from annotation.services.judgments import (
    AssignmentNotFound,
    JudgmentConflict,
    judgment_submit,
)
from annotation.services.projects import membership_set, user_create
from annotation.services.queue import (
    NotProjectMember,
    assignment_skip,
    leases_reclaim,
    next_assignment,
)
from tests.annotation.queue_factories import make_comparisons

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


def _annotators(make_user, project, n):
    """Members without a password (hashing one is slow and not under test)."""
    users = [user_create(username=f"a{i}") for i in range(n)]
    for user in users:
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return users


def test_next_assignment_leases_the_least_judged_comparison(project, annotator):
    first, second = make_comparisons(project, 2)
    Comparison.objects.filter(pk=first.pk).update(judgment_count=1)

    assignment = next_assignment(annotator=annotator, project=project, now=NOW)

    assert assignment.comparison_id == second.pk
    assert assignment.status == Assignment.Status.LEASED
    assert assignment.expires_at == NOW + dt.timedelta(seconds=project.lease_seconds)
    assert Comparison.objects.get(pk=second.pk).lease_count == 1


def test_priority_orders_comparisons_with_equal_judgment_counts(project, annotator):
    low, high = make_comparisons(project, 2)
    Comparison.objects.filter(pk=high.pk).update(priority=5)

    assignment = next_assignment(annotator=annotator, project=project, now=NOW)

    assert assignment.comparison_id == high.pk


def test_random_key_breaks_ties(project, annotator):
    a, b = make_comparisons(project, 2)
    Comparison.objects.filter(pk=a.pk).update(random_key=0.9)
    Comparison.objects.filter(pk=b.pk).update(random_key=0.1)

    assert next_assignment(annotator=annotator, project=project).comparison_id == b.pk


def test_new_comparisons_get_distinct_random_keys(project):
    keys = {c.random_key for c in make_comparisons(project, 20)}
    assert len(keys) == 20


def test_next_assignment_returns_the_held_lease_again(project, annotator):
    make_comparisons(project, 3)
    first = next_assignment(annotator=annotator, project=project, now=NOW)
    again = next_assignment(
        annotator=annotator, project=project, now=NOW + dt.timedelta(seconds=5)
    )
    assert again.pk == first.pk
    assert again.expires_at == first.expires_at
    assert Comparison.objects.get(pk=first.comparison_id).lease_count == 1


def test_never_offers_a_comparison_the_annotator_judged_or_skipped(project, annotator):
    make_comparisons(project, 3)
    seen = set()
    a1 = next_assignment(annotator=annotator, project=project, now=NOW)
    judgment_submit(assignment=a1, annotator=annotator, choice="left", now=NOW)
    seen.add(a1.comparison_id)
    a2 = next_assignment(annotator=annotator, project=project, now=NOW)
    assignment_skip(assignment=a2, annotator=annotator)
    seen.add(a2.comparison_id)
    a3 = next_assignment(annotator=annotator, project=project, now=NOW)
    assert a3.comparison_id not in seen
    judgment_submit(assignment=a3, annotator=annotator, choice="right", now=NOW)

    assert next_assignment(annotator=annotator, project=project, now=NOW) is None


def test_full_comparisons_are_not_offered(project, make_user):
    """Target 2: two leases fill the only comparison; a third annotator gets none."""
    make_comparisons(project, 1)
    a, b, c = _annotators(make_user, project, 3)
    assert next_assignment(annotator=a, project=project, now=NOW) is not None
    assert next_assignment(annotator=b, project=project, now=NOW) is not None
    assert next_assignment(annotator=c, project=project, now=NOW) is None


def test_completed_comparisons_stay_complete(project, make_user):
    make_comparisons(project, 1)
    a, b, c = _annotators(make_user, project, 3)
    for user in (a, b):
        assignment = next_assignment(annotator=user, project=project, now=NOW)
        judgment_submit(assignment=assignment, annotator=user, choice="tie", now=NOW)
    comparison = Comparison.objects.get()
    assert (comparison.judgment_count, comparison.lease_count) == (2, 0)
    assert next_assignment(annotator=c, project=project, now=NOW) is None


def test_non_member_cannot_take_tasks(project, outsider):
    make_comparisons(project, 1)
    with pytest.raises(NotProjectMember):
        next_assignment(annotator=outsider, project=project)
    assert not Assignment.objects.exists()


def test_any_role_may_take_tasks(project, researcher, project_admin):
    make_comparisons(project, 2)
    assert next_assignment(annotator=researcher, project=project) is not None
    assert next_assignment(annotator=project_admin, project=project) is not None


def test_expired_lease_is_reclaimed_for_another_annotator(project, make_user):
    """Target 2, three annotators: the third gets the slot once a lease expires."""
    make_comparisons(project, 1)
    a, b, c = _annotators(make_user, project, 3)
    lease_a = next_assignment(annotator=a, project=project, now=NOW)
    soon = NOW + dt.timedelta(minutes=5)
    next_assignment(annotator=b, project=project, now=soon)
    assert next_assignment(annotator=c, project=project, now=soon) is None

    later = lease_a.expires_at + dt.timedelta(seconds=1)
    lease_c = next_assignment(annotator=c, project=project, now=later)

    assert lease_c is not None
    assert lease_c.comparison_id == lease_a.comparison_id
    lease_a.refresh_from_db()
    assert lease_a.status == Assignment.Status.EXPIRED
    assert Comparison.objects.get().lease_count == 2


def test_leases_reclaim_frees_exactly_the_expired_leases(project, make_user):
    make_comparisons(project, 3)
    users = _annotators(make_user, project, 4)
    for i, user in enumerate(users):
        at = NOW + dt.timedelta(seconds=100 * i)
        next_assignment(annotator=user, project=project, now=at)
    cutoff = NOW + dt.timedelta(seconds=150 + project.lease_seconds)

    assert leases_reclaim(now=cutoff) == 2

    statuses = dict(Assignment.objects.values_list("annotator__username", "status"))
    assert statuses == {
        "a0": "expired",
        "a1": "expired",
        "a2": "leased",
        "a3": "leased",
    }
    live = Comparison.objects.annotate(
        live=Count("assignments", filter=Q(assignments__status="leased"))
    )
    assert all(c.lease_count == c.live for c in live)


def test_leases_reclaim_works_in_bounded_batches(project, make_user):
    make_comparisons(project, 5)
    for user in _annotators(make_user, project, 5):
        next_assignment(annotator=user, project=project, now=NOW)
    later = NOW + dt.timedelta(hours=1)
    assert leases_reclaim(now=later, limit=2) == 2
    assert leases_reclaim(now=later, limit=2) == 2
    assert leases_reclaim(now=later, limit=2) == 1
    assert leases_reclaim(now=later, limit=2) == 0
    assert sum(Comparison.objects.values_list("lease_count", flat=True)) == 0


def test_own_expired_lease_comes_back_renewed(project, annotator):
    make_comparisons(project, 2)
    lease = next_assignment(annotator=annotator, project=project, now=NOW)
    later = lease.expires_at + dt.timedelta(minutes=1)

    again = next_assignment(annotator=annotator, project=project, now=later)

    assert again.pk == lease.pk
    assert again.expires_at == later + dt.timedelta(seconds=project.lease_seconds)
    assert Comparison.objects.get(pk=lease.comparison_id).lease_count == 1


def test_own_reclaimed_lease_may_be_leased_again(project, make_user):
    make_comparisons(project, 1)
    (a,) = _annotators(make_user, project, 1)
    lease = next_assignment(annotator=a, project=project, now=NOW)
    later = lease.expires_at + dt.timedelta(seconds=1)
    leases_reclaim(now=later)

    again = next_assignment(annotator=a, project=project, now=later)

    assert again.pk == lease.pk
    assert again.status == Assignment.Status.LEASED
    assert Assignment.objects.get(pk=lease.pk).status == Assignment.Status.LEASED
    assert Comparison.objects.get().lease_count == 1


def test_sides_are_balanced_per_comparison(project, make_user):
    project.target_judgments = 10
    project.save()
    make_comparisons(project, 1)
    users = _annotators(make_user, project, 10)
    rng = random.Random(3)
    sides = [
        next_assignment(annotator=u, project=project, rng=rng).left_is_first
        for u in users
    ]
    assert sides.count(True) == 5
    # Each consecutive pair shows each side once (the less-shown side goes next).
    assert all(sides[i] != sides[i + 1] for i in range(0, 10, 2))


def test_sides_are_random_across_comparisons(project, annotator):
    project.target_judgments = 1
    project.save()
    make_comparisons(project, 60)
    rng = random.Random(7)
    sides = []
    for _ in range(60):
        assignment = next_assignment(annotator=annotator, project=project, rng=rng)
        sides.append(assignment.left_is_first)
        judgment_submit(assignment=assignment, annotator=annotator, choice="left")
    assert 15 < sides.count(True) < 45


def test_gold_is_mixed_in_at_the_gold_rate(project, annotator):
    project.gold_rate = 0.25
    project.target_judgments = 1
    project.save()
    make_comparisons(project, 100, gold=50)
    rng = random.Random(11)
    gold = 0
    for _ in range(100):
        assignment = next_assignment(annotator=annotator, project=project, rng=rng)
        gold += assignment.comparison.is_gold
        judgment_submit(assignment=assignment, annotator=annotator, choice="left")
    # Binomial(100, 0.25): mean 25, sd ~4.3; a 3.5-sd window.
    assert 10 <= gold <= 40


def test_gold_comparisons_go_to_every_annotator_once(project, make_user):
    project.gold_rate = 1.0
    project.target_judgments = 1
    project.save()
    make_comparisons(project, 10, gold=1)
    users = _annotators(make_user, project, 4)
    for user in users:
        assignment = next_assignment(annotator=user, project=project)
        assert assignment.comparison.is_gold
        result = judgment_submit(assignment=assignment, annotator=user, choice="left")
        assert result.judgment.is_gold
        nxt = next_assignment(annotator=user, project=project)
        assert not nxt.comparison.is_gold
        assignment_skip(assignment=nxt, annotator=user)
    gold = Comparison.objects.get(gold_choice__isnull=False)
    assert gold.judgment_count == 4  # above the target of 1: gold has no target


def test_gold_alone_does_not_keep_an_annotator_busy(project, annotator):
    project.gold_rate = 1.0
    project.save()
    make_comparisons(project, 0, gold=3)
    assert next_assignment(annotator=annotator, project=project) is None


def test_skip_frees_the_slot_and_is_idempotent(project, make_user):
    make_comparisons(project, 1)
    a, b, c = _annotators(make_user, project, 3)
    lease = next_assignment(annotator=a, project=project)
    next_assignment(annotator=b, project=project)

    assignment_skip(assignment=lease, annotator=a)
    assignment_skip(assignment=lease, annotator=a)

    assert Comparison.objects.get().lease_count == 1
    assert next_assignment(annotator=c, project=project) is not None
    assert next_assignment(annotator=a, project=project) is None


def test_skip_of_someone_elses_assignment_is_not_found(project, make_user):
    make_comparisons(project, 1)
    a, b = _annotators(make_user, project, 2)
    lease = next_assignment(annotator=a, project=project)
    with pytest.raises(AssignmentNotFound):
        assignment_skip(assignment=lease, annotator=b)


def test_skip_after_judging_is_a_conflict(project, annotator):
    make_comparisons(project, 1)
    lease = next_assignment(annotator=annotator, project=project)
    judgment_submit(assignment=lease, annotator=annotator, choice="left")
    with pytest.raises(JudgmentConflict):
        assignment_skip(assignment=lease, annotator=annotator)


def _savepoint_and_writes() -> int:
    """Queries a test adds to a call: its atomic block is a savepoint here (2), and
    SQLite runs a lease's two writes one by one (PostgreSQL as one statement)."""
    return 2 + (connection.vendor != "postgresql")


@pytest.fixture
def reclaim_not_due(monkeypatch):
    """The periodic reclaim just ran in this process (it runs at most every 5 s)."""
    monkeypatch.setattr(
        queue, "_next_reclaim_at", timezone.now() + queue.RECLAIM_EVERY / 2
    )


def test_next_assignment_takes_four_queries_on_the_common_path(
    project, annotator, reclaim_not_due, django_assert_num_queries
):
    """Lock the membership (and read the project), look for a held lease, pick and
    lock a comparison with its texts, write the lease and the counters."""
    make_comparisons(project, 50)
    with django_assert_num_queries(4 + _savepoint_and_writes()):
        assignment = next_assignment(annotator=annotator, project_slug=project.slug)
    with django_assert_num_queries(0):
        task_payload(assignment)
    with django_assert_num_queries(2 + 2):  # the held lease comes back
        again = next_assignment(annotator=annotator, project=project)
    assert again.pk == assignment.pk
    assert task_payload(again) == task_payload(assignment)


def test_next_assignment_uses_a_bounded_number_of_queries(
    project, make_user, django_assert_max_num_queries
):
    """Worst path: a held lease that was reclaimed meanwhile (renewal finds it gone:
    1), the periodic reclaim (4), nothing in the hot window nor the fallback (2),
    reclaim on empty (4) and the pick again (2), a gold draw (1), on top of the
    common path's 4: 18 at most, whatever the project's size."""
    make_comparisons(project, 50, gold=5)
    project.gold_rate = 1.0
    project.save()
    users = _annotators(make_user, project, 3)
    # Expired leases waiting to be reclaimed, the worst path.
    for user in users[:2]:
        next_assignment(annotator=user, project=project, now=NOW)
    later = timezone.now()
    with django_assert_max_num_queries(18 + _savepoint_and_writes()):
        assignment = next_assignment(annotator=users[2], project=project, now=later)
    assert assignment.comparison.is_gold
    with django_assert_max_num_queries(0):
        task_payload(assignment)


def test_the_project_may_be_given_by_slug(project, annotator, outsider):
    make_comparisons(project, 1)
    assignment = next_assignment(annotator=annotator, project_slug="demo")
    assert assignment.comparison.project.slug == "demo"
    assert task_payload(assignment)["aspects"] == ["helpfulness", "harmlessness"]
    with pytest.raises(NotProjectMember):
        next_assignment(annotator=outsider, project_slug="demo")
    with pytest.raises(NotProjectMember):
        next_assignment(annotator=annotator, project_slug="no-such-project")
    with pytest.raises(TypeError):
        next_assignment(annotator=annotator)


def test_superusers_take_tasks_without_a_membership(project, db):
    make_comparisons(project, 1)
    admin = user_create(username="root")
    admin.is_superuser = True
    admin.save()
    assert next_assignment(annotator=admin, project_slug=project.slug) is not None
    assert Assignment.objects.get().annotator_id == admin.pk


def test_the_returned_task_matches_the_stored_rows(project, annotator):
    """The plain-SQL path builds the same objects the ORM would load."""
    make_comparisons(project, 3)
    assignment = next_assignment(annotator=annotator, project=project, now=NOW)
    stored = Assignment.objects.select_related(
        "comparison__prompt", "comparison__response_a", "comparison__response_b"
    ).get(pk=assignment.pk)
    assert task_payload(assignment) == task_payload(stored)
    for name in ("status", "left_is_first", "leased_at", "expires_at"):
        assert getattr(assignment, name) == getattr(stored, name)
    comparison = assignment.comparison
    assert (
        (comparison.lease_count, comparison.a_left_count + comparison.b_left_count)
        == (
            stored.comparison.lease_count,
            stored.comparison.a_left_count + stored.comparison.b_left_count,
        )
        == (1, 1)
    )
    # Fields the queue did not read are loaded on access, not defaulted.
    assert comparison.created_at == stored.comparison.created_at
