"""Project list: the landing page after login."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.permissions import projects_for


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "annotation/project_list.html",
        {"projects": projects_for(request.user)},
    )
