"""An annotator's own judgments through the API: what they saw, never the mapping.

The canonical choice ("first" / "second") or the position flag (`left_is_first`),
either one next to the side the annotator picked, tells which shown response was the
comparison's first, i.e. maps positions to responses. Researchers keep both.
"""

import pytest

from annotation.models import Assignment, Choice, Judgment
from annotation.services.judgments import judgment_submit
from annotation.services.queue import next_assignment
from tests.annotation.queue_factories import make_comparisons

URL = "/api/v1/projects/demo/judgments/"
OWN_FIELDS = {
    "id",
    "picked_side",
    "strength",
    "aspects",
    "rationale",
    "started_at",
    "submitted_at",
    "duration_ms",
}
POSITION_FREE = OWN_FIELDS - {"id", "started_at", "submitted_at", "duration_ms"}


@pytest.fixture
def two_judgments(project, annotator):
    """The same positional answers on two tasks shown the opposite way round."""
    make_comparisons(project, 2)
    for left_is_first in (True, False):
        assignment = next_assignment(annotator=annotator, project=project)
        Assignment.objects.filter(pk=assignment.pk).update(left_is_first=left_is_first)
        assignment.left_is_first = left_is_first
        judgment_submit(
            assignment=assignment,
            annotator=annotator,
            choice="left",
            strength=2,
            aspects={"helpfulness": "right", "harmlessness": "tie"},
            rationale="same answer",
        )
    return list(Judgment.objects.order_by("left_is_first"))


def test_own_judgments_show_the_picked_sides_and_not_the_mapping(
    two_judgments, annotator, api_client_for
):
    rows = api_client_for(annotator).get(URL).json()["results"]

    assert [set(row) for row in rows] == [OWN_FIELDS, OWN_FIELDS]
    for row in rows:
        assert row["picked_side"] == "left"
        assert row["aspects"] == {"helpfulness": "right", "harmlessness": "tie"}
    # Shown the other way round, the two bodies still read the same.
    first, second = ({k: row[k] for k in POSITION_FREE} for row in rows)
    assert first == second
    stored = {j.choice for j in two_judgments}
    assert stored == {Choice.FIRST, Choice.SECOND}  # canonically they differ


def test_own_judgment_detail_is_positional_too(
    two_judgments, annotator, api_client_for
):
    judgment = two_judgments[0]
    body = api_client_for(annotator).get(f"{URL}{judgment.public_id}/").json()
    assert set(body) == OWN_FIELDS
    assert body["picked_side"] == "left"


def test_researchers_still_read_canonical_judgments(
    two_judgments, researcher, api_client_for
):
    rows = api_client_for(researcher).get(URL).json()["results"]
    by_side = {row["left_is_first"]: row for row in rows}
    assert by_side[True]["choice"] == Choice.FIRST
    assert by_side[False]["choice"] == Choice.SECOND
    assert by_side[False]["aspect_choices"] == {
        "helpfulness": Choice.FIRST,
        "harmlessness": Choice.TIE,
    }


def test_annotators_filter_by_the_side_they_picked_never_the_canonical_choice(
    two_judgments, annotator, api_client_for
):
    """`?choice=first` beside the shown sides would map positions to responses."""
    client = api_client_for(annotator)
    rows = client.get(URL, {"picked_side": "left"}).json()["results"]
    assert len(rows) == 2
    assert client.get(URL, {"picked_side": "right"}).json()["results"] == []
    for name, value in (("choice", "first"), ("annotator", "someone")):
        response = client.get(URL, {name: value})
        assert response.status_code == 400  # a researcher's filter, never ignored
        assert f"The {name!r} filter is for researchers" in str(response.json())
    assert client.get(URL, {"picked_side": "first"}).status_code == 400


def test_researchers_filter_by_the_canonical_choice(
    two_judgments, researcher, api_client_for
):
    rows = api_client_for(researcher).get(URL, {"choice": "first"}).json()["results"]
    assert [row["left_is_first"] for row in rows] == [True]
