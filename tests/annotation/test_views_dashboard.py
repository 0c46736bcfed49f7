"""Researcher dashboard: numbers checked against independent references.

Judgments are made through the real queue and submit services by three annotators;
the dashboard's figures are then recomputed here from the stored rows with
`krippendorff`, scikit-learn and SciPy.
"""

import random

import krippendorff
import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from annotation import stats
from annotation.models import Choice, Comparison, Judgment, Role
from annotation.selectors import dashboard
from annotation.selectors.dashboard import own_progress, project_dashboard
from annotation.services.comparisons import comparison_update
from annotation.services.judgments import judgment_submit
from annotation.services.projects import project_create
from annotation.services.queue import assignment_skip, next_assignment
from annotation.views.access import NOT_A_MEMBER, RESEARCHERS_ONLY
from tests.annotation.queue_factories import make_comparisons
from tests.annotation.ui_data import make_task_data

TOL = 1e-9
CODES = {"first": 0, "second": 1, "tie": 2, "both_bad": 3}


@pytest.fixture
def judged(make_user):
    """15 comparisons, target 3, judged fully by 3 annotators (each judges all)."""
    project = project_create(slug="dash", name="Dash", target_judgments=3)
    researcher = make_user("dash-res", project=project, role=Role.RESEARCHER)
    annotators = [
        make_user(f"dash-a{i}", project=project, role=Role.ANNOTATOR) for i in range(3)
    ]
    comparisons = make_task_data(project, 15)
    rng = random.Random(7)
    choices = ["left", "right", "tie", "both_bad"]
    for k, user in enumerate(annotators):
        while (
            assignment := next_assignment(annotator=user, project=project)
        ) is not None:
            # Annotator k leans towards one side so that agreement is not trivial.
            pick = rng.choice(choices + ["left"] * k)
            judgment_submit(assignment=assignment, annotator=user, choice=pick)
    comparison_update(comparison=comparisons[0], gold_choice=Choice.FIRST)
    comparison_update(comparison=comparisons[1], gold_choice=Choice.TIE)
    return project, researcher, annotators


def rows():
    return list(
        Judgment.objects.filter(origin="human").values_list(
            "comparison_id",
            "annotator_id",
            "choice",
            "left_is_first",
            "comparison__gold_choice",
            "duration_ms",
        )
    )


def test_progress_counts(judged):
    project, _, annotators = judged
    dash = project_dashboard(project=project)
    assert dash.judgments == 45 == Judgment.objects.count()
    assert dash.comparisons == 13  # 15 minus the two marked gold
    assert dash.complete == 13
    assert dash.gold_comparisons == 2
    assert dash.judgments_target == 13 * 3
    assert dash.judgments_toward_target == 39
    assert dash.per_day[-1] == (timezone.localdate(), 45)
    assert sum(n for _, n in dash.per_day) == 45
    assert [row.judgments for row in dash.annotators] == [15, 15, 15]


def test_alpha_and_kappa_match_references(judged):
    project, _, annotators = judged
    dash = project_dashboard(project=project)
    data = rows()
    unit_index = {u: i for i, u in enumerate(sorted({r[0] for r in data}))}
    coder_index = {c: i for i, c in enumerate(sorted({r[1] for r in data}))}
    matrix = np.full((len(coder_index), len(unit_index)), np.nan)
    for unit, coder, choice, *_ in data:
        matrix[coder_index[coder], unit_index[unit]] = CODES[choice]
    expected = krippendorff.alpha(
        reliability_data=matrix, level_of_measurement="nominal"
    )
    assert dash.alpha == pytest.approx(expected, abs=TOL)
    assert dash.alpha_units == 15
    assert len(dash.kappas) == 3
    names = {u.username: coder_index[u.pk] for u in annotators}
    for row in dash.kappas:
        a, b = matrix[names[row.annotator_a]], matrix[names[row.annotator_b]]
        assert row.overlap == 15
        assert row.kappa == pytest.approx(cohen_kappa_score(a, b), abs=TOL)


def test_per_annotator_gold_left_rate_and_majority_match_hand_counts(judged):
    project, _, annotators = judged
    dash = project_dashboard(project=project)
    data = rows()
    by_unit = {}
    for unit, coder, choice, *_ in data:
        by_unit.setdefault(unit, {})[coder] = choice
    for row in dash.annotators:
        mine = [r for r in data if r[1] == row.user_id]
        gold = [r for r in mine if r[4] is not None]
        correct = sum(r[2] == r[4] for r in gold)
        assert (row.gold.successes, row.gold.n) == (correct, 2)
        ci = binomtest(correct, 2).proportion_ci(method="wilson")
        assert row.gold.low == pytest.approx(ci.low, abs=1e-7)
        assert row.gold.high == pytest.approx(ci.high, abs=1e-7)
        decisive = [r for r in mine if r[2] in ("first", "second")]
        left = sum((r[2] == "first") == r[3] for r in decisive)
        assert (row.left.successes, row.left.n) == (left, len(decisive))
        agree = n = 0
        for unit, coder, choice, *_ in mine:
            others = [c for k, c in by_unit[unit].items() if k != coder]
            counts = {c: others.count(c) for c in set(others)}
            top = max(counts.values())
            winners = [c for c, t in counts.items() if t == top]
            if len(winners) == 1:
                n += 1
                agree += winners[0] == choice
        assert (row.majority.successes, row.majority.n) == (agree, n)
        durations = sorted(r[5] / 1000 for r in mine)
        assert row.median_seconds == pytest.approx(float(np.median(durations)))


def test_position_bias_tie_and_both_bad_rates(judged):
    project, *_ = judged
    dash = project_dashboard(project=project)
    data = rows()
    decisive = [r for r in data if r[2] in ("first", "second")]
    left = sum((r[2] == "first") == r[3] for r in decisive)
    ci = binomtest(left, len(decisive)).proportion_ci(method="wilson")
    assert (dash.left.successes, dash.left.n) == (left, len(decisive))
    assert dash.left.low == pytest.approx(ci.low, abs=1e-7)
    assert dash.tie.successes == sum(r[2] == "tie" for r in data)
    assert dash.both_bad.successes == sum(r[2] == "both_bad" for r in data)


def test_prior_labels_are_not_counted_as_human_work(judged):
    project, *_ = judged
    comparison = Comparison.objects.filter(project=project).first()
    Judgment.objects.create(
        comparison=comparison,
        origin=Judgment.Origin.PRIOR,
        choice=Choice.FIRST,
        submitted_at=timezone.now(),
    )
    dash = project_dashboard(project=project)
    assert dash.judgments == 45
    assert dash.prior_labels == 1


def test_empty_project_dashboard_renders_without_numbers(client, project, researcher):
    client.force_login(researcher)
    response = client.get(reverse("dashboard", args=[project.slug]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "No human judgments yet." in body
    assert "α = —" in body


def test_dashboard_page_and_live_fragment(client, judged):
    project, researcher, annotators = judged
    client.force_login(researcher)
    page = client.get(reverse("dashboard", args=[project.slug]))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-refresh-url="/projects/dash/dashboard/stats/"' in body
    assert "dashboard.js" in body
    for user in annotators:
        assert user.username in body
    fragment = client.get(reverse("dashboard-stats", args=[project.slug]))
    assert fragment.status_code == 200
    assert "<html" not in fragment.content.decode()
    assert "13 / 13" in fragment.content.decode()
    # Every per-annotator rate with its interval and n, tie and both bad too.
    row = fragment.content.decode().split(f">{annotators[0].username}</a></th>")[1]
    cells = row.split("</tr>")[0].split("<td>")[3:]  # gold, majority, left, tie, both
    assert len(cells) == 5
    assert all('class="ci"' in cell or "no data" in cell for cell in cells)
    assert all('class="ci"' in cell for cell in cells[2:])
    # The next refresh reads fresh numbers.
    comparison_update(
        comparison=Comparison.objects.filter(project=project, gold_choice=None).first(),
        gold_choice=Choice.SECOND,
    )
    fragment = client.get(reverse("dashboard-stats", args=[project.slug]))
    assert "12 / 12" in fragment.content.decode()
    assert "3 gold comparisons" in fragment.content.decode()


@pytest.mark.parametrize("name", ["dashboard", "dashboard-stats"])
def test_dashboard_is_for_researchers_only(client, project, annotator, outsider, name):
    client.force_login(annotator)
    response = client.get(reverse(name, args=[project.slug]))
    assert response.status_code == 403
    assert RESEARCHERS_ONLY in response.content.decode()
    client.force_login(outsider)
    response = client.get(reverse(name, args=[project.slug]))
    assert response.status_code == 404
    assert NOT_A_MEMBER in response.content.decode()


def test_own_progress_counts_judged_skipped_and_remaining(project, annotator):
    make_task_data(project, 4)
    first = next_assignment(annotator=annotator, project=project)
    judgment_submit(assignment=first, annotator=annotator, choice="left")
    second = next_assignment(annotator=annotator, project=project)
    assignment_skip(assignment=second, annotator=annotator)
    progress = own_progress(project=project, user=annotator)
    assert (progress.judged, progress.skipped, progress.remaining) == (1, 1, 2)


def test_project_list_links_researchers_to_their_pages(client, project, researcher):
    client.force_login(researcher)
    body = client.get(reverse("project-list")).content.decode()
    for name in ("dashboard", "judgment-list", "annotate"):
        assert reverse(name, args=[project.slug]) in body
    page = client.get(reverse("annotate", args=[project.slug])).content.decode()
    assert reverse("dashboard", args=[project.slug]) in page


def _bulk_judged(project, annotators, comparisons: int, seed: int, share=1.0):
    """`comparisons` comparisons, each judged by a random share of the annotators."""
    rng = random.Random(seed)
    rows = make_comparisons(project, comparisons, tag=f"s{seed}-")
    users = list(get_user_model().objects.filter(username__in=annotators))
    now = timezone.now()
    Judgment.objects.bulk_create(
        Judgment(
            comparison=comparison,
            annotator=user,
            choice=rng.choice(list(CODES)),
            left_is_first=rng.random() < 0.5,
            duration_ms=rng.randint(500, 90_000),
            submitted_at=now,
        )
        for comparison in rows
        for user in users
        if rng.random() < share
    )


def test_kappa_of_many_annotators_with_partial_overlap_matches_the_references(
    project, make_user
):
    names = [f"k{i}" for i in range(7)]
    for name in names:
        make_user(name, project=project, role=Role.ANNOTATOR)
    _bulk_judged(project, names, 60, seed=3, share=0.4)
    dash = project_dashboard(project=project)
    data = rows()
    units = np.array([r[0] for r in data])
    coders = np.array([r[1] for r in data])
    values = np.array([CODES[r[2]] for r in data])
    old = stats.pairwise_cohen_kappa(units, coders, values, min_overlap=10)
    assert len(dash.kappas) == len(old.n) > 0
    by_id = dict(
        get_user_model()
        .objects.filter(username__in=names)
        .values_list("pk", "username")
    )
    for row, a, b, n, kappa in zip(
        dash.kappas, old.coder_a, old.coder_b, old.n, old.kappa, strict=True
    ):
        assert (row.annotator_a, row.annotator_b, row.overlap) == (
            by_id[a],
            by_id[b],
            n,
        )
        assert row.kappa == kappa  # the same computation, bit for bit
        shared = sorted(set(units[coders == a]) & set(units[coders == b]))
        label = {(u, c): v for u, c, v in zip(units, coders, values, strict=True)}
        expected = cohen_kappa_score(
            [label[u, a] for u in shared], [label[u, b] for u in shared]
        )
        assert row.kappa == pytest.approx(expected, abs=TOL)


def _python_lines_in(paths: set[str], function) -> int:
    """Python lines executed in the files `paths` while `function` runs."""
    import sys

    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def trace(frame, event, arg):
        return local if frame.f_code.co_filename in paths else None

    sys.settrace(trace)
    try:
        function()
    finally:
        sys.settrace(None)
    return count


def test_dashboard_python_work_does_not_grow_with_the_number_of_judgments(
    project, make_user
):
    """The dashboard reloads every few seconds: its per-judgment work must be in
    the database and in NumPy, not in Python loops (SQL rows still arrive one by
    one, in Django; the statistics code itself does a fixed amount of work)."""
    names = [f"d{i}" for i in range(4)]
    for name in names:
        make_user(name, project=project, role=Role.ANNOTATOR)
    paths = {dashboard.__file__, stats.__file__}
    counts = []
    for seed, comparisons in ((1, 50), (2, 150)):
        _bulk_judged(project, names, comparisons, seed=seed)
        counts.append(
            _python_lines_in(paths, lambda: project_dashboard(project=project))
        )
    # 200 judgments, then 800 in all: the lines run may not follow.
    assert counts[1] < 1.2 * counts[0], counts
