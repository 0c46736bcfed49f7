"""Routes of the annotation API (mounted under /api/v1/)."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from annotation.api import imports as import_views
from annotation.api import tasks as task_views
from annotation.api import views as api_views

router = DefaultRouter()
router.register("projects", api_views.ProjectViewSet, basename="api-project")
_in_project = r"projects/(?P<project_slug>[-a-zA-Z0-9_]+)"
router.register(
    f"{_in_project}/members", api_views.MembershipViewSet, basename="api-member"
)
router.register(
    f"{_in_project}/prompts", api_views.PromptViewSet, basename="api-prompt"
)
router.register(
    f"{_in_project}/responses", api_views.ResponseViewSet, basename="api-response"
)
router.register(
    f"{_in_project}/comparisons",
    api_views.ComparisonViewSet,
    basename="api-comparison",
)
router.register(
    f"{_in_project}/judgments", api_views.JudgmentViewSet, basename="api-judgment"
)
router.register(
    f"{_in_project}/imports", import_views.ImportBatchViewSet, basename="api-import"
)

urlpatterns = [
    path("auth/token/", api_views.TokenView.as_view(), name="api-token"),
    path(
        "projects/<slug:slug>/next-task/",
        task_views.NextTaskView.as_view(),
        name="api-next-task",
    ),
    path(
        "assignments/<int:assignment_id>/judgment/",
        task_views.JudgmentView.as_view(),
        name="api-assignment-judgment",
    ),
    path(
        "assignments/<int:assignment_id>/skip/",
        task_views.SkipView.as_view(),
        name="api-assignment-skip",
    ),
    *router.urls,
]
