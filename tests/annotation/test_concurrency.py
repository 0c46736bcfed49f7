"""Many annotators hammer the real HTTP API at once until the queue drains.

Each client is a thread with its own `requests` session and token, talking to a live
server (a real threaded WSGI server and real database connections, one per request).
Afterwards the database must show: no (comparison, annotator) twice, every regular
comparison exactly at its target with no lease left, every 201 stored, no 5xx.
"""

import random
import threading
from collections import Counter

import pytest
import requests
from django.db import connection
from django.db.models import Count
from rest_framework.authtoken.models import Token

from annotation.models import Assignment, Comparison, Judgment, Role
from annotation.services.judgments import to_canonical
from annotation.services.projects import membership_set, project_create, user_create
from tests.annotation.queue_factories import make_comparisons

CHOICES = ("left", "right", "tie", "both_bad")
SKIP_RATE = 0.05
RETRY_RATE = 0.1
MAX_STEPS = 400  # per client; far above what draining needs, stops a runaway loop


def _setup(*, clients: int, comparisons: int, gold: int, target: int):
    project = project_create(
        slug="race",
        name="Race",
        aspects=["helpfulness"],
        target_judgments=target,
        gold_rate=0.1 if gold else 0.0,
    )
    make_comparisons(project, comparisons, gold=gold)
    tokens = []
    for i in range(clients):
        user = user_create(username=f"racer{i}")
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        tokens.append(Token.objects.create(user=user).key)
    return project, tokens


def _client_loop(base_url: str, slug: str, token: str, seed: int, log: list) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    next_url = f"{base_url}/api/v1/projects/{slug}/next-task/"
    for _ in range(MAX_STEPS):
        r = session.post(next_url, timeout=60)
        log.append(("next", r.status_code, None, None))
        if r.status_code != 200:
            return
        assignment = r.json()["assignment"]
        if rng.random() < SKIP_RATE:
            r = session.post(
                f"{base_url}/api/v1/assignments/{assignment}/skip/", timeout=60
            )
            log.append(("skip", r.status_code, assignment, None))
            continue
        choice = rng.choice(CHOICES)
        body = {
            "choice": choice,
            # Strength grades a winner: none for a tie or both bad.
            "strength": rng.randint(1, 3) if choice in ("left", "right") else None,
            "aspects": {"helpfulness": rng.choice(CHOICES)},
        }
        url = f"{base_url}/api/v1/assignments/{assignment}/judgment/"
        r = session.post(url, json=body, timeout=60)
        log.append(("judge", r.status_code, assignment, body))
        if rng.random() < RETRY_RATE:
            r = session.post(url, json=body, timeout=60)
            log.append(("retry", r.status_code, assignment, body))
    log.append(("runaway", 0, None, None))


def _hammer(live_server, project, tokens) -> list:
    logs = [[] for _ in tokens]
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(live_server.url, project.slug, token, seed, logs[seed]),
        )
        for seed, token in enumerate(tokens)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    return [entry for log in logs for entry in log]


def _assert_drained_consistently(project, entries) -> None:
    statuses = Counter((kind, status) for kind, status, _, _ in entries)
    assert not [e for e in entries if e[1] >= 500], statuses
    assert set(statuses) <= {
        ("next", 200),
        ("next", 204),
        ("skip", 204),
        ("judge", 201),
        ("retry", 200),
    }, statuses

    duplicates = (
        Judgment.objects.values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not duplicates.exists()
    for comparison in Comparison.objects.filter(project=project).annotate(
        judged=Count("judgments")
    ):
        assert comparison.lease_count == 0
        assert comparison.judgment_count == comparison.judged
        if comparison.gold_choice is None:
            assert comparison.judgment_count == project.target_judgments, comparison
    assert not Assignment.objects.filter(status="leased").exists()

    created = [(a, body) for kind, status, a, body in entries if status == 201]
    assert len(created) == Judgment.objects.count()
    stored = {
        j.assignment_id: j
        for j in Judgment.objects.select_related("assignment").filter(
            assignment_id__in=[a for a, _ in created]
        )
    }
    for assignment_id, body in created:
        judgment = stored[assignment_id]
        assert judgment.choice == to_canonical(
            body["choice"], left_is_first=judgment.left_is_first
        )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sixteen_clients_drain_the_queue_over_http_on_postgres(live_server):
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL (row locks with SKIP LOCKED); set DATABASE_URL to a "
            "postgres:// URL to run it"
        )
    project, tokens = _setup(clients=16, comparisons=40, gold=2, target=3)

    entries = _hammer(live_server, project, tokens)

    _assert_drained_consistently(project, entries)
    assert sum(1 for e in entries if e[:2] == ("next", 204)) == len(tokens)


@pytest.mark.django_db(transaction=True)
def test_four_clients_drain_the_queue_over_http_on_sqlite(live_server):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite variant; PostgreSQL runs the 16-client test")
    if connection.is_in_memory_db():
        pytest.skip(
            "an in-memory SQLite test database is one connection shared by the live "
            "server's threads; set PREFLINE_TEST_DB_NAME=/tmp/<name>.sqlite3 for a "
            "file database"
        )
    project, tokens = _setup(clients=4, comparisons=12, gold=1, target=2)

    entries = _hammer(live_server, project, tokens)

    _assert_drained_consistently(project, entries)
    assert sum(1 for e in entries if e[:2] == ("next", 204)) == len(tokens)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_annotator_in_many_tabs_gets_one_task_on_postgres(live_server):
    """Eight simultaneous next-task calls by one annotator lease a single task."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL; set DATABASE_URL to a postgres:// URL")
    project, (token,) = _setup(clients=1, comparisons=20, gold=0, target=3)
    url = f"{live_server.url}/api/v1/projects/{project.slug}/next-task/"
    barrier = threading.Barrier(8)
    answers = []

    def tab() -> None:
        barrier.wait()
        r = requests.post(url, headers={"Authorization": f"Token {token}"}, timeout=60)
        answers.append((r.status_code, r.json()["assignment"]))

    threads = [threading.Thread(target=tab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(answers) == 8
    assert {status for status, _ in answers} == {200}
    assert len({assignment for _, assignment in answers}) == 1
    assert Assignment.objects.count() == 1
    assert sum(Comparison.objects.values_list("lease_count", flat=True)) == 1
