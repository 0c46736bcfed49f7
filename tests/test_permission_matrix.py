"""Who gets what from every URL: one row per (URL name, method), one status per role.

`test_every_url_is_in_the_matrix` walks the URL resolver and fails when a named route
(outside the Django admin and static files) has no row here, so a new endpoint cannot
ship without its permission row. Each row's requests run in a savepoint that is
rolled back, so a write by one role never changes what the next role sees.

Roles, in the order of `Row.expect`: anonymous, outsider (logged in, no membership),
annotator, researcher, project admin, superuser.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from annotation.models import Assignment, ImportBatch, Role
from annotation.services.projects import token_issue
from annotation.services.queue import next_assignment
from exports.models import DatasetSnapshot
from tests.annotation.api_data import ApiData, make_api_data
from tests.conftest import PASSWORD
from training.models import TrainingRun

ROLES = ("anonymous", "outsider", "annotator", "researcher", "admin", "superuser")
EXCLUDED_PREFIXES = ("admin/", "static/")


@dataclass
class World:
    """The rows every request runs against (see `world` below)."""

    data: ApiData
    assignment: Assignment
    snapshot: DatasetSnapshot
    run: TrainingRun
    batch: ImportBatch
    users: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    expect: tuple[int, int, int, int, int, int]
    kwargs: Callable[[World], dict] = lambda w: {}
    body: Callable[[World], dict] | None = None
    fmt: str | None = None  # default: JSON for api-* names, a form post otherwise

    def __post_init__(self):
        assert len(self.expect) == len(ROLES), self.name


def slug(w: World) -> dict:
    return {"slug": "demo"}


def in_project(**more: Callable[[World], object]) -> Callable[[World], dict]:
    return lambda w: {"project_slug": "demo", **{k: f(w) for k, f in more.items()}}


def ann_assignment(w: World) -> dict:
    return {"assignment_id": w.assignment.pk}


def slug_and_assignment(w: World) -> dict:
    return {"slug": "demo", "assignment_id": w.assignment.pk}


def slug_and_comparison(w: World) -> dict:
    return {"slug": "demo", "comparison_id": w.data.comparisons[0].pk}


def slug_and_snapshot(w: World) -> dict:
    return {"slug": "demo", "pk": w.snapshot.pk}


def run_id(w: World) -> dict:
    return {"run_id": w.run.pk}


A, N, F, U, OK, C, NC, R = 401, 404, 403, 405, 200, 201, 204, 302
BAD, ACCEPTED, CONFLICT = 400, 202, 409
READ_ALL_MEMBERS = (A, N, OK, OK, OK, OK)  # API: any member reads
READ_RESEARCHERS = (A, N, F, OK, OK, OK)  # API: researchers and admins read
PAGE_ALL_MEMBERS = (R, N, OK, OK, OK, OK)
PAGE_RESEARCHERS = (R, N, F, OK, OK, OK)

MATRIX: list[Row] = [
    # --- site -------------------------------------------------------------------
    Row("login", "get", (OK,) * 6),
    Row("logout", "post", (R,) * 6),
    Row("project-list", "get", (R, OK, OK, OK, OK, OK)),
    Row("schema", "get", (OK,) * 6),
    Row("docs", "get", (OK,) * 6),
    Row("api-root", "get", (A, OK, OK, OK, OK, OK)),
    Row(
        "api-token",
        "post",
        (OK,) * 6,
        body=lambda w: {"username": "ann", "password": PASSWORD},
    ),
    # --- projects and members (API) ----------------------------------------------
    Row("api-project-list", "get", (A, OK, OK, OK, OK, OK)),
    Row(
        "api-project-list",
        "post",
        (A, F, F, F, F, C),
        body=lambda w: {"slug": "new", "name": "New"},
    ),
    Row("api-project-detail", "get", READ_ALL_MEMBERS, kwargs=slug),
    Row(
        "api-project-detail",
        "patch",
        (A, N, F, F, OK, OK),
        kwargs=slug,
        body=lambda w: {"name": "Renamed"},
    ),
    Row("api-member-list", "get", READ_RESEARCHERS, kwargs=in_project()),
    Row(
        "api-member-list",
        "post",
        (A, N, F, F, C, C),
        kwargs=in_project(),
        body=lambda w: {"username": "outsider", "role": "annotator"},
    ),
    Row(
        "api-member-detail",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(username=lambda w: "ann"),
    ),
    Row(
        "api-member-detail",
        "patch",
        (A, N, F, F, OK, OK),
        kwargs=in_project(username=lambda w: "ann"),
        body=lambda w: {"role": "researcher"},
    ),
    Row(
        "api-member-detail",
        "delete",
        (A, N, F, F, NC, NC),
        kwargs=in_project(username=lambda w: "ann"),
    ),
    # --- data (API) ----------------------------------------------------------------
    Row("api-prompt-list", "get", READ_RESEARCHERS, kwargs=in_project()),
    Row(
        "api-prompt-detail",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.data.prompts[0].pk),
    ),
    Row("api-response-list", "get", READ_RESEARCHERS, kwargs=in_project()),
    Row(
        "api-response-detail",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.data.responses[0].pk),
    ),
    Row("api-comparison-list", "get", READ_RESEARCHERS, kwargs=in_project()),
    Row(
        "api-comparison-detail",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.data.comparisons[0].pk),
    ),
    Row(
        "api-comparison-detail",
        "patch",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.data.comparisons[0].pk),
        body=lambda w: {"priority": 3},
    ),
    Row("api-judgment-list", "get", READ_ALL_MEMBERS, kwargs=in_project()),
    Row(
        "api-judgment-detail",
        "get",
        READ_ALL_MEMBERS,
        kwargs=in_project(id=lambda w: w.data.judgments[0].public_id),
    ),
    Row(  # another annotator's judgment: invisible to the annotator
        "api-judgment-detail",
        "get",
        (A, N, N, OK, OK, OK),
        kwargs=in_project(id=lambda w: w.data.judgments[1].public_id),
    ),
    # --- annotation pages --------------------------------------------------------
    Row("annotate", "get", PAGE_ALL_MEMBERS, kwargs=slug),
    Row("task-next", "post", (R, N, R, R, R, R), kwargs=slug),
    Row(
        "task-judge",
        "post",
        (R, N, R, N, N, N),
        kwargs=slug_and_assignment,
        body=lambda w: {"choice": "left"},
    ),
    Row("task-skip", "post", (R, N, R, N, N, N), kwargs=slug_and_assignment),
    Row("dashboard", "get", PAGE_RESEARCHERS, kwargs=slug),
    Row("dashboard-stats", "get", PAGE_RESEARCHERS, kwargs=slug),
    Row("import-page", "get", PAGE_RESEARCHERS, kwargs=slug),
    Row("import-page", "post", PAGE_RESEARCHERS, kwargs=slug),
    Row("judgment-list", "get", PAGE_RESEARCHERS, kwargs=slug),
    Row("judgment-csv", "get", PAGE_RESEARCHERS, kwargs=slug),
    Row("comparison-detail", "get", PAGE_RESEARCHERS, kwargs=slug_and_comparison),
    Row(
        "comparison-gold",
        "post",
        (R, N, F, R, R, R),
        kwargs=slug_and_comparison,
        body=lambda w: {"gold_choice": "second"},
    ),
    # --- queue API -----------------------------------------------------------------
    Row("api-next-task", "post", READ_ALL_MEMBERS, kwargs=slug),
    Row(
        "api-assignment-judgment",
        "post",
        (A, N, C, N, N, N),
        kwargs=ann_assignment,
        body=lambda w: {"choice": "left"},
    ),
    Row("api-assignment-skip", "post", (A, N, NC, N, N, N), kwargs=ann_assignment),
    # --- exports -------------------------------------------------------------------
    Row("snapshot-list", "get", PAGE_RESEARCHERS, kwargs=slug),
    Row("snapshot-list", "post", (R, N, F, BAD, BAD, BAD), kwargs=slug),
    Row("snapshot-detail", "get", PAGE_RESEARCHERS, kwargs=slug_and_snapshot),
    Row(
        "snapshot-download",
        "get",
        (R, N, F, CONFLICT, CONFLICT, CONFLICT),
        kwargs=slug_and_snapshot,
    ),
    Row("api-snapshot-list", "get", READ_RESEARCHERS, kwargs=in_project()),
    Row(
        "api-snapshot-list",
        "post",
        (A, N, F, ACCEPTED, ACCEPTED, ACCEPTED),
        kwargs=in_project(),
        body=lambda w: {},
    ),
    Row(
        "api-snapshot-preview",
        "post",
        READ_RESEARCHERS,
        kwargs=in_project(),
        body=lambda w: {},
    ),
    Row(
        "api-snapshot-detail",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.snapshot.pk),
    ),
    Row(
        "api-snapshot-download",
        "get",
        (A, N, F, CONFLICT, CONFLICT, CONFLICT),
        kwargs=in_project(pk=lambda w: w.snapshot.pk),
    ),
    Row(
        "api-snapshot-judgment-ids",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.snapshot.pk),
    ),
    # --- training ------------------------------------------------------------------
    Row("training-run-list", "get", (R, OK, OK, OK, OK, OK)),
    Row("training-run-new", "get", (R, OK, OK, OK, OK, OK)),
    Row("training-run-new", "post", (R, OK, OK, OK, OK, OK)),
    Row("training-run-detail", "get", PAGE_RESEARCHERS, kwargs=run_id),
    Row("training-run-cancel", "post", (R, N, F, R, R, R), kwargs=run_id),
    Row("api-run-list", "get", (A, OK, OK, OK, OK, OK)),
    Row("api-run-list", "post", (A, BAD, BAD, BAD, BAD, BAD), body=lambda w: {}),
    Row("api-run-detail", "get", READ_RESEARCHERS, kwargs=run_id),
    Row(
        "api-run-cancel", "post", (A, N, F, ACCEPTED, ACCEPTED, ACCEPTED), kwargs=run_id
    ),
    Row("api-run-metrics", "get", READ_RESEARCHERS, kwargs=run_id),
    Row("api-run-warnings", "get", READ_RESEARCHERS, kwargs=run_id),
    Row("api-run-checkpoints", "get", READ_RESEARCHERS, kwargs=run_id),
    Row("api-run-log", "get", READ_RESEARCHERS, kwargs=run_id),
    Row("api-recipe-list", "get", (A, OK, OK, OK, OK, OK)),
    # --- imports -------------------------------------------------------------------
    Row("api-import-list", "get", READ_RESEARCHERS, kwargs=in_project()),
    Row(
        "api-import-list",
        "post",
        (A, N, F, BAD, BAD, BAD),
        kwargs=in_project(),
        body=lambda w: {"split": "train"},
        fmt="multipart",
    ),
    Row(
        "api-import-detail",
        "get",
        READ_RESEARCHERS,
        kwargs=in_project(pk=lambda w: w.batch.pk),
    ),
]


def _walk(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.name


def routed_names() -> dict[str, str]:
    """URL name -> route of every pattern outside the admin and static files."""
    names = {}
    for route, name in _walk(get_resolver().url_patterns):
        if route.lstrip("^").startswith(EXCLUDED_PREFIXES):
            continue
        assert name, f"URL pattern {route!r} has no name; name it and add a row."
        names.setdefault(name, route)
    return names


def test_every_url_is_in_the_matrix():
    missing = sorted(set(routed_names()) - {row.name for row in MATRIX})
    assert not missing, (
        "These URLs have no row in tests/test_permission_matrix.py MATRIX (add one "
        f"per method with the status for each of {ROLES}): {missing}"
    )


def test_every_row_names_a_real_url():
    unknown = sorted({row.name for row in MATRIX} - set(routed_names()))
    assert not unknown, f"Rows for URL names that no longer exist: {unknown}"


@pytest.fixture
def world(project, annotator, researcher, project_admin, outsider, make_user):
    users = {
        "anonymous": None,
        "outsider": outsider,
        "annotator": annotator,
        "researcher": researcher,
        "admin": project_admin,
    }
    root = make_user("root")
    root.is_superuser = root.is_staff = True
    root.save()
    users["superuser"] = root
    other = make_user("ann2", project=project, role=Role.ANNOTATOR)
    data = make_api_data(project, annotator, other)
    assignment = next_assignment(annotator=annotator, project=project)
    snapshot = DatasetSnapshot.objects.create(project=project, name="snap")
    run = TrainingRun.objects.create(
        kind=TrainingRun.Kind.values[0],
        base_model="tiny",
        dataset_snapshot=snapshot,
        created_by=researcher,
    )
    batch = ImportBatch.objects.create(
        project=project,
        file_name="pairs.jsonl",
        sha256="ab" * 32,
        format="trl_preference",
        status=ImportBatch.Status.SUCCEEDED,
        created_by=researcher,
    )
    return World(data, assignment, snapshot, run, batch, users)


def _request(row: Row, w: World, user, *, token: bool = False) -> int:
    """Request the row's URL as `user`: logged in (a session), or with its API token."""
    client = APIClient()
    if user is not None and token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user).key}")
    elif user is not None:
        client.force_login(user)
    url = reverse(row.name, kwargs=row.kwargs(w))
    body = row.body(w) if row.body else None
    fmt = row.fmt or ("json" if row.name.startswith("api-") else "multipart")
    return getattr(client, row.method)(url, body, format=fmt).status_code


@pytest.mark.parametrize(
    "row", MATRIX, ids=[f"{row.method.upper()} {row.name}" for row in MATRIX]
)
def test_permission_matrix(row, world):
    actual = []
    for role in ROLES:
        with transaction.atomic():
            actual.append(_request(row, world, world.users[role]))
            transaction.set_rollback(True)
    mismatches = {
        role: f"got {got}, want {want}"
        for role, got, want in zip(ROLES, actual, row.expect, strict=True)
        if got != want
    }
    assert not mismatches, f"{row.method.upper()} {row.name}: {mismatches}"


API_ROWS = [row for row in MATRIX if row.name.startswith("api-")]


@pytest.mark.parametrize(
    "row", API_ROWS, ids=[f"{row.method.upper()} {row.name}" for row in API_ROWS]
)
def test_permission_matrix_with_token_authentication(row, world):
    """Every API row gives each role the same status with a token as with a session."""
    actual = []
    for role in ROLES:
        with transaction.atomic():
            actual.append(_request(row, world, world.users[role], token=True))
            transaction.set_rollback(True)
    assert dict(zip(ROLES, actual, strict=True)) == dict(
        zip(ROLES, row.expect, strict=True)
    )


ADMIN_URLS = (
    "admin:index",
    "admin:annotation_judgment_changelist",
    "admin:annotation_project_changelist",
    "admin:exports_datasetsnapshot_changelist",
    "admin:training_trainingrun_changelist",
)


@pytest.mark.parametrize("name", ADMIN_URLS)
def test_the_django_admin_is_for_superusers_only(name, world):
    """Project roles give no admin access: the admin sees every project's data."""
    url = reverse(name)
    for role in ROLES:
        client = APIClient()
        if world.users[role] is not None:
            client.force_login(world.users[role])
        response = client.get(url)
        if role == "superuser":
            assert response.status_code == 200, role
        else:
            assert response.status_code == 302, role
            assert response["Location"].startswith(reverse("admin:login")), role
