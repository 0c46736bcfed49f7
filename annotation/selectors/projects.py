"""Reads about projects and their members, scoped to what a user may see."""

from django.db.models import QuerySet

from annotation.models import Membership, Project, Role
from annotation.permissions import projects_for, role_for


def project_list(*, user) -> QuerySet[Project]:
    """Projects the user belongs to (all of them for a superuser), by slug."""
    return projects_for(user, Role.ANNOTATOR).order_by("slug")


def project_get(*, user, slug: str) -> tuple[Project, str] | None:
    """The project `slug` and the user's role in it, or None when not a member.

    A project the user does not belong to reads as absent, so its name does not leak.
    """
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        return None
    role = role_for(user, project)
    if role is None:
        return None
    return project, role


def membership_list(*, project: Project) -> QuerySet[Membership]:
    """Members of a project with their user, by username."""
    return (
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("user__username")
    )


def roles_by_project(*, user) -> dict[int, str]:
    """Project id -> the user's role, for every project the user can see."""
    if user.is_superuser:
        return dict.fromkeys(Project.objects.values_list("pk", flat=True), Role.ADMIN)
    return dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
