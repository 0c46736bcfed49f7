"""`manage.py load_demo`: the demo loads, is idempotent, and its pages render.

The demo is loaded once per module (it drives ~600 real queue calls for the simulated
annotators) and deleted afterwards; every test runs in its own rolled-back
transaction on top of it. Expected counts are computed from the demo files here, not
taken from the loader.
"""

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import URLPattern, reverse

from annotation.demo import loader
from annotation.demo.loader import (
    ALREADY_LOADED,
    DATA_DIR,
    DEMO_PASSWORD,
    DEMO_SLUG,
    DEMO_USERS,
    NO_TRAINING_EXTRA,
    demo_project,
    demo_project_delete,
    tiny_model_ensure,
)
from annotation.demo.simulation import (
    SIMULATED_ANNOTATORS,
    SimulatedAnnotator,
    simulated_answer,
)
from annotation.models import Assignment, Comparison, Judgment, Project, Prompt
from annotation.models import Response as ModelResponse
from annotation.services.queue import assignment_skip, next_assignment

REPO = Path(__file__).resolve().parents[2]
SIM_USERNAMES = [spec.username for spec in SIMULATED_ANNOTATORS]
DEMO_USERNAMES = [spec.username for spec in DEMO_USERS]
XSS_PAYLOAD = "<img src=x onerror=alert(1)>"
# Share of regular comparisons the simulated annotators should touch ("about half").
SIMULATED_SHARE_RANGE = (0.40, 0.60)
# The careful simulated annotators must follow the model ranking most of the time.
MIN_RANKING_AGREEMENT = 0.75
ANNOTATOR_PAGES = {"project-list", "annotate"}
RESEARCHER_PAGES = {
    "dashboard",
    "dashboard-stats",
    "judgment-list",
    "judgment-csv",
    "comparison-detail",
}
PAGE_URLCONFS = ("annotation.urls", "exports.urls", "training.urls")


def _rows(name: str) -> list[dict]:
    lines = (DATA_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _run(*args: str) -> str:
    out = StringIO()
    call_command("load_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def demo_output(django_db_setup, django_db_blocker):
    """Load the demo once for the module (committed), and remove it afterwards."""
    with django_db_blocker.unblock():
        output = _run("--no-tiny-model")
        yield output
        demo_project_delete()
        get_user_model().objects.filter(
            username__in=DEMO_USERNAMES + SIM_USERNAMES
        ).delete()


@pytest.fixture
def demo(db, demo_output) -> Project:
    return Project.objects.get(slug=DEMO_SLUG)


def _fingerprint(project: Project) -> dict:
    User = get_user_model()
    return {
        "project": (project.pk, project.updated_at),
        "prompts": sorted(Prompt.objects.values_list("pk", "content_hash")),
        "responses": ModelResponse.objects.count(),
        "comparisons": sorted(
            Comparison.objects.values_list("pk", "judgment_count", "gold_choice")
        ),
        "judgments": sorted(Judgment.objects.values_list("pk", "choice")),
        "assignments": Assignment.objects.count(),
        "users": sorted(User.objects.values_list("username", "password")),
        "batches": project.import_batches.count(),
    }


def test_simulated_rule_follows_the_ranking_without_noise():
    careful = SimulatedAnnotator(
        "s", noise=0.0, left_bias=0.5, coverage=1, mean_seconds=1
    )
    rng = random.Random(0)
    for better in ("first", "second"):
        for left_is_first in (True, False):
            answer = simulated_answer(
                rng,
                annotator=careful,
                better=better,
                gap=3,
                both_weak=False,
                left_is_first=left_is_first,
            )
            assert (answer.choice, answer.strength) == (better, 3)


def test_simulated_noise_leans_to_the_left_side_by_its_bias():
    guesser = SimulatedAnnotator(
        "g", noise=1.0, left_bias=1.0, coverage=1, mean_seconds=1
    )
    rng = random.Random(0)
    for left_is_first, left in ((True, "first"), (False, "second")):
        answers = {
            simulated_answer(
                rng,
                annotator=guesser,
                better="second" if left == "first" else "first",
                gap=3,
                both_weak=False,
                left_is_first=left_is_first,
            ).choice
            for _ in range(200)
        }
        assert answers == {left, "tie"}


def test_load_demo_creates_the_counts_of_the_demo_files(demo):
    candidates = _rows("candidates.jsonl")
    preferences = _rows("preferences.jsonl")
    heldout = _rows("heldout.jsonl")
    prompts = Prompt.objects.filter(project=demo)
    comparisons = Comparison.objects.filter(project=demo)

    assert 45 <= len(candidates) <= 55
    assert prompts.filter(split="train").count() == len(candidates) + len(preferences)
    assert prompts.filter(split="heldout").count() == len(heldout)
    assert ModelResponse.objects.filter(prompt__project=demo).count() == sum(
        len(row["responses"]) for row in candidates
    ) + 2 * len(preferences)
    pairs = sum(
        len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in candidates
    )
    assert comparisons.count() == pairs + len(preferences)
    assert comparisons.filter(gold_choice__isnull=False).count() == 5
    priors = Judgment.objects.filter(comparison__project=demo, origin="prior")
    assert priors.count() == len(preferences)
    assert (demo.name, demo.aspects) == (
        "Prefline demo",
        ["helpfulness", "harmlessness"],
    )
    assert (demo.target_judgments, demo.gold_rate) == (3, 0.1)
    assert "Harmlessness first" in demo.guidelines


def test_demo_data_is_varied_and_holds_one_xss_response(demo):
    candidates = _rows("candidates.jsonl")
    multi_turn = [r for r in candidates if "messages" in r]
    assert 8 <= len(multi_turn) <= 12
    assert any(m["role"] == "system" for r in multi_turn for m in r["messages"])
    assert all(2 <= len(r["responses"]) <= 4 for r in candidates)
    topics = {r["metadata"]["topic"] for r in candidates}
    assert {"coding", "maths", "advice", "writing", "refusal"} <= topics
    texts = [resp["text"] for r in candidates for resp in r["responses"]]
    assert sum(XSS_PAYLOAD in text for text in texts) == 1
    assert sum("```" in text for text in texts) >= 10


def test_gold_answers_name_the_best_model(demo):
    gold = Comparison.objects.filter(project=demo, gold_choice__isnull=False)
    for comparison in gold.select_related("response_a", "response_b"):
        best = (
            comparison.response_a
            if comparison.gold_choice == "first"
            else comparison.response_b
        )
        assert best.model_name == "atlas-7b-dpo"
    assert len({c.prompt_id for c in gold}) == gold.count()


def test_demo_users_have_their_roles_and_log_in(demo, client):
    User = get_user_model()
    assert User.objects.get(username="admin").is_superuser
    roles = dict(demo.memberships.values_list("user__username", "role"))
    assert roles["researcher"] == "researcher"
    assert roles["annotator"] == roles["annotator2"] == "annotator"
    for username in DEMO_USERNAMES:
        assert client.login(username=username, password=DEMO_PASSWORD), username
    for username in SIM_USERNAMES:
        assert roles[username] == "annotator"
        assert not User.objects.get(username=username).has_usable_password()


def test_load_demo_prints_logins_url_and_the_simulated_annotators(demo_output):
    assert "http://127.0.0.1:8000/" in demo_output
    assert DEMO_PASSWORD in demo_output
    for username in DEMO_USERNAMES:
        assert re.search(rf"^\s+{re.escape(username)}\s", demo_output, re.M)
    assert "SIMULATED annotators sim-annotator-1..3" in demo_output


def test_simulated_annotators_judge_about_half_following_the_ranking(demo):
    ranking = json.loads((DATA_DIR / "models.json").read_text())["ranking"]
    rank = {name: i for i, name in enumerate(ranking)}
    regular = Comparison.objects.filter(project=demo, gold_choice__isnull=True)
    touched = regular.filter(judgment_count__gt=0).count()
    low, high = SIMULATED_SHARE_RANGE
    assert low * regular.count() <= touched <= high * regular.count()
    assert not regular.filter(judgment_count__gt=demo.target_judgments).exists()

    human = Judgment.objects.filter(comparison__project=demo, origin="human")
    assert set(human.values_list("annotator__username", flat=True)) == set(
        SIM_USERNAMES
    )
    agree = decided = 0
    for judgment in human.filter(annotator__username="sim-annotator-1").select_related(
        "comparison__response_a", "comparison__response_b"
    ):
        a = rank.get(judgment.comparison.response_a.model_name)
        b = rank.get(judgment.comparison.response_b.model_name)
        if a is None or b is None or judgment.choice not in ("first", "second"):
            continue
        decided += 1
        agree += judgment.choice == ("first" if a < b else "second")
    assert decided >= 40
    assert agree / decided >= MIN_RANKING_AGREEMENT
    assert human.filter(choice="tie").exists()
    # Their clocks ran over the past days, before the load.
    assert human.earliest("submitted_at").submitted_at < demo.created_at


def test_human_demo_annotators_still_have_a_full_queue(demo):
    User = get_user_model()
    untouched = Comparison.objects.filter(
        project=demo, gold_choice__isnull=True, judgment_count=0
    )
    assert untouched.count() >= 0.4 * Comparison.objects.filter(project=demo).count()
    for username in ("annotator", "annotator2"):
        user = User.objects.get(username=username)
        assert not Assignment.objects.filter(annotator=user).exists()
        assert next_assignment(annotator=user, project=demo) is not None


def test_load_demo_again_changes_nothing_and_says_so(demo):
    before = _fingerprint(demo)
    output = _run("--no-tiny-model")
    assert ALREADY_LOADED.format(slug=DEMO_SLUG) in output
    assert _fingerprint(Project.objects.get(slug=DEMO_SLUG)) == before


def test_reset_reloads_the_project_and_keeps_the_accounts(demo):
    users_before = sorted(
        get_user_model().objects.values_list("pk", "username", "password")
    )
    output = _run("--reset", "--no-simulated-judgments", "--no-tiny-model")
    reloaded = demo_project()
    assert "Deleted demo project" in output
    assert reloaded.pk != demo.pk
    assert Comparison.objects.filter(project=reloaded).count() == (
        Comparison.objects.filter(project=reloaded).filter(judgment_count=0).count()
    )
    assert not Judgment.objects.filter(origin="human").exists()
    assert Comparison.objects.filter(project=reloaded).count() > 150
    assert (
        sorted(get_user_model().objects.values_list("pk", "username", "password"))
        == users_before
    )


def test_a_rejected_demo_file_keeps_the_old_demo(demo, tmp_path, monkeypatch):
    broken = tmp_path / "data"
    shutil.copytree(DATA_DIR, broken)
    lines = (broken / "candidates.jsonl").read_text().splitlines()
    lines[2] = '{"prompt": "no responses here", "responses": []}'
    (broken / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(loader, "DATA_DIR", broken)
    before = _fingerprint(demo)

    with pytest.raises(CommandError) as excinfo:
        _run("--reset", "--no-tiny-model")

    message = str(excinfo.value)
    assert "candidates.jsonl" in message and "line 3" in message
    assert "responses" in message
    assert _fingerprint(Project.objects.get(slug=DEMO_SLUG)) == before


def _page_routes() -> list[tuple[str, str, dict]]:
    """(urlconf, route name, URL kwarg names) of every named page route."""
    import importlib

    routes = []
    for urlconf in PAGE_URLCONFS:
        for pattern in importlib.import_module(urlconf).urlpatterns:
            if isinstance(pattern, URLPattern) and pattern.name:
                names = sorted(pattern.pattern.converters)
                routes.append((urlconf, pattern.name, names))
    return routes


def _page_url(name: str, kwarg_names: list[str], *, user, project) -> str | None:
    values = {"slug": project.slug}
    comparison = Comparison.objects.filter(project=project, judgment_count__gt=0)
    values["comparison_id"] = comparison.order_by("pk").first().pk
    own = Assignment.objects.filter(annotator=user).first()
    any_assignment = own or Assignment.objects.order_by("pk").first()
    values["assignment_id"] = any_assignment.pk
    if any(k not in values for k in kwarg_names):
        return None  # e.g. a snapshot or training run id: the demo has none
    return reverse(name, kwargs={k: values[k] for k in kwarg_names})


@pytest.mark.parametrize("username", [*DEMO_USERNAMES, None])
def test_every_page_route_renders_for_each_demo_user(demo, client, username):
    user = None
    if username is not None:
        user = get_user_model().objects.get(username=username)
        client.force_login(user)
    is_researcher = username in ("admin", "researcher")
    checked = []
    for _, name, kwarg_names in _page_routes():
        url = _page_url(name, kwarg_names, user=user, project=demo)
        if url is None:
            continue
        status = client.get(url).status_code
        checked.append(name)
        if status == 405:  # POST-only action behind a page (judge, skip, gold, ...)
            continue
        if username is None:
            assert status == 302, (name, status)
        elif is_researcher or name in ANNOTATOR_PAGES:
            assert status == 200, (username, name, status)
        elif name in RESEARCHER_PAGES:
            assert status == 403, (username, name, status)
        else:
            assert status in (200, 403), (username, name, status)
    assert {"project-list", "annotate", "dashboard"} <= set(checked)


def test_project_list_shows_the_demo_to_each_demo_user(demo, client):
    for username in DEMO_USERNAMES:
        client.force_login(get_user_model().objects.get(username=username))
        assert "Prefline demo" in client.get(reverse("project-list")).text


def test_xss_payload_in_a_demo_response_renders_inert(demo, client):
    response = ModelResponse.objects.get(
        prompt__project=demo, text__contains=XSS_PAYLOAD
    )
    comparison = (
        Comparison.objects.filter(project=demo).filter(response_a=response).first()
        or Comparison.objects.filter(response_b=response).first()
    )
    client.force_login(get_user_model().objects.get(username="researcher"))
    url = reverse(
        "comparison-detail", kwargs={"slug": demo.slug, "comparison_id": comparison.pk}
    )
    page = client.get(url)
    assert page.status_code == 200
    assert "onerror=alert(1)" in page.text.replace("&#x27;", "'")  # shown as text
    assert not re.search(r"<[^>]*\bonerror\s*=", page.text, re.I)


def test_every_demo_task_renders_blind_and_inert_on_the_annotate_page(demo, client):
    """Walk annotator2's whole queue: each task page hides models and runs no HTML."""
    user = get_user_model().objects.get(username="annotator2")
    client.force_login(user)
    models = json.loads((DATA_DIR / "models.json").read_text())["ranking"]
    url = reverse("annotate", kwargs={"slug": demo.slug})
    served, saw_payload_as_text = set(), False
    for _ in range(Comparison.objects.filter(project=demo).count() + 1):
        page = client.get(url)
        assert page.status_code == 200
        leased = Assignment.objects.filter(annotator=user, status="leased").first()
        if leased is None:
            break
        served.add(leased.comparison_id)
        assert not any(name in page.text for name in models), leased.comparison_id
        assert not re.search(r"<[^>]*\bonerror\s*=", page.text, re.I)
        saw_payload_as_text |= "onerror=alert(1)" in page.text
        assignment_skip(assignment=leased, annotator=user)
    else:
        raise AssertionError("the queue never ran dry")
    open_regular = Comparison.objects.filter(
        project=demo, gold_choice__isnull=True, judgment_count__lt=3
    )
    assert set(open_regular.values_list("pk", flat=True)) <= served
    assert saw_payload_as_text


def test_tiny_model_is_skipped_with_a_message_without_torch(
    settings, tmp_path, monkeypatch
):
    import importlib.util

    settings.DATA_DIR = tmp_path
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real(name, *a),
    )
    assert tiny_model_ensure(seed=0) == (None, NO_TRAINING_EXTRA)
    assert not (tmp_path / "models").exists()


@pytest.mark.training
def test_tiny_model_is_built_once_into_the_data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    path, note = tiny_model_ensure(seed=0)
    assert path == tmp_path / "models" / "tiny"
    assert (path / "config.json").is_file() and "built" in note
    mtime = (path / "config.json").stat().st_mtime
    again, note = tiny_model_ensure(seed=0)
    assert again == path and "already built" in note
    assert (path / "config.json").stat().st_mtime == mtime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runserver exited: {proc.stdout.read()}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.3)
    raise AssertionError(f"runserver did not answer at {url}")


def test_readme_first_command_serves_a_demo_you_can_log_in_to(tmp_path):
    """migrate + load_demo + runserver on a fresh SQLite data dir, as scripts/demo."""
    if connection.vendor != "sqlite":
        pytest.skip("the embedded (SQLite) set-up is exercised in the SQLite pass")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFLINE_", "DJANGO"))
    }
    env.update(DATABASE_URL="", PREFLINE_DATA_DIR=str(tmp_path), DEBUG="1")
    env.update(SECRET_KEY="test-demo-secret-key-" + "x" * 40, PYTHONUNBUFFERED="1")
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True)
    loaded = subprocess.run(
        [*manage, "load_demo", "--no-simulated-judgments", "--no-tiny-model"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    password = re.search(r"password '([^']+)'", loaded).group(1)
    assert re.search(r"^\s+annotator\s+annotator$", loaded, re.M)
    assert (tmp_path / "prefline.sqlite3").is_file()

    port = _free_port()
    server = subprocess.Popen(
        [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/accounts/login/", server)
        session = requests.Session()
        login = session.get(f"{base}/accounts/login/", timeout=10)
        assert login.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        answer = session.post(
            f"{base}/accounts/login/",
            data={
                "username": "annotator",
                "password": password,
                "csrfmiddlewaretoken": token.group(1),
            },
            headers={"Referer": f"{base}/accounts/login/"},
            timeout=10,
        )
        assert answer.status_code == 200
        assert answer.url.rstrip("/") == base
        assert "Prefline demo" in answer.text
    finally:
        server.terminate()
        server.wait(timeout=10)
