"""Page routes of the annotation app."""

from django.urls import path

from annotation.views import dashboard, imports, judgments, projects, tasks

urlpatterns = [
    path("", projects.project_list, name="project-list"),
    path("projects/<slug:slug>/annotate/", tasks.annotate, name="annotate"),
    path("projects/<slug:slug>/annotate/next/", tasks.task_next, name="task-next"),
    path(
        "projects/<slug:slug>/annotate/<int:assignment_id>/judge/",
        tasks.task_judge,
        name="task-judge",
    ),
    path(
        "projects/<slug:slug>/annotate/<int:assignment_id>/skip/",
        tasks.task_skip,
        name="task-skip",
    ),
    path("projects/<slug:slug>/dashboard/", dashboard.dashboard, name="dashboard"),
    path("projects/<slug:slug>/import/", imports.import_page, name="import-page"),
    path(
        "projects/<slug:slug>/dashboard/stats/",
        dashboard.dashboard_stats,
        name="dashboard-stats",
    ),
    path(
        "projects/<slug:slug>/judgments/", judgments.judgment_list, name="judgment-list"
    ),
    path(
        "projects/<slug:slug>/judgments.csv",
        judgments.judgment_csv,
        name="judgment-csv",
    ),
    path(
        "projects/<slug:slug>/comparisons/<int:comparison_id>/",
        judgments.comparison_page,
        name="comparison-detail",
    ),
    path(
        "projects/<slug:slug>/comparisons/<int:comparison_id>/gold/",
        judgments.comparison_gold,
        name="comparison-gold",
    ),
]
