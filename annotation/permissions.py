"""Who may do what in a project: roles from `Membership`, superusers see everything.

Annotators see only their own tasks and judgments; researchers see and manage the
data of their projects; project admins also manage members; superusers are admins of
every project.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework.permissions import BasePermission

from annotation.models import Membership, Project, Role

ROLE_RANK = {Role.ANNOTATOR: 1, Role.RESEARCHER: 2, Role.ADMIN: 3}
UNKNOWN_USER = "No active user {name!r}; pass --user with an existing username."
NOT_RESEARCHER = (
    "User {name!r} is not a researcher or admin of {slug!r}; add them with "
    "`manage.py add_member {slug} {name} --role researcher` or pass another --user."
)


def role_for(user: AbstractBaseUser | AnonymousUser, project: Project) -> str | None:
    """Return the user's role in `project` (superusers are admins), or None."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    return (
        Membership.objects.filter(user=user, project=project)
        .values_list("role", flat=True)
        .first()
    )


def has_role(user, project: Project, minimum: str) -> bool:
    """True when the user's role in `project` is at least `minimum`."""
    role = role_for(user, project)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def projects_for(user, minimum: str = Role.ANNOTATOR):
    """Projects where the user holds at least `minimum`."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    allowed = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[minimum]]
    return Project.objects.filter(
        memberships__user=user, memberships__role__in=allowed
    ).distinct()


class IsProjectResearcher(BasePermission):
    """Object permission for views whose object is (or belongs to) a project."""

    message = "You need the researcher or admin role in this project."

    def has_object_permission(self, request, view, obj) -> bool:
        project = obj if isinstance(obj, Project) else obj.project
        return has_role(request.user, project, Role.RESEARCHER)


def command_creator(name: str, project: Project | None):
    """The user a management command records as creator (`--user NAME`), or None.

    The name must be an active user's and, where the work belongs to a project, a
    researcher's (or admin's) of it; ValueError says which of the two failed.
    """
    from django.contrib.auth import get_user_model

    if not name:
        return None
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: name}, is_active=True).first()
    if user is None:
        raise ValueError(UNKNOWN_USER.format(name=name))
    if project is not None and not has_role(user, project, Role.RESEARCHER):
        raise ValueError(NOT_RESEARCHER.format(name=name, slug=project.slug))
    return user
