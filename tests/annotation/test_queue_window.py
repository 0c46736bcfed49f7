"""Next-task reads a bounded window of the queue, whatever the project's size.

The cases where the old scan grew with the project: an annotator who has judged or
skipped everything still open (the 204 path), or most of it (an annotator far ahead
of the others). The window is made small here so that small projects show it.
"""

import pytest
from django.db import connection

from annotation.models import Assignment, Comparison, Role
from annotation.services import queue
from annotation.services.projects import membership_set, user_create
from annotation.services.queue import next_assignment
from tests.annotation.queue_factories import make_comparisons

WINDOW = 5


@pytest.fixture(autouse=True)
def small_window(monkeypatch):
    monkeypatch.setattr(queue, "QUEUE_WINDOW", WINDOW)


def _seen(annotator, comparisons, status=Assignment.Status.SKIPPED):
    from django.utils import timezone

    now = timezone.now()
    Assignment.objects.bulk_create(
        Assignment(
            comparison=c,
            annotator=annotator,
            status=status,
            left_is_first=True,
            leased_at=now,
            expires_at=now,
            completed_at=now,
        )
        for c in comparisons
    )


def _in_queue_order(project, **filters):
    return list(
        Comparison.objects.filter(project=project, **filters).order_by(
            "judgment_count", "-priority", "random_key"
        )
    )


def test_an_annotator_who_has_seen_everything_open_gets_none(project, annotator):
    make_comparisons(project, 4 * WINDOW)
    _seen(annotator, Comparison.objects.all())
    assert next_assignment(annotator=annotator, project=project) is None


def test_past_a_seen_window_the_tail_of_the_level_is_served(project, annotator):
    """The head of the level is all skipped: the fallback's tail window has work,
    served in queue order."""
    make_comparisons(project, 4 * WINDOW)
    ordered = _in_queue_order(project)
    _seen(annotator, ordered[:WINDOW])

    task = next_assignment(annotator=annotator, project=project)

    assert task.comparison_id == ordered[-WINDOW].pk


def test_an_annotator_far_ahead_gets_the_next_judgment_level(project, annotator):
    """Level 0 is the annotator's own skips; level 1 has comparisons others judged."""
    make_comparisons(project, 2 * WINDOW, tag="a")
    _seen(annotator, Comparison.objects.all())
    judged_by_others = make_comparisons(project, 3, tag="b")
    Comparison.objects.filter(pk__in=[c.pk for c in judged_by_others]).update(
        judgment_count=1
    )

    task = next_assignment(annotator=annotator, project=project)

    assert task.comparison_id in {c.pk for c in judged_by_others}


def test_unseen_work_deep_inside_a_large_seen_level_is_the_documented_limit(
    project, annotator
):
    """Past the head and tail windows of every level the queue does not look: a 204
    then comes early (the bound that keeps next-task's cost flat)."""
    make_comparisons(project, 3 * WINDOW)
    ordered = _in_queue_order(project)
    middle = ordered[WINDOW : 2 * WINDOW]
    _seen(annotator, [c for c in ordered if c not in middle])

    assert next_assignment(annotator=annotator, project=project) is None


def test_full_comparisons_do_not_use_up_the_window(project, make_user):
    """Comparisons whose slots are all leased are passed over, not counted."""
    make_comparisons(project, 3 * WINDOW)
    ordered = _in_queue_order(project)
    Comparison.objects.filter(pk__in=[c.pk for c in ordered[: 2 * WINDOW]]).update(
        lease_count=project.target_judgments
    )
    user = user_create(username="late")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)

    task = next_assignment(annotator=user, project=project)

    assert task.comparison_id == ordered[2 * WINDOW].pk


def _rows_read(tables: list[str]) -> dict[str, int]:
    """Rows this transaction has read so far, per table (PostgreSQL statistics)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, coalesce(idx_tup_fetch, 0) + seq_tup_read "
            "FROM pg_stat_xact_user_tables WHERE relname = ANY(%s)",
            [tables],
        )
        return dict(cursor.fetchall())


@pytest.mark.postgres
@pytest.mark.parametrize("seen", ["everything", "all but the last"])
def test_next_task_reads_a_bounded_number_of_rows_in_a_large_project(
    project, annotator, seen
):
    """The exhausted case reads the windows, not the project (PostgreSQL counts)."""
    if connection.vendor != "postgresql":
        pytest.skip("reads the row counts of pg_stat_xact_user_tables")
    size = 800 * WINDOW
    make_comparisons(project, size)
    ordered = _in_queue_order(project)
    _seen(annotator, ordered if seen == "everything" else ordered[:-1])
    tables = ["annotation_comparison", "annotation_assignment"]
    with connection.cursor() as cursor:
        # Statistics of the tables as they are now: the planner may rightly scan a
        # table it believes tiny (the test database's earlier tests) from end to end.
        cursor.execute(f"ANALYZE {', '.join(tables)}")
    before = _rows_read(tables)

    task = next_assignment(annotator=annotator, project=project)

    after = _rows_read(tables)
    read = {t: after.get(t, 0) - before.get(t, 0) for t in tables}
    levels = project.target_judgments
    # Each window row is read from the queue index and again by primary key.
    bound = 2 * WINDOW * (1 + 2 * levels) + 20
    assert read["annotation_comparison"] <= bound < size, read
    assert read["annotation_assignment"] <= bound < size, read
    if seen == "everything":
        assert task is None
    else:
        assert task.comparison_id == ordered[-1].pk
