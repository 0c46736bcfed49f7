"""Query-string filters of the annotation API (django-filter)."""

import django_filters
from django import forms
from django.db.models import F, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from annotation.models import Choice, Comparison, Judgment, Prompt, Response, Split


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    """A whole-number id (django-filter's NumberFilter accepts decimals)."""

    field_class = forms.IntegerField


class StrictBooleanField(forms.NullBooleanField):
    """true/false (or 1/0, yes/no); anything else is an error, not "no filter".

    django-filter's BooleanFilter reads an unknown value as "unset" and silently
    returns everything, which hides a typo such as `?gold=ture`.
    """

    widget = forms.TextInput  # NullBooleanSelect maps unknown values to None first
    TRUE = {"true", "1", "yes", "on"}
    FALSE = {"false", "0", "no", "off"}

    def to_python(self, value):
        if value is None or value == "" or isinstance(value, bool):
            return value if value != "" else None
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError(
            f"Enter true or false, not {value!r}.", code="invalid"
        )

    def validate(self, value):
        return None


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class PromptFilter(django_filters.FilterSet):
    split = django_filters.ChoiceFilter(choices=Split.choices)
    external_id = django_filters.CharFilter()
    import_batch = IdFilter(field_name="import_batch_id")

    class Meta:
        model = Prompt
        fields = ["split", "external_id", "import_batch"]


class ResponseFilter(django_filters.FilterSet):
    prompt = IdFilter(field_name="prompt_id")
    model_name = django_filters.CharFilter()
    split = django_filters.ChoiceFilter(
        field_name="prompt__split", choices=Split.choices
    )

    class Meta:
        model = Response
        fields = ["prompt", "model_name", "split"]


class ComparisonFilter(django_filters.FilterSet):
    prompt = IdFilter(field_name="prompt_id")
    split = django_filters.ChoiceFilter(
        field_name="prompt__split", choices=Split.choices
    )
    origin = django_filters.ChoiceFilter(choices=Comparison.Origin.choices)
    gold = StrictBooleanFilter(
        method="filter_gold", label="Only gold (true) or only non-gold (false)."
    )
    complete = StrictBooleanFilter(
        method="filter_complete",
        label="Only comparisons that reached (true) or not (false) the project's "
        "target number of human judgments.",
    )
    model_name = django_filters.CharFilter(
        method="filter_model_name", label="Either response is from this model."
    )

    class Meta:
        model = Comparison
        fields = ["prompt", "split", "origin", "gold", "complete", "model_name"]

    def filter_gold(self, queryset, name, value):
        return queryset.filter(gold_choice__isnull=not value)

    def filter_complete(self, queryset, name, value):
        reached = {"judgment_count__gte": F("project__target_judgments")}
        return queryset.filter(**reached) if value else queryset.exclude(**reached)

    def filter_model_name(self, queryset, name, value):
        return queryset.filter(
            Q(response_a__model_name=value) | Q(response_b__model_name=value)
        )


class _SubmittedFilter(django_filters.FilterSet):
    submitted_after = django_filters.DateTimeFilter(
        field_name="submitted_at",
        lookup_expr="gte",
        label="Submitted at or after this ISO 8601 date or time.",
    )
    submitted_before = django_filters.DateTimeFilter(
        field_name="submitted_at",
        lookup_expr="lt",
        label="Submitted before this ISO 8601 date or time.",
    )


PICKED_SIDES = (
    ("left", "left"),
    ("right", "right"),
    (Choice.TIE, "tie"),
    (Choice.BOTH_BAD, "both bad"),
)
_SIDE_QUERIES = {
    "left": Q(choice=Choice.FIRST, left_is_first=True)
    | Q(choice=Choice.SECOND, left_is_first=False),
    "right": Q(choice=Choice.SECOND, left_is_first=True)
    | Q(choice=Choice.FIRST, left_is_first=False),
    Choice.TIE: Q(choice=Choice.TIE),
    Choice.BOTH_BAD: Q(choice=Choice.BOTH_BAD),
}


RESEARCHER_JUDGMENT_FILTERS = ("annotator", "origin", "choice", "comparison", "is_gold")
RESEARCHER_ONLY = (
    "The {name!r} filter is for researchers; filter your judgments by picked_side "
    "(left, right, tie, both_bad), submitted_after or submitted_before."
)


class AnnotatorJudgmentFilter(_SubmittedFilter):
    """Filters an annotator may use on their own judgments: by the side they picked.

    Never by the canonical choice: `?choice=first` next to the sides shown would
    tell which response was the comparison's first (annotation is blind).
    """

    picked_side = django_filters.ChoiceFilter(
        choices=PICKED_SIDES,
        method="filter_picked_side",
        label="The side you picked: left, right, tie or both_bad.",
    )

    class Meta:
        model = Judgment
        fields = ["picked_side", "submitted_after", "submitted_before"]

    def is_valid(self) -> bool:
        """A researcher's filter (`?choice=first`) is an error here, not silently
        ignored: the annotator would take the full list for a filtered one."""
        valid = super().is_valid()
        for name in RESEARCHER_JUDGMENT_FILTERS:
            if name in self.data:
                self.form.add_error(None, RESEARCHER_ONLY.format(name=name))
                valid = False
        return valid

    def filter_picked_side(self, queryset, name, value):
        return queryset.filter(_SIDE_QUERIES[value])


class JudgmentFilter(_SubmittedFilter):
    """Researchers' filters: canonical choice, annotator, origin, gold."""

    choice = django_filters.ChoiceFilter(choices=Choice.choices)
    annotator = django_filters.CharFilter(
        field_name="annotator__username", label="Annotator's username."
    )
    origin = django_filters.ChoiceFilter(choices=Judgment.Origin.choices)
    is_gold = StrictBooleanFilter()

    class Meta:
        model = Judgment
        fields = [
            "annotator",
            "origin",
            "choice",
            "comparison",
            "is_gold",
            "submitted_after",
            "submitted_before",
        ]
