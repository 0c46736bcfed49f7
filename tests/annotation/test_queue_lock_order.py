"""One lock order for the queue (comparison row, then assignment row), on PostgreSQL.

A transaction that holds an assignment lock while it waits for a comparison lock
closes a cycle with one that holds the comparison and updates the assignment (the
next-task path reusing an expired lease does exactly that): PostgreSQL aborts one of
them with a deadlock error, a 500. Each test holds a comparison lock from another
connection, runs a service against it in a thread, and checks from a third
connection what the service holds while it waits.
"""

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections

from annotation.models import Assignment, Comparison, Role
from annotation.services.judgments import judgment_submit
from annotation.services.projects import membership_set, project_create, user_create
from annotation.services.queue import assignment_skip, leases_reclaim, next_assignment
from tests.annotation.queue_factories import make_comparisons

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT_S = 10


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks: needs PostgreSQL (set DATABASE_URL to postgres://)")


@pytest.fixture
def lease():
    project = project_create(slug="locks", name="Locks", target_judgments=2)
    make_comparisons(project, 1)
    annotator = user_create(username="locker")
    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    return next_assignment(annotator=annotator, project=project), annotator


class Session:
    """A connection of its own (a second client of the database)."""

    def __init__(self):
        self.db = connections.create_connection("default")
        self.db.set_autocommit(False)

    def execute(self, sql: str, params=()):
        with self.db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else None

    def close(self):
        self.db.rollback()
        self.db.close()


def _in_thread(target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = target()
        except Exception as exc:  # reported by the test
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_for_a_lock_wait(probe: Session) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        waiting = probe.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE NOT l.granted AND a.datname = current_database()"
        )[0][0]
        probe.db.rollback()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the service never waited for the comparison lock")


def _assignment_is_free(probe: Session, assignment_id: int) -> bool:
    from django.db.utils import OperationalError

    try:
        probe.execute(
            "SELECT id FROM annotation_assignment WHERE id = %s FOR UPDATE NOWAIT",
            [assignment_id],
        )
        return True
    except OperationalError:
        return False
    finally:
        probe.db.rollback()


@pytest.mark.parametrize("service", ["submit", "skip"])
def test_submit_and_skip_lock_the_comparison_before_the_assignment(lease, service):
    assignment, annotator = lease
    blocker, probe = Session(), Session()
    try:
        blocker.execute(
            "SELECT id FROM annotation_comparison WHERE id = %s FOR UPDATE",
            [assignment.comparison_id],
        )
        if service == "submit":
            thread, outcome = _in_thread(
                lambda: judgment_submit(
                    assignment=assignment, annotator=annotator, choice="left"
                )
            )
        else:
            thread, outcome = _in_thread(
                lambda: assignment_skip(assignment=assignment, annotator=annotator)
            )
        _wait_for_a_lock_wait(probe)

        assert _assignment_is_free(probe, assignment.pk)

        blocker.db.rollback()
        thread.join(WAIT_S)
    finally:
        blocker.close()
        probe.close()
    assert not thread.is_alive() and "error" not in outcome, outcome
    expected = "submitted" if service == "submit" else "skipped"
    assert Assignment.objects.get(pk=assignment.pk).status == expected


def test_reclaim_passes_over_a_locked_comparison_instead_of_waiting(lease):
    assignment, _ = lease
    later = assignment.expires_at + dt.timedelta(seconds=1)
    blocker = Session()
    try:
        blocker.execute(
            "SELECT id FROM annotation_comparison WHERE id = %s FOR UPDATE",
            [assignment.comparison_id],
        )
        thread, outcome = _in_thread(lambda: leases_reclaim(now=later))
        thread.join(WAIT_S)
        assert not thread.is_alive(), "reclaim waited for the locked comparison"
        assert outcome == {"value": 0}
    finally:
        blocker.close()
        thread.join(WAIT_S)
    assert Assignment.objects.get(pk=assignment.pk).status == "leased"

    assert leases_reclaim(now=later) == 1
    assert Comparison.objects.get(pk=assignment.comparison_id).lease_count == 0
