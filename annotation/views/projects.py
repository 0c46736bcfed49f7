"""Project list: the landing page after login, with the user's own progress."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import Role
from annotation.permissions import ROLE_RANK, role_for
from annotation.selectors.dashboard import own_progress
from annotation.selectors.projects import project_list as projects_of


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    rows = []
    for project in projects_of(user=request.user):
        role = role_for(request.user, project)
        rows.append(
            {
                "project": project,
                "role": role,
                "is_researcher": ROLE_RANK[role] >= ROLE_RANK[Role.RESEARCHER],
                "progress": own_progress(project=project, user=request.user),
            }
        )
    return render(request, "annotation/project_list.html", {"rows": rows})
