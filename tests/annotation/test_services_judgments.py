"""Submitting judgments: canonical choice, idempotency, expired leases, validation."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from annotation.models import Assignment, Choice, Comparison, Judgment, Role
from annotation.services import judgments as svc
from annotation.services.judgments import (
    JudgmentConflict,
    LeaseExpiredTargetMet,
    judgment_submit,
)
from annotation.services.projects import membership_set, user_create
from annotation.services.queue import assignment_skip, next_assignment
from tests.annotation.queue_factories import make_comparisons

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


def _member(project, name):
    user = user_create(username=name)
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


def _lease(project, user, now=None):
    return next_assignment(annotator=user, project=project, now=now)


@pytest.mark.parametrize(
    ("left_is_first", "choice", "canonical"),
    [
        (True, "left", Choice.FIRST),
        (True, "right", Choice.SECOND),
        (False, "left", Choice.SECOND),
        (False, "right", Choice.FIRST),
        (False, "tie", Choice.TIE),
        (True, "both_bad", Choice.BOTH_BAD),
    ],
)
def test_positional_choice_is_stored_canonically(
    project, annotator, left_is_first, choice, canonical
):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator, now=NOW)
    Assignment.objects.filter(pk=assignment.pk).update(left_is_first=left_is_first)
    assignment.left_is_first = left_is_first

    result = judgment_submit(
        assignment=assignment,
        annotator=annotator,
        choice=choice,
        aspects={"helpfulness": choice},
        now=NOW + dt.timedelta(seconds=42),
    )

    judgment = Judgment.objects.get()
    assert result.created and result.judgment.pk == judgment.pk
    assert judgment.choice == canonical
    assert judgment.aspect_choices == {"helpfulness": canonical}
    assert judgment.left_is_first is left_is_first
    assert judgment.origin == Judgment.Origin.HUMAN and judgment.annotator == annotator
    assert judgment.duration_ms == 42_000
    assert judgment.is_gold is False


def test_submit_moves_the_lease_into_the_judgment_count(project, annotator):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    judgment_submit(assignment=assignment, annotator=annotator, choice="left")
    comparison = Comparison.objects.get()
    assert (comparison.judgment_count, comparison.lease_count) == (1, 0)
    assert Assignment.objects.get().status == Assignment.Status.SUBMITTED


def test_identical_retry_returns_the_stored_judgment(project, annotator):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    kwargs = {
        "choice": "right",
        "strength": 2,
        "aspects": {"harmlessness": "tie"},
        "rationale": "clearer",
    }
    first = judgment_submit(assignment=assignment, annotator=annotator, **kwargs)
    again = judgment_submit(assignment=assignment, annotator=annotator, **kwargs)
    assert first.created and not again.created
    assert again.judgment.pk == first.judgment.pk
    assert Judgment.objects.count() == 1
    assert Comparison.objects.get().judgment_count == 1


@pytest.mark.parametrize(
    "change",
    [{"choice": "left"}, {"strength": 3}, {"aspects": {}}, {"rationale": "other"}],
)
def test_different_second_judgment_is_a_conflict(project, annotator, change):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    kwargs = {
        "choice": "right",
        "strength": 2,
        "aspects": {"harmlessness": "tie"},
        "rationale": "clearer",
    }
    judgment_submit(assignment=assignment, annotator=annotator, **kwargs)
    with pytest.raises(JudgmentConflict, match="different answer"):
        judgment_submit(assignment=assignment, annotator=annotator, **kwargs | change)
    assert Judgment.objects.get().choice == svc.to_canonical(
        "right", left_is_first=assignment.left_is_first
    )


def test_someone_elses_assignment_is_not_found(project, annotator):
    make_comparisons(project, 1)
    other = _member(project, "other")
    assignment = _lease(project, annotator)
    with pytest.raises(svc.AssignmentNotFound):
        judgment_submit(assignment=assignment, annotator=other, choice="left")
    assert not Judgment.objects.exists()


def test_skipped_assignment_cannot_be_judged(project, annotator):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    assignment_skip(assignment=assignment, annotator=annotator)
    with pytest.raises(JudgmentConflict, match="skipped"):
        judgment_submit(assignment=assignment, annotator=annotator, choice="left")


def test_expired_lease_is_accepted_while_a_slot_is_free(project, annotator):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    late = assignment.expires_at + dt.timedelta(minutes=5)
    result = judgment_submit(
        assignment=assignment, annotator=annotator, choice="left", now=late
    )
    assert result.created
    comparison = Comparison.objects.get()
    assert (comparison.judgment_count, comparison.lease_count) == (1, 0)


def test_reclaimed_lease_is_accepted_while_a_slot_is_free(project, annotator):
    make_comparisons(project, 1)
    other = _member(project, "other")
    assignment = _lease(project, annotator)
    late = assignment.expires_at + dt.timedelta(seconds=1)
    _lease(project, other, now=late)  # reclaims the expired lease; one slot left
    assert Assignment.objects.get(pk=assignment.pk).status == "expired"

    result = judgment_submit(
        assignment=assignment, annotator=annotator, choice="left", now=late
    )

    assert result.created
    comparison = Comparison.objects.get()
    assert (comparison.judgment_count, comparison.lease_count) == (1, 1)


def test_expired_lease_is_refused_once_others_cover_the_target(project, annotator):
    """Target 2: after the lease expires, two others take both slots."""
    make_comparisons(project, 1)
    b, c = _member(project, "b"), _member(project, "c")
    assignment = _lease(project, annotator)
    late = assignment.expires_at + dt.timedelta(seconds=1)
    _lease(project, b, now=late)
    _lease(project, c, now=late)

    with pytest.raises(LeaseExpiredTargetMet) as exc:
        judgment_submit(
            assignment=assignment, annotator=annotator, choice="left", now=late
        )

    assert str(exc.value) == svc.LEASE_EXPIRED_TARGET_MET
    assert not Judgment.objects.exists()
    comparison = Comparison.objects.get()
    assert (comparison.judgment_count, comparison.lease_count) == (0, 2)


def test_expired_gold_lease_is_always_accepted(project, annotator):
    project.target_judgments = 1
    project.gold_rate = 1.0
    project.save()
    make_comparisons(project, 1, gold=1)
    b = _member(project, "b")
    assignment = _lease(project, annotator)
    assert assignment.comparison.is_gold
    judgment_submit(assignment=_lease(project, b), annotator=b, choice="left")
    late = assignment.expires_at + dt.timedelta(hours=1)
    result = judgment_submit(
        assignment=assignment, annotator=annotator, choice="left", now=late
    )
    assert result.created and result.judgment.is_gold


def test_client_start_time_is_used_when_within_the_lease(project, annotator):
    make_comparisons(project, 2)
    assignment = _lease(project, annotator, now=NOW)
    judgment = judgment_submit(
        assignment=assignment,
        annotator=annotator,
        choice="left",
        started_at=NOW + dt.timedelta(seconds=10),
        now=NOW + dt.timedelta(seconds=25),
    ).judgment
    assert judgment.duration_ms == 15_000


@pytest.mark.parametrize(
    "started_at",
    [NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=1), dt.datetime(2026, 1, 5)],
)
def test_insane_client_start_time_falls_back_to_the_lease(
    project, annotator, started_at
):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator, now=NOW)
    judgment = judgment_submit(
        assignment=assignment,
        annotator=annotator,
        choice="left",
        started_at=started_at,
        now=NOW + dt.timedelta(seconds=25),
    ).judgment
    assert judgment.duration_ms == 25_000
    assert judgment.started_at == NOW


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"choice": "first"}, "choice", "Choose one of"),
        ({"choice": "left", "strength": 0}, "strength", svc.INVALID_STRENGTH),
        ({"choice": "left", "strength": 4}, "strength", svc.INVALID_STRENGTH),
        ({"choice": "left", "strength": True}, "strength", svc.INVALID_STRENGTH),
        ({"choice": "left", "aspects": ["x"]}, "aspects", svc.INVALID_ASPECTS),
        ({"choice": "left", "aspects": {"tone": "left"}}, "aspects", "Unknown aspect"),
        (
            {"choice": "left", "aspects": {"helpfulness": "up"}},
            "aspects.helpfulness",
            "Choose one of",
        ),
        ({"choice": "left", "rationale": "x" * 10_001}, "rationale", "limited"),
    ],
)
def test_invalid_submissions_are_rejected_per_field(
    project, annotator, kwargs, field, message
):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    with pytest.raises(ValidationError) as exc:
        judgment_submit(assignment=assignment, annotator=annotator, **kwargs)
    assert message in exc.value.message_dict[field][0]
    assert not Judgment.objects.exists()
    assert Assignment.objects.get().status == Assignment.Status.LEASED


def test_tie_and_both_bad_are_rejected_when_the_project_disallows_them(
    project, annotator
):
    project.allow_tie = False
    project.allow_both_bad = False
    project.save()
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    with pytest.raises(ValidationError) as exc:
        judgment_submit(assignment=assignment, annotator=annotator, choice="tie")
    assert exc.value.message_dict["choice"] == [svc.TIE_NOT_ALLOWED]
    with pytest.raises(ValidationError) as exc:
        judgment_submit(assignment=assignment, annotator=annotator, choice="both_bad")
    assert exc.value.message_dict["choice"] == [svc.BOTH_BAD_NOT_ALLOWED]
    with pytest.raises(ValidationError) as exc:
        judgment_submit(
            assignment=assignment,
            annotator=annotator,
            choice="left",
            aspects={"helpfulness": "tie"},
        )
    assert exc.value.message_dict["aspects.helpfulness"] == [svc.TIE_NOT_ALLOWED]


def test_duration_beyond_a_day_is_stored_as_unknown(project, annotator):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator, now=NOW)
    late = NOW + svc.MAX_DURATION + dt.timedelta(seconds=1)
    judgment = judgment_submit(
        assignment=assignment, annotator=annotator, choice="left", now=late
    ).judgment
    assert judgment.duration_ms is None
    assert judgment.submitted_at == late


def test_rationale_is_stored_stripped(project, annotator):
    make_comparisons(project, 1)
    assignment = _lease(project, annotator)
    judgment_submit(
        assignment=assignment, annotator=annotator, choice="left", rationale="  ok \n"
    )
    assert Judgment.objects.get().rationale == "ok"


def test_positional_round_trip():
    for side in (True, False):
        for choice in svc.POSITIONAL_CHOICES:
            canonical = svc.to_canonical(choice, left_is_first=side)
            assert svc.to_positional(canonical, left_is_first=side) == choice


def test_the_returned_judgment_is_the_stored_row(project, annotator):
    """The plain-SQL insert returns what the ORM reads back, field by field."""
    make_comparisons(project, 1, gold=1)
    project.gold_rate = 1.0
    project.save()
    assignment = _lease(project, annotator, now=NOW)
    result = judgment_submit(
        assignment=assignment,
        annotator=annotator,
        choice="right",
        strength=1,
        aspects={"helpfulness": "left"},
        rationale="  Clearer.  ",
        now=NOW + dt.timedelta(seconds=7),
    )
    stored = Judgment.objects.get()
    for field in Judgment._meta.concrete_fields:
        assert getattr(result.judgment, field.attname) == getattr(
            stored, field.attname
        ), field.name
    assert stored.is_gold and stored.rationale == "Clearer."
    assert stored.duration_ms == 7000
    comparison = Comparison.objects.get(pk=assignment.comparison_id)
    assert (comparison.judgment_count, comparison.lease_count) == (1, 0)


@pytest.mark.parametrize("choice", ["tie", "both_bad"])
def test_strength_is_refused_for_an_answer_without_a_winner(project, choice):
    from annotation.services.judgments import judgment_validate

    with pytest.raises(ValidationError) as excinfo:
        judgment_validate(
            project=project, choice=choice, strength=2, aspects=None, rationale=""
        )
    assert f"a '{choice}' answer has none" in excinfo.value.message_dict["strength"][0]
