"""Races between one annotator's next-task and the reclaimer, on PostgreSQL."""

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.db.models import Count, Q

from annotation.models import Assignment, Comparison, Role
from annotation.services.projects import membership_set, project_create, user_create
from annotation.services.queue import leases_reclaim, next_assignment
from tests.annotation.queue_factories import make_comparisons

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
WAIT_S = 10


def _wait_for_a_lock_wait() -> None:
    probe = connections.create_connection("default")
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with probe.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                    "USING (pid) WHERE NOT l.granted "
                    "AND a.datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    return
            time.sleep(0.02)
        raise AssertionError("next-task never waited for the reclaimer's lock")
    finally:
        probe.close()


def test_a_lease_reclaimed_while_its_renewal_waits_is_not_handed_back_as_live():
    """The annotator's own lease ran out; the reclaimer expires it (not committed
    yet) while the annotator asks again. The renewal must not return it as live."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL row locks (set DATABASE_URL to postgres://)")
    project = project_create(slug="race", name="Race", target_judgments=2)
    make_comparisons(project, 1)
    annotator = user_create(username="renewer")
    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    lease = next_assignment(annotator=annotator, project=project, now=NOW)
    later = lease.expires_at + dt.timedelta(seconds=1)
    reclaimed, release = threading.Event(), threading.Event()
    outcome = {}

    def reclaimer():
        try:
            with transaction.atomic():
                outcome["reclaimed"] = leases_reclaim(now=later)
                reclaimed.set()
                release.wait(WAIT_S)
        finally:
            connection.close()

    def annotator_asks():
        try:
            outcome["task"] = next_assignment(
                annotator=annotator, project=project, now=later
            )
        finally:
            connection.close()

    first = threading.Thread(target=reclaimer)
    first.start()
    assert reclaimed.wait(WAIT_S)
    second = threading.Thread(target=annotator_asks)
    second.start()
    _wait_for_a_lock_wait()
    release.set()
    first.join(WAIT_S)
    second.join(WAIT_S)

    assert outcome["reclaimed"] == 1
    task = outcome["task"]
    stored = Assignment.objects.get(pk=task.pk)
    assert stored.status == Assignment.Status.LEASED
    assert stored.expires_at == task.expires_at > later
    comparison = Comparison.objects.annotate(
        live=Count("assignments", filter=Q(assignments__status="leased"))
    ).get(pk=task.comparison_id)
    assert comparison.lease_count == comparison.live == 1
