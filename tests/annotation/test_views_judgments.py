"""Researcher judgments browser, CSV download, comparison page and gold marking."""

import csv
import datetime as dt
import html
import io

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import Choice, Comparison, Judgment, Role
from annotation.selectors.judgments import CSV_COLUMNS
from annotation.services.comparisons import GOLD_TIE_NOT_ALLOWED
from annotation.services.judgments import judgment_submit
from annotation.services.projects import project_create
from annotation.services.queue import next_assignment
from annotation.views.access import RESEARCHERS_ONLY
from annotation.views.judgments import COMPARISON_NOT_FOUND, GOLD_SET
from tests.annotation.ui_data import make_task_data


@pytest.fixture
def data(project, annotator, make_user):
    """4 comparisons; `ann` judges 2 (left, right), `ann2` judges 1 (tie); 1 prior."""
    other = make_user("ann2", project=project, role=Role.ANNOTATOR)
    comparisons = make_task_data(project, 4)
    for user, picks in ((annotator, ["left", "right"]), (other, ["tie"])):
        for pick in picks:
            assignment = next_assignment(annotator=user, project=project)
            judgment_submit(
                assignment=assignment,
                annotator=user,
                choice=pick,
                rationale='=HYPERLINK("http://evil")' if pick == "tie" else "fine",
            )
    Judgment.objects.create(
        comparison=comparisons[3],
        origin=Judgment.Origin.PRIOR,
        choice=Choice.SECOND,
        submitted_at=timezone.now() - dt.timedelta(days=3),
    )
    return comparisons, other


def get_csv(client, project, query=""):
    response = client.get(reverse("judgment-csv", args=[project.slug]) + query)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def test_browser_lists_all_judgments_with_filters(client, project, researcher, data):
    client.force_login(researcher)
    url = reverse("judgment-list", args=[project.slug])
    body = client.get(url).content.decode()
    assert "4 judgments" in body
    assert "prior label" in body
    assert "3 judgments" in client.get(url + "?origin=human").content.decode()
    ann2 = data[1]
    assert (
        "1 judgment "
        in client.get(url + f"?annotator={ann2.username}").content.decode()
    )
    assert "1 judgment " in client.get(url + "?choice=tie").content.decode()
    yesterday = (timezone.localdate() - dt.timedelta(days=1)).isoformat()
    assert "1 judgment " in client.get(url + f"?date_to={yesterday}").content.decode()
    assert "3 judgments" in client.get(url + f"?date_from={yesterday}").content.decode()
    assert "No judgments match" in client.get(url + "?gold=yes").content.decode()


def test_dashboard_links_filter_by_username_as_the_api_does(
    client, project, researcher, data
):
    """The dashboard's per-annotator link and the API take the same `?annotator=`."""
    client.force_login(researcher)
    stats = client.get(reverse("dashboard-stats", args=[project.slug])).content.decode()
    list_url = reverse("judgment-list", args=[project.slug])
    link = f'href="{list_url}?annotator=ann2"'
    assert link in stats
    page = client.get(f"{list_url}?annotator=ann2").content.decode()
    assert "1 judgment " in page
    assert '<option value="ann2" selected>ann2</option>' in page
    rows = get_csv(client, project, "?annotator=ann2")[1:]
    assert [row[CSV_COLUMNS.index("annotator")] for row in rows] == ["ann2"]


def test_bad_filter_is_a_400_that_names_the_field(client, project, researcher, data):
    client.force_login(researcher)
    url = reverse("judgment-list", args=[project.slug])
    response = client.get(url + "?date_from=yesterday&choice=middle")
    assert response.status_code == 400
    body = html.unescape(response.content.decode())
    assert "date_from: Enter a valid date." in body
    assert "choice: Select a valid choice." in body


def test_csv_has_canonical_rows_with_provenance_and_neutralised_formulas(
    client, project, researcher, data
):
    client.force_login(researcher)
    rows = get_csv(client, project, "?origin=human")
    assert rows[0] == CSV_COLUMNS
    assert len(rows) == 4
    by_id = {row[0]: dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]}
    for judgment in Judgment.objects.filter(origin="human"):
        row = by_id[str(judgment.public_id)]
        assert row["choice"] == judgment.choice
        assert row["left_is_first"] == str(judgment.left_is_first)
        assert row["model_a"] == judgment.comparison.response_a.model_name
        assert row["annotator"] == judgment.annotator.username
    rationales = sorted(row["rationale"] for row in by_id.values())
    assert rationales == ['\'=HYPERLINK("http://evil")', "fine", "fine"]
    assert len(get_csv(client, project, "?choice=tie")) == 2


def test_mark_gold_from_the_comparison_page(client, project, researcher, data):
    comparisons, _ = data
    target = comparisons[0]
    client.force_login(researcher)
    page = client.get(reverse("comparison-detail", args=[project.slug, target.pk]))
    assert page.status_code == 200
    assert target.response_a.model_name in page.content.decode()  # researchers see
    response = client.post(
        reverse("comparison-gold", args=[project.slug, target.pk]),
        {"gold_choice": "second"},
        follow=True,
    )
    assert response.status_code == 200
    assert GOLD_SET.format(id=target.pk, choice="second") in html.unescape(
        response.content.decode()
    )
    target.refresh_from_db()
    assert target.gold_choice == Choice.SECOND
    assert all(j.is_gold for j in target.judgments.filter(origin="human"))
    client.post(
        reverse("comparison-gold", args=[project.slug, target.pk]), {"gold_choice": ""}
    )
    target.refresh_from_db()
    assert target.gold_choice is None


def test_gold_answer_the_project_forbids_is_a_400(client, make_user):
    strict = project_create(slug="strict", name="Strict", allow_tie=False)
    user = make_user("strict-res", project=strict, role=Role.RESEARCHER)
    (comparison,) = make_task_data(strict, 1)
    client.force_login(user)
    page = client.get(reverse("comparison-detail", args=[strict.slug, comparison.pk]))
    options = page.content.decode().split('name="gold_choice"')[1].split("</select>")[0]
    assert 'value="tie"' not in options and 'value="both_bad"' in options
    url = reverse("comparison-gold", args=[strict.slug, comparison.pk])
    response = client.post(url, {"gold_choice": "tie"})
    assert response.status_code == 400
    assert GOLD_TIE_NOT_ALLOWED in html.unescape(response.content.decode())
    response = client.post(url, {"gold_choice": "best"})
    assert response.status_code == 400
    comparison.refresh_from_db()
    assert comparison.gold_choice is None


def test_comparison_of_another_project_is_404(client, project, researcher, make_user):
    elsewhere = project_create(slug="elsewhere", name="Elsewhere")
    (foreign,) = make_task_data(elsewhere, 1)
    client.force_login(researcher)
    for name in ("comparison-detail", "comparison-gold"):
        method = client.get if name == "comparison-detail" else client.post
        response = method(reverse(name, args=[project.slug, foreign.pk]))
        assert response.status_code == 404
        assert COMPARISON_NOT_FOUND in response.content.decode()
    assert Comparison.objects.get(pk=foreign.pk).gold_choice is None


@pytest.mark.parametrize(
    ("name", "method", "extra"),
    [
        ("judgment-list", "get", []),
        ("judgment-csv", "get", []),
        ("comparison-detail", "get", ["cid"]),
        ("comparison-gold", "post", ["cid"]),
    ],
)
def test_annotators_are_refused(client, project, annotator, data, name, method, extra):
    comparisons, _ = data
    args = [project.slug] + [comparisons[0].pk for _ in extra]
    client.force_login(annotator)
    response = getattr(client, method)(reverse(name, args=args), {"gold_choice": "tie"})
    assert response.status_code == 403
    assert RESEARCHERS_ONLY in response.content.decode()
    assert Comparison.objects.get(pk=comparisons[0].pk).gold_choice is None
