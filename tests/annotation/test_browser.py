"""The task page in a real browser: Debian's chromium driven by Playwright.

An annotator logs in and judges three comparisons with the keyboard only; the
database must hold the right canonical choices for the sides they were shown. A
response carrying `<script>` and `onerror` payloads must show as text and never run.
Set PREFLINE_SCREENSHOT_DIR to keep screenshots of the task page (desktop and 375 px).
"""

import os
from pathlib import Path

import pytest

from annotation.models import Assignment, Choice, Judgment, Role
from annotation.services.projects import membership_set, project_create, user_create
from tests.annotation.ui_data import make_task_data
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
EXPECTED = {  # key pressed -> canonical choice, given left_is_first
    ("1", True): Choice.FIRST,
    ("1", False): Choice.SECOND,
    ("2", True): Choice.SECOND,
    ("2", False): Choice.FIRST,
    ("3", True): Choice.TIE,
    ("3", False): Choice.TIE,
}


@pytest.fixture
def browser_page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    return page, errors


@pytest.fixture
def setup(transactional_db):
    project = project_create(
        slug="browser",
        name="Browser project",
        guidelines="Prefer **correct** answers.",
        aspects=["clarity"],
        target_judgments=1,
    )
    user = user_create(username="kb-annotator", password=PASSWORD)
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    make_task_data(project, 5, payload_first=True)
    return project, user


def screenshot_dir(tmp_path) -> Path:
    return Path(os.environ.get("PREFLINE_SCREENSHOT_DIR") or tmp_path)


def held(user) -> Assignment:
    return Assignment.objects.get(annotator=user, status=Assignment.Status.LEASED)


def test_keyboard_only_judging_and_payload_never_runs(
    live_server, setup, browser_page, tmp_path
):
    project, user = setup
    page, errors = browser_page

    page.goto(
        f"{live_server.url}/accounts/login/?next=/projects/{project.slug}/annotate/"
    )
    # Chromium applies autofocus on a rendering update that can come after the
    # load event; keys typed before it are lost, so wait for the focus first.
    page.wait_for_function("document.activeElement?.id === 'id_username'")
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    assert page.input_value("#id_username") == user.username
    assert page.input_value("#id_password") == PASSWORD
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/projects/{project.slug}/annotate/")
    page.evaluate("window.__sameDocument = true")

    # The first task is the payload: shown as text, never executed.
    body_text = page.inner_text("#task")
    assert "<script>window.__pwned = 1;" in body_text
    assert '<img src=x onerror="window.__pwned = 2;' in body_text
    assert page.locator("#task pre code").count() >= 1  # the code block survived
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.title() != "PWNED"
    assert page.locator("#task img, #task script").count() == 0

    shots = screenshot_dir(tmp_path)
    page.screenshot(path=str(shots / "task-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    left = page.locator(".response").nth(0).bounding_box()
    right = page.locator(".response").nth(1).bounding_box()
    assert right["y"] >= left["y"] + left["height"]  # stacked on a narrow screen
    page.screenshot(path=str(shots / "task-375.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    left = page.locator(".response").nth(0).bounding_box()
    right = page.locator(".response").nth(1).bounding_box()
    assert right["x"] > left["x"] + left["width"] - 1  # side by side on a desktop

    # Guidelines toggle with "g"; help opens with "?" and closes with Escape.
    assert not page.locator("#guidelines").is_visible()
    assert page.locator("#guidelines-toggle").is_visible()
    page.keyboard.press("g")
    assert page.locator("#guidelines strong").inner_text() == "correct"
    assert page.get_attribute("#guidelines-toggle", "aria-expanded") == "true"
    page.keyboard.press("g")
    assert not page.locator("#guidelines").is_visible()
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()

    made = []
    for key in ("1", "2", "3"):
        assignment = held(user)
        made.append((assignment.pk, key, assignment.left_is_first))
        action = f"/annotate/{assignment.pk}/judge/"
        assert action in page.get_attribute("#judge-form", "action")
        page.wait_for_selector("#task[data-ready]")  # keys count once it settled
        page.keyboard.press(key)
        page.wait_for_function(
            "a => !document.querySelector('#judge-form')"
            " || !document.querySelector('#judge-form').action.includes(a)",
            arg=action,
        )
    page.wait_for_selector("[data-counter=session]:text('3')")
    # Focus moved to the new task's heading for screen readers and the keyboard.
    assert page.evaluate("document.activeElement.id") == "task-heading"

    # "s" skips without a reload, too.
    skipped = held(user)
    page.wait_for_selector("#task[data-ready]")
    page.keyboard.press("s")
    page.wait_for_function(
        "a => !document.querySelector('#judge-form')"
        " || !document.querySelector('#judge-form').action.includes(a)",
        arg=f"/annotate/{skipped.pk}/",
    )
    skipped.refresh_from_db()
    assert skipped.status == Assignment.Status.SKIPPED

    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert errors == []
    for pk, key, left_is_first in made:
        judgment = Judgment.objects.get(assignment_id=pk)
        assert judgment.choice == EXPECTED[(key, left_is_first)], (key, left_is_first)
        assert judgment.left_is_first is left_is_first
        assert judgment.annotator == user
    assert Judgment.objects.filter(annotator=user).count() == 3


def test_a_held_key_answers_one_task_not_the_ones_after_it(
    live_server, setup, browser_page
):
    """An OS repeats a held key (keydown with `repeat`); the next tasks arrive
    within tens of milliseconds, and must not be answered unseen."""
    project, user = setup
    page, errors = browser_page
    _login(page, live_server.url, user.username, f"/projects/{project.slug}/annotate/")
    first = held(user)
    page.wait_for_selector("#task[data-ready]")
    page.keyboard.down("1")
    for _ in range(12):  # Playwright marks every keydown after the first a repeat
        page.keyboard.down("1")
        page.wait_for_timeout(50)
    page.keyboard.up("1")
    page.wait_for_selector("[data-counter=session]:text('1')")
    page.wait_for_timeout(400)  # past the settle time: a late repeat would count
    assert Judgment.objects.filter(annotator=user).count() == 1
    assert Judgment.objects.get(annotator=user).assignment_id == first.pk
    # A key pressed as the next task arrives waits for it to settle, then works.
    page.wait_for_selector("#task[data-ready]")
    page.keyboard.press("2")
    page.wait_for_selector("[data-counter=session]:text('2')")
    assert errors == []


def test_without_javascript_the_guidelines_are_open_and_the_js_buttons_hidden(
    live_server, setup, chromium
):
    """The page works without JavaScript (plain form posts), so what only the script
    can do (fold the guidelines, open the shortcuts dialog) must not be offered."""
    project, user = setup
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(
            f"{live_server.url}/accounts/login/?next=/projects/{project.slug}/annotate/"
        )
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.locator("form [type=submit]").click()
        page.wait_for_url(f"{live_server.url}/projects/{project.slug}/annotate/")
        assert page.locator("#guidelines").is_visible()
        assert page.locator("#guidelines strong").inner_text() == "correct"
        assert not page.locator("#guidelines-toggle").is_visible()
        assert not page.locator("#help-open").is_visible()
    finally:
        context.close()


def test_dashboard_updates_live_without_reload(
    live_server, setup, browser_page, monkeypatch, tmp_path
):
    import annotation.views.dashboard as dashboard_views
    from annotation.services.judgments import judgment_submit
    from annotation.services.queue import next_assignment

    monkeypatch.setattr(dashboard_views, "REFRESH_SECONDS", 1)
    project, annotator = setup
    researcher = user_create(username="kb-researcher", password=PASSWORD)
    membership_set(project=project, user=researcher, role=Role.RESEARCHER)
    page, errors = browser_page
    page.goto(
        f"{live_server.url}/accounts/login/?next=/projects/{project.slug}/dashboard/"
    )
    page.fill("#id_username", researcher.username)
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.wait_for_url(f"{live_server.url}/projects/{project.slug}/dashboard/")
    page.evaluate("window.__sameDocument = true")
    assert page.inner_text("[data-stat=complete]") == "0 / 5"

    assignment = next_assignment(annotator=annotator, project=project)
    judgment_submit(assignment=assignment, annotator=annotator, choice="left")
    page.wait_for_selector("[data-stat=complete]:text('1 / 5')", timeout=10_000)
    assert annotator.username in page.inner_text("#dashboard-stats")
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(
        path=str(screenshot_dir(tmp_path) / "dashboard.png"), full_page=True
    )
    assert errors == []


def _login(page, base_url: str, username: str, next_path: str) -> None:
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.wait_for_url(f"{base_url}{next_path}")


def test_two_browsers_and_an_api_script_share_a_project_live(
    live_server, transactional_db, browser_page, monkeypatch
):
    """The issue's "done when": nothing duplicated, lost or leaked; dashboard live."""
    import threading

    import requests
    from django.db import connection
    from rest_framework.authtoken.models import Token

    import annotation.views.dashboard as dashboard_views
    from annotation.models import Comparison

    if connection.vendor == "sqlite":
        pytest.skip(
            "the in-memory SQLite test database is one connection shared by all "
            "live-server threads; concurrent requests need PostgreSQL"
        )
    monkeypatch.setattr(dashboard_views, "REFRESH_SECONDS", 1)
    project = project_create(slug="shared", name="Shared", target_judgments=2)
    users = {}
    for name, role in (
        ("web-a", Role.ANNOTATOR),
        ("web-b", Role.ANNOTATOR),
        ("bot", Role.ANNOTATOR),
        ("watcher", Role.RESEARCHER),
    ):
        users[name] = user_create(username=name, password=PASSWORD)
        membership_set(project=project, user=users[name], role=role)
    make_task_data(project, 12)
    token = Token.objects.create(user=users["bot"]).key
    page, errors = browser_page
    context = page.context
    base = live_server.url

    statuses: list[int] = []

    def bot() -> None:
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"
        while True:
            task = api.post(f"{base}/api/v1/projects/shared/next-task/", timeout=30)
            statuses.append(task.status_code)
            if task.status_code != 200:
                return
            answer = api.post(
                f"{base}/api/v1/assignments/{task.json()['assignment']}/judgment/",
                json={"choice": "tie"},
                timeout=30,
            )
            statuses.append(answer.status_code)

    watcher = context.browser.new_context().new_page()
    _login(watcher, base, "watcher", "/projects/shared/dashboard/")
    pages = []
    for name in ("web-a", "web-b"):
        annotator_page = context.browser.new_context().new_page()
        annotator_page.on("pageerror", lambda error: errors.append(str(error)))
        _login(annotator_page, base, name, "/projects/shared/annotate/")
        pages.append(annotator_page)
    thread = threading.Thread(target=bot)
    thread.start()
    done = [False, False]
    for step in range(40):
        i = step % 2
        if done[i]:
            continue
        current = pages[i]
        form = current.query_selector("#judge-form")
        if form is None:
            done[i] = True
            continue
        action = form.get_attribute("action")
        current.wait_for_selector("#task[data-ready]")
        current.keyboard.press("12"[i])
        current.wait_for_function(
            "a => !document.querySelector('#judge-form')"
            " || document.querySelector('#judge-form').getAttribute('action') !== a",
            arg=action,
        )
        if all(done):
            break
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert statuses and all(code < 500 for code in statuses), statuses
    assert statuses[-1] == 204
    watcher.wait_for_selector("[data-stat=complete]:text('12 / 12')", timeout=15_000)
    for comparison in Comparison.objects.filter(project=project):
        judgments = list(comparison.judgments.values_list("annotator_id", flat=True))
        assert comparison.judgment_count == len(judgments) == 2
        assert len(set(judgments)) == 2
    per_user = {
        name: Judgment.objects.filter(annotator=user).count()
        for name, user in users.items()
    }
    assert sum(per_user.values()) == 24
    assert per_user["web-a"] > 0 and per_user["web-b"] > 0 and per_user["bot"] > 0
    assert errors == []
