"""Researcher import page: upload a file, see every earlier attempt and its errors.

A POST imports the file and redirects back (post/redirect/get), with a message that
says what happened; a rejected file shows up at the top of the list with its errors.
"""

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from annotation.importers.records import FORMATS
from annotation.models import Project, Role, Split
from annotation.selectors.imports import import_batch_list
from annotation.services.imports import ImportRejected, batch_summary, import_upload
from annotation.views.access import project_page

BATCHES_SHOWN = 50
REJECTED = "{headline} Its errors are listed below."


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A .jsonl, .json (array), .csv or .parquet file.")
    format = forms.ChoiceField(
        choices=[("", "Detect from the first record"), *((f, f) for f in FORMATS)],
        required=False,
    )
    split = forms.ChoiceField(choices=Split.choices, initial=Split.TRAIN)
    pairs_per_prompt = forms.IntegerField(
        min_value=1,
        required=False,
        help_text="Comparisons per prompt for prompt+responses files (empty: all).",
    )
    seed = forms.IntegerField(initial=0, required=False)


@project_page(Role.RESEARCHER)
def import_page(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            batch = import_upload(
                project=project,
                upload=data["file"],
                user=request.user,
                format=data["format"] or None,
                split=data["split"],
                pairs_per_prompt=data["pairs_per_prompt"],
                seed=data["seed"] or 0,
            )
        except ImportRejected as exc:
            headline = str(exc).splitlines()[0]
            messages.error(request, REJECTED.format(headline=headline))
        else:
            report = messages.warning if batch.already_imported else messages.success
            report(request, batch_summary(batch))
        return redirect("import-page", slug=project.slug)
    batches = import_batch_list(project=project)[:BATCHES_SHOWN]
    return render(
        request,
        "annotation/import_page.html",
        {"project": project, "form": form, "batches": batches, "formats": FORMATS},
        status=400 if form.errors else 200,
    )
