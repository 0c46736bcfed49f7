"""Role checks for project pages, with 403/404 pages that say what went wrong."""

import functools

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation.models import Role
from annotation.permissions import ROLE_RANK
from annotation.selectors.projects import project_get

NOT_A_MEMBER = "No such project, or you are not a member of it."
RESEARCHERS_ONLY = "Only researchers and admins of this project can see this page."


class PageError(Exception):
    """Raise in a project page to answer with `status` and a readable message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_page(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return render(
        request,
        "annotation/error.html",
        {"status": status, "message": message},
        status=status,
    )


def project_page(minimum: str = Role.ANNOTATOR):
    """Decorate a view `(request, project, role, **kwargs)` taking a `slug` URL part.

    Outsiders get 404 (a project they do not belong to reads as absent); members
    below `minimum` get 403.
    """

    def decorate(view):
        @login_required
        @functools.wraps(view)
        def wrapper(request: HttpRequest, slug: str, **kwargs) -> HttpResponse:
            found = project_get(user=request.user, slug=slug)
            if found is None:
                return error_page(request, 404, NOT_A_MEMBER)
            project, role = found
            if ROLE_RANK[role] < ROLE_RANK[minimum]:
                return error_page(request, 403, RESEARCHERS_ONLY)
            try:
                return view(request, project, role, **kwargs)
            except PageError as error:
                return error_page(request, error.status, error.message)

        return wrapper

    return decorate
