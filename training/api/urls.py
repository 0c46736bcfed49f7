"""Routes of the training API (mounted under /api/v1/)."""

from django.urls import path

from training.api import views

urlpatterns = [
    path("runs/", views.RunListView.as_view(), name="api-run-list"),
    path("runs/<int:run_id>/", views.RunDetailView.as_view(), name="api-run-detail"),
    path(
        "runs/<int:run_id>/cancel/",
        views.RunCancelView.as_view(),
        name="api-run-cancel",
    ),
    path(
        "runs/<int:run_id>/metrics/",
        views.RunMetricsView.as_view(),
        name="api-run-metrics",
    ),
    path(
        "runs/<int:run_id>/warnings/",
        views.RunWarningsView.as_view(),
        name="api-run-warnings",
    ),
    path(
        "runs/<int:run_id>/checkpoints/",
        views.RunCheckpointsView.as_view(),
        name="api-run-checkpoints",
    ),
    path("runs/<int:run_id>/log/", views.RunLogView.as_view(), name="api-run-log"),
    path("training-recipes/", views.RecipeListView.as_view(), name="api-recipe-list"),
]
