"""Researcher edits of comparisons: queue priority and gold answers."""

from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import Choice, Comparison, Judgment

UNSET = object()

INVALID_GOLD_CHOICE = "Gold answer must be one of: first, second, tie, both_bad."
GOLD_TIE_NOT_ALLOWED = "This project does not allow ties, so 'tie' cannot be gold."
GOLD_BOTH_BAD_NOT_ALLOWED = (
    "This project does not allow 'both_bad', so it cannot be the gold answer."
)
INVALID_PRIORITY = "Priority must be an integer."


def gold_choice_check(*, project, gold_choice: str | None) -> None:
    """Raise ValidationError unless `gold_choice` is canonical and allowed here."""
    if gold_choice is not None and gold_choice not in Choice.values:
        raise ValidationError({"gold_choice": INVALID_GOLD_CHOICE})
    if gold_choice == Choice.TIE and not project.allow_tie:
        raise ValidationError({"gold_choice": GOLD_TIE_NOT_ALLOWED})
    if gold_choice == Choice.BOTH_BAD and not project.allow_both_bad:
        raise ValidationError({"gold_choice": GOLD_BOTH_BAD_NOT_ALLOWED})


@transaction.atomic
def comparison_update(
    *, comparison: Comparison, priority: int | None = None, gold_choice=UNSET
) -> Comparison:
    """Set a comparison's queue priority and/or its gold answer.

    `gold_choice` is canonical (`Choice`: first / second / tie / both_bad, about
    response_a / response_b); `None` unmarks gold, leaving it out keeps it as it is.
    Human judgments already on the comparison follow its gold status
    (`Judgment.is_gold`): annotators judged it blind either way, so their answers
    are valid evidence of accuracy.
    """
    locked = (
        Comparison.objects.select_for_update()
        .select_related("project")
        .get(pk=comparison.pk)
    )
    fields = []
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError({"priority": INVALID_PRIORITY})
        locked.priority = priority
        fields.append("priority")
    if gold_choice is not UNSET:
        gold_choice_check(project=locked.project, gold_choice=gold_choice)
        locked.gold_choice = gold_choice
        fields.append("gold_choice")
        Judgment.objects.filter(comparison=locked, origin=Judgment.Origin.HUMAN).update(
            is_gold=gold_choice is not None
        )
    if fields:
        locked.save(update_fields=fields)
    comparison.priority = locked.priority
    comparison.gold_choice = locked.gold_choice
    return locked
