"""Annotation is blind: nothing an annotator can fetch names a model or others' votes.

One test walks a whole annotator session through the pages, the fragments the task
page loads, the annotator API and their error answers, and scans every body (and
every header) for every secret in the database: each `Response.model_name`, each
generation parameter value, each response, comparison and prompt id (made large
and unique by `ui_data`), response external ids and content hashes, and the other
annotators' names, rationales and judgment ids.
"""

import json
import re

import pytest
from django.http import HttpResponse
from django.urls import reverse

from annotation.models import Assignment, Comparison, Judgment, Prompt, Response, Role
from annotation.services.judgments import judgment_submit
from annotation.services.projects import project_create
from annotation.services.queue import next_assignment
from tests.annotation.ui_data import make_task_data

FRAGMENT = {"HTTP_X_REQUESTED_WITH": "fetch"}
OTHER_RATIONALE = "other-annotator-secret-reason-{i}"


def _param_values(value):
    if isinstance(value, dict):
        for inner in value.values():
            yield from _param_values(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _param_values(inner)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


class Scanner:
    """Collect every secret from the database, then scan bodies for them."""

    def __init__(self, annotator):
        self.words: set[str] = set()
        self.numbers: set[int] = set()
        for name, params, ext, digest in Response.objects.values_list(
            "model_name", "generation_params", "external_id", "content_hash"
        ):
            self.words.update(w for w in (name, ext, digest) if w)
            self.words.update(_param_values(params))
            self.words.add(json.dumps(params))
        self.numbers.update(Response.objects.values_list("pk", flat=True))
        self.numbers.update(Comparison.objects.values_list("pk", flat=True))
        self.numbers.update(Prompt.objects.values_list("pk", flat=True))
        others = Judgment.objects.exclude(annotator=annotator)
        for username, rationale, public_id in others.values_list(
            "annotator__username", "rationale", "public_id"
        ):
            self.words.update(w for w in (username, rationale, str(public_id)) if w)
        self.leaks: list[str] = []
        self.scanned = 0

    def find(self, text: str) -> list[str]:
        found = [w for w in self.words if w in text]
        found += [str(n) for n in self.numbers if re.search(rf"(?<!\d){n}(?!\d)", text)]
        return found

    def check(self, label: str, response: HttpResponse) -> HttpResponse:
        body = (
            b"".join(response.streaming_content)
            if response.streaming
            else response.content
        ).decode(errors="replace")
        headers = "\n".join(f"{k}: {v}" for k, v in response.items())
        self.scanned += 1
        for secret in self.find(body + "\n" + headers):
            self.leaks.append(f"{label} (HTTP {response.status_code}) leaks {secret!r}")
        return response


@pytest.fixture
def session(make_user, api_client_for):
    """A project with gold tasks; another annotator has already voted on tasks."""
    project = project_create(
        slug="blind",
        name="Blind",
        guidelines="Judge **helpfulness**. See [the rules](https://example.org/rules).",
        aspects=["accuracy"],
        target_judgments=2,
        gold_rate=0.3,
    )
    annotator = make_user("blind-ann", project=project, role=Role.ANNOTATOR)
    other = make_user("other-voter-zx", project=project, role=Role.ANNOTATOR)
    make_user("blind-res", project=project, role=Role.RESEARCHER)
    make_task_data(project, 6, gold=2, payload_first=True)
    for i in range(4):
        assignment = next_assignment(annotator=other, project=project)
        judgment_submit(
            assignment=assignment,
            annotator=other,
            choice="left",
            rationale=OTHER_RATIONALE.format(i=i),
        )
    return project, annotator, other


def test_scanner_catches_each_kind_of_secret(session):
    project, annotator, _ = session
    scanner = Scanner(annotator)
    response = Response.objects.first()
    comparison = Comparison.objects.first()
    planted = [
        response.model_name,
        str(response.generation_params["temperature"]),
        f"id={comparison.pk}",
        OTHER_RATIONALE.format(i=0),
        "other-voter-zx",
    ]
    for text in planted:
        scanner.check("planted", HttpResponse(f"<p>{text}</p>"))
    assert len(scanner.leaks) == len(planted)
    scanner.check("clean", HttpResponse("<p>assignment 12 of 730000000</p>"))
    assert len(scanner.leaks) == len(planted)


def test_whole_annotator_session_leaks_nothing(client, session, api_client_for):
    project, annotator, other = session
    scan = Scanner(annotator)
    slug = project.slug
    client.force_login(annotator)

    scan.check("project list", client.get(reverse("project-list")))
    page = scan.check("task page", client.get(reverse("annotate", args=[slug])))
    assert "Guidelines" in page.content.decode()
    assert "Keyboard shortcuts" in page.content.decode()
    scan.check(
        "next fragment", client.post(reverse("task-next", args=[slug]), **FRAGMENT)
    )

    def current():
        return Assignment.objects.get(annotator=annotator, status="leased")

    first = current()
    judge = reverse("task-judge", args=[slug, first.pk])
    scan.check("judge 400", client.post(judge, {"choice": "up"}, **FRAGMENT))
    scan.check(
        "judge 400 aspect",
        client.post(judge, {"choice": "left", "strength": "x"}, **FRAGMENT),
    )
    scan.check(
        "judge 200",
        client.post(
            judge, {"choice": "left", "aspect:helpfulness": "right"}, **FRAGMENT
        ),
    )
    scan.check(
        "judge retry",
        client.post(
            judge, {"choice": "left", "aspect:helpfulness": "right"}, **FRAGMENT
        ),
    )
    scan.check("judge 409", client.post(judge, {"choice": "tie"}, **FRAGMENT))
    scan.check(
        "skip judged 409",
        client.post(reverse("task-skip", args=[slug, first.pk]), **FRAGMENT),
    )
    scan.check("judge no-js 302", client.post(judge, {"choice": "left"}))
    skipped = current()
    scan.check(
        "skip 200",
        client.post(reverse("task-skip", args=[slug, skipped.pk]), **FRAGMENT),
    )
    scan.check(
        "judge skipped 409",
        client.post(
            reverse("task-judge", args=[slug, skipped.pk]),
            {"choice": "left"},
            **FRAGMENT,
        ),
    )
    theirs = next_assignment(annotator=other, project=project)
    if theirs is not None:
        for name in ("task-judge", "task-skip"):
            scan.check(
                f"{name} someone else's 404",
                client.post(reverse(name, args=[slug, theirs.pk]), **FRAGMENT),
            )
    scan.check(
        "judge unknown 404",
        client.post(reverse("task-judge", args=[slug, 999_999]), **FRAGMENT),
    )
    for name in ("dashboard", "dashboard-stats", "judgment-list", "judgment-csv"):
        scan.check(f"{name} 403", client.get(reverse(name, args=[slug])))
    some = Comparison.objects.first().pk
    scan.check(
        "comparison page 403",
        client.get(reverse("comparison-detail", args=[slug, some])),
    )

    # Work through the rest of the queue with the page's fragments.
    for _ in range(20):
        held = Assignment.objects.filter(annotator=annotator, status="leased").first()
        if held is None:
            break
        scan.check(
            "judge loop",
            client.post(
                reverse("task-judge", args=[slug, held.pk]),
                {"choice": "right", "strength": "3", "rationale": "mine"},
                **FRAGMENT,
            ),
        )
    done = scan.check("done", client.get(reverse("annotate", args=[slug])))
    assert "Nothing left for you right now" in done.content.decode()
    scan.check("project list again", client.get(reverse("project-list")))

    # The annotator API with a token.
    api = api_client_for(annotator)
    scan.check("api next-task 204", api.post(f"/api/v1/projects/{slug}/next-task/"))
    scan.check("api next-task 404", api.post("/api/v1/projects/nope/next-task/"))
    mine = Assignment.objects.filter(annotator=annotator, status="submitted").first()
    url = f"/api/v1/assignments/{mine.pk}/judgment/"
    scan.check(
        "api judgment retry",
        api.post(
            url, {"choice": "right", "strength": 3, "rationale": "mine"}, format="json"
        ),
    )
    scan.check("api judgment 409", api.post(url, {"choice": "tie"}, format="json"))
    scan.check("api judgment 400", api.post(url, {"choice": "up"}, format="json"))
    scan.check("api skip 409", api.post(f"/api/v1/assignments/{mine.pk}/skip/"))
    scan.check("api skip 404", api.post("/api/v1/assignments/999999/skip/"))
    scan.check("api projects", api.get("/api/v1/projects/"))
    scan.check("api project", api.get(f"/api/v1/projects/{slug}/"))
    for kind in ("comparisons", "responses", "prompts"):
        scan.check(f"api {kind} 403", api.get(f"/api/v1/projects/{slug}/{kind}/"))

    assert scan.scanned >= 30
    assert Judgment.objects.filter(annotator=annotator).count() >= 5
    assert scan.leaks == [], "\n".join(scan.leaks)


def test_fresh_api_session_leaks_nothing(session, make_user, api_client_for):
    project, _, _ = session
    newcomer = make_user("blind-new", project=project, role=Role.ANNOTATOR)
    scan = Scanner(newcomer)
    api = api_client_for(newcomer)
    slug = project.slug
    seen = 0
    while True:
        task = scan.check(
            "api next-task", api.post(f"/api/v1/projects/{slug}/next-task/")
        )
        if task.status_code == 204:
            break
        assert task.status_code == 200
        assignment = task.json()["assignment"]
        seen += 1
        if seen % 3 == 0:
            scan.check("api skip", api.post(f"/api/v1/assignments/{assignment}/skip/"))
            continue
        body = {"choice": "left", "aspects": {"accuracy": "tie"}, "rationale": "r"}
        url = f"/api/v1/assignments/{assignment}/judgment/"
        created = scan.check("api judgment 201", api.post(url, body, format="json"))
        assert created.status_code == 201
        scan.check("api judgment 200", api.post(url, body, format="json"))
    assert seen >= 4
    assert scan.leaks == [], "\n".join(scan.leaks)


def test_own_judgments_api_leaks_nothing(session, api_client_for):
    """An annotator's list of their own judgments names no comparison or model."""
    project, annotator, _ = session
    api = api_client_for(annotator)
    while True:
        task = api.post(f"/api/v1/projects/{project.slug}/next-task/")
        if task.status_code == 204:
            break
        assignment = task.json()["assignment"]
        api.post(
            f"/api/v1/assignments/{assignment}/judgment/",
            {"choice": "right"},
            format="json",
        )
    scan = Scanner(annotator)
    listing = scan.check(
        "api own judgments", api.get(f"/api/v1/projects/{project.slug}/judgments/")
    )
    assert listing.status_code == 200
    assert listing.json()["count"] >= 4
    assert scan.leaks == [], "\n".join(scan.leaks)
