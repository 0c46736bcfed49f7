"""Error pages: JSON for the API (the shape DRF's own errors have), HTML elsewhere.

A URL under /api/ that matches no route (`/api/v1/assignments/abc/judgment/`) is
answered by Django, not DRF; without these handlers an API client got Django's HTML
404 page.
"""

from django.http import JsonResponse
from django.views import defaults

API_PREFIX = "/api/"
NOT_FOUND = "Not found: no API endpoint at {path}. See /api/docs/ for the endpoints."
SERVER_ERROR = "Server error; it has been logged."


def page_not_found(request, exception):
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse({"detail": NOT_FOUND.format(path=request.path)}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse({"detail": SERVER_ERROR}, status=500)
    return defaults.server_error(request)
