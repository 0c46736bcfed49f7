"""Shared fixtures: roles, a project with members, API clients, chromium."""

import os
import shutil

import pytest
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Role
from annotation.services.projects import membership_set, project_create, user_create

PASSWORD = "correct-horse-battery-staple"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


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


@pytest.fixture
def chromium(monkeypatch):
    """Debian's chromium, headless, driven by Playwright's sync API.

    The sync API keeps an asyncio loop running in this thread, so the test's ORM
    calls inside it get their own database connections (Django keeps them in
    context-local storage while a loop runs) and need DJANGO_ALLOW_ASYNC_UNSAFE.
    They are closed here, inside that context: left open, PostgreSQL refuses to
    drop the test database at the end of the session.
    """
    from django.db import connections

    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(
            "Debian's chromium is not on PATH (apt-get install chromium); "
            "Playwright's own browser download is not available here"
        )
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
            connections.close_all()


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
