"""Researcher edits of comparisons: gold answers and priority."""

import pytest
from django.core.exceptions import ValidationError

from annotation.models import Comparison, Judgment
from annotation.services import comparisons as svc
from annotation.services.comparisons import comparison_update
from annotation.services.judgments import judgment_submit
from annotation.services.queue import next_assignment
from tests.annotation.queue_factories import make_comparisons


def test_marking_gold_sets_the_answer_and_existing_judgments_follow(project, annotator):
    (comparison,) = make_comparisons(project, 1)
    assignment = next_assignment(annotator=annotator, project=project)
    judgment_submit(assignment=assignment, annotator=annotator, choice="left")

    updated = comparison_update(comparison=comparison, gold_choice="second")

    assert updated.gold_choice == "second" and updated.is_gold
    assert Comparison.objects.get().gold_choice == "second"
    assert Judgment.objects.get().is_gold is True

    comparison_update(comparison=comparison, gold_choice=None)
    assert Comparison.objects.get().gold_choice is None
    assert Judgment.objects.get().is_gold is False


def test_priority_changes_without_touching_gold(project):
    (comparison,) = make_comparisons(project, 0, gold=1)
    comparison_update(comparison=comparison, priority=7)
    stored = Comparison.objects.get()
    assert (stored.priority, stored.gold_choice) == (7, "first")


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"gold_choice": "left"}, "gold_choice", svc.INVALID_GOLD_CHOICE),
        ({"priority": "high"}, "priority", svc.INVALID_PRIORITY),
    ],
)
def test_invalid_updates_are_rejected(project, kwargs, field, message):
    (comparison,) = make_comparisons(project, 1)
    with pytest.raises(ValidationError) as exc:
        comparison_update(comparison=comparison, **kwargs)
    assert exc.value.message_dict[field] == [message]
    assert Comparison.objects.get().gold_choice is None


def test_gold_answer_must_be_allowed_by_the_project(project):
    project.allow_tie = False
    project.allow_both_bad = False
    project.save()
    (comparison,) = make_comparisons(project, 1)
    with pytest.raises(ValidationError) as exc:
        comparison_update(comparison=comparison, gold_choice="tie")
    assert exc.value.message_dict["gold_choice"] == [svc.GOLD_TIE_NOT_ALLOWED]
    with pytest.raises(ValidationError) as exc:
        comparison_update(comparison=comparison, gold_choice="both_bad")
    assert exc.value.message_dict["gold_choice"] == [svc.GOLD_BOTH_BAD_NOT_ALLOWED]
