"""Researcher dashboard: progress, per-annotator quality, agreement, position bias.

The page polls `dashboard-stats` (an HTML fragment of the numbers) so it stays live
without a full reload.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import Project, Role
from annotation.selectors.dashboard import project_dashboard
from annotation.views.access import project_page

REFRESH_SECONDS = 10


@project_page(Role.RESEARCHER)
def dashboard(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    return render(
        request,
        "annotation/dashboard.html",
        {
            "project": project,
            "dash": project_dashboard(project=project),
            "refresh_seconds": REFRESH_SECONDS,
        },
    )


@project_page(Role.RESEARCHER)
def dashboard_stats(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    """The numbers only, as an HTML fragment for the page's periodic refresh."""
    return render(
        request,
        "annotation/_dashboard_stats.html",
        {"project": project, "dash": project_dashboard(project=project)},
    )
