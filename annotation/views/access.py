"""Role checks for project pages, with 403/404 pages that say what went wrong."""

import functools

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from annotation.models import Role
from annotation.permissions import ROLE_RANK
from annotation.selectors.projects import project_get

NOT_A_MEMBER = "No such project, or you are not a member of it."
RESEARCHERS_ONLY = "Only researchers and admins of this project can see this page."
LOGGED_OUT = (
    "You are logged out (or your session expired), so this was not saved. Log in "
    "again and answer the task once more."
)
# The task page's script asks for fragments with this header.
FRAGMENT_HEADER = "X-Requested-With"
FRAGMENT_VALUE = "fetch"


def is_fragment(request: HttpRequest) -> bool:
    return request.headers.get(FRAGMENT_HEADER) == FRAGMENT_VALUE


def _logged_out(request: HttpRequest, slug: str) -> HttpResponse:
    """A fragment request gets a 401 the script shows (a redirect would paste the
    login page into the task); a page goes to the login page, which comes back to
    the page, or for a POST (judge, skip: POST-only URLs) to the project's tasks."""
    back = reverse("annotate", args=[slug])
    if is_fragment(request):
        login = f"{reverse('login')}?next={back}"
        html = format_html(
            '<p data-status="401">{} <a href="{}">Log in</a></p>', LOGGED_OUT, login
        )
        return HttpResponse(html, status=401)
    return redirect_to_login(
        request.get_full_path() if request.method == "GET" else back
    )


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
        @functools.wraps(view)
        def wrapper(request: HttpRequest, slug: str, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return _logged_out(request, slug)
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
