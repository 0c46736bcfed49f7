"""Page routes of the annotation app."""

from django.urls import path

from annotation.views import projects

urlpatterns = [
    path("", projects.project_list, name="project-list"),
]
