"""Page routes of the exports app."""

from django.urls import path

from exports import views

urlpatterns = [
    path("projects/<slug:slug>/exports/", views.snapshot_list, name="snapshot-list"),
    path(
        "projects/<slug:slug>/exports/<int:pk>/",
        views.snapshot_detail,
        name="snapshot-detail",
    ),
    path(
        "projects/<slug:slug>/exports/<int:pk>/download.zip",
        views.snapshot_download,
        name="snapshot-download",
    ),
]
