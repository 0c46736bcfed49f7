"""Shared fixtures: users per role, a project with memberships, API clients."""

import os
import shutil

import pytest
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Role
from annotation.services.projects import membership_set, project_create, user_create

PASSWORD = "correct-horse-battery-staple"


def pytest_collection_modifyitems(config, items):
    """On CI a missing chromium is a broken install, not a reason to skip UI tests."""
    wants_browser = any(item.get_closest_marker("browser") for item in items)
    if (
        os.environ.get("CI") == "true"
        and wants_browser
        and not shutil.which("chromium")
    ):
        raise pytest.UsageError(
            "CI=true but Debian's chromium is not on PATH: .ci/run installs it "
            "(apt-get install chromium); the browser tests must not be skipped on CI"
        )


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """PBKDF2 costs ~0.3 s per user created or logged in; tests need no such cost.

    Session-wide, so users made by module-scoped fixtures (the demo) log in too.
    """
    with override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
    ):
        yield


@pytest.fixture
def project(db):
    return project_create(
        slug="demo",
        name="Demo project",
        guidelines="Pick the **more helpful** answer.",
        aspects=["helpfulness", "harmlessness"],
        target_judgments=2,
    )


@pytest.fixture
def make_user(db):
    def _make(username: str, *, project=None, role: str | None = None):
        user = user_create(username=username, password=PASSWORD)
        if project is not None and role is not None:
            membership_set(project=project, user=user, role=role)
        return user

    return _make


@pytest.fixture
def annotator(project, make_user):
    return make_user("ann", project=project, role=Role.ANNOTATOR)


@pytest.fixture
def researcher(project, make_user):
    return make_user("res", project=project, role=Role.RESEARCHER)


@pytest.fixture
def project_admin(project, make_user):
    return make_user("padmin", project=project, role=Role.ADMIN)


@pytest.fixture
def outsider(make_user):
    return make_user("outsider")


@pytest.fixture
def api_client_for():
    """Return an APIClient authenticated with the user's token (or anonymous)."""

    def _client(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return _client
