"""Researcher pages: the judgments browser, its CSV download, comparison detail and
marking a comparison gold."""

import csv

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from annotation.models import Choice, Judgment, Project, Role
from annotation.selectors.judgments import (
    CSV_COLUMNS,
    JudgmentFilters,
    comparison_detail,
    comparison_judgments,
    csv_row,
    judgment_browse,
    project_annotators,
)
from annotation.services.comparisons import comparison_update
from annotation.views.access import PageError, project_page

PAGE_SIZE = 50
COMPARISON_NOT_FOUND = "No such comparison in this project."
GOLD_SET = "Comparison {id} is now gold with answer '{choice}'."
GOLD_CLEARED = "Comparison {id} is no longer gold."
# Cells starting with these are formulas to a spreadsheet; prefix them with a quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class JudgmentFilterForm(forms.Form):
    # By username, as the API's `?annotator=` is: one URL for both, and readable.
    annotator = forms.ChoiceField(required=False)
    choice = forms.ChoiceField(
        required=False, choices=[("", "Any")] + list(Choice.choices)
    )
    origin = forms.ChoiceField(
        required=False, choices=[("", "Any")] + list(Judgment.Origin.choices)
    )
    gold = forms.ChoiceField(
        required=False,
        choices=[("", "Any"), ("yes", "Gold only"), ("no", "Non-gold only")],
    )
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["annotator"].choices = [("", "Any")] + [
            (user.username, user.username)
            for user in project_annotators(project=project)
        ]

    def filters(self) -> JudgmentFilters:
        data = self.cleaned_data
        gold = {"yes": True, "no": False}.get(data["gold"])
        return JudgmentFilters(
            annotator=data["annotator"] or None,
            choice=data["choice"] or None,
            origin=data["origin"] or None,
            gold=gold,
            date_from=data["date_from"],
            date_to=data["date_to"],
        )


class GoldForm(forms.Form):
    gold_choice = forms.ChoiceField(
        required=False,
        choices=[("", "Not gold")] + list(Choice.choices),
        label="Gold answer",
    )

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        # The select offers only the answers the project allows; a posted one it
        # forbids still reaches the service, which says why it is refused.
        self.fields["gold_choice"].widget.choices = [
            (value, label)
            for value, label in self.fields["gold_choice"].choices
            if (value != Choice.TIE or project.allow_tie)
            and (value != Choice.BOTH_BAD or project.allow_both_bad)
        ]


def _filter_form(request: HttpRequest, project: Project) -> JudgmentFilterForm:
    form = JudgmentFilterForm(request.GET, project=project)
    if not form.is_valid():
        problems = "; ".join(
            f"{name}: {' '.join(errors)}" for name, errors in form.errors.items()
        )
        raise PageError(400, f"Invalid filter: {problems}")
    return form


@project_page(Role.RESEARCHER)
def judgment_list(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    form = _filter_form(request, project)
    judgments = judgment_browse(project=project, filters=form.filters())
    page = Paginator(judgments, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "annotation/judgment_list.html",
        {"project": project, "form": form, "page": page, "query": query.urlencode()},
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value) -> str:
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


@project_page(Role.RESEARCHER)
def judgment_csv(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    """Stream the filtered judgments as CSV (formula-like cells are neutralised)."""
    judgments = judgment_browse(
        project=project, filters=_filter_form(request, project).filters()
    )
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for judgment in judgments.iterator(chunk_size=2000):
            yield writer.writerow([_csv_safe(v) for v in csv_row(judgment)])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{project.slug}-judgments.csv"'
    )
    return response


def _comparison_or_404(project: Project, comparison_id: int):
    comparison = comparison_detail(project=project, comparison_id=comparison_id)
    if comparison is None:
        raise PageError(404, COMPARISON_NOT_FOUND)
    return comparison


@project_page(Role.RESEARCHER)
def comparison_page(
    request: HttpRequest, project: Project, role: str, comparison_id: int
) -> HttpResponse:
    comparison = _comparison_or_404(project, comparison_id)
    return render(
        request,
        "annotation/comparison_detail.html",
        {
            "project": project,
            "comparison": comparison,
            "judgments": comparison_judgments(comparison=comparison),
            "gold_form": GoldForm(
                initial={"gold_choice": comparison.gold_choice or ""}, project=project
            ),
        },
    )


@require_POST
@project_page(Role.RESEARCHER)
def comparison_gold(
    request: HttpRequest, project: Project, role: str, comparison_id: int
) -> HttpResponse:
    """Mark the comparison gold with a canonical answer, or clear it."""
    comparison = _comparison_or_404(project, comparison_id)
    form = GoldForm(request.POST, project=project)
    if not form.is_valid():
        raise PageError(400, " ".join(form.errors["gold_choice"]))
    choice = form.cleaned_data["gold_choice"] or None
    try:
        comparison_update(comparison=comparison, gold_choice=choice)
    except ValidationError as error:
        raise PageError(400, " ".join(error.messages)) from error
    if choice is None:
        messages.success(request, GOLD_CLEARED.format(id=comparison.pk))
    else:
        messages.success(request, GOLD_SET.format(id=comparison.pk, choice=choice))
    return redirect("comparison-detail", slug=project.slug, comparison_id=comparison.pk)
