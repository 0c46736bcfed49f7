"""Projects and memberships."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotation.models import Membership, Project, Role

UNKNOWN_ROLE = "Unknown role {role!r}; choose one of: annotator, researcher, admin."
UNKNOWN_ASPECT_FORMAT = "Aspects must be a list of distinct non-empty names."
TARGET_TOO_LOW = "Target judgments per comparison must be at least 1."
LEASE_TOO_SHORT = "The lease must be at least 10 seconds."
GOLD_RATE_RANGE = "The gold rate is a share of tasks: between 0 and 1."


def project_settings_check(project: Project) -> None:
    """Explain range errors per field (the database constraints are the last guard)."""
    errors = {}
    if project.target_judgments is not None and project.target_judgments < 1:
        errors["target_judgments"] = TARGET_TOO_LOW
    if project.lease_seconds is not None and project.lease_seconds < 10:
        errors["lease_seconds"] = LEASE_TOO_SHORT
    if project.gold_rate is not None and not 0 <= project.gold_rate <= 1:
        errors["gold_rate"] = GOLD_RATE_RANGE
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def project_create(
    *,
    slug: str,
    name: str,
    guidelines: str = "",
    aspects: list[str] | None = None,
    target_judgments: int = 3,
    lease_seconds: int = 600,
    allow_tie: bool = True,
    allow_both_bad: bool = True,
    gold_rate: float = 0.0,
) -> Project:
    """Create a project, validating every field (constraints are the last guard)."""
    aspects = aspects_check(aspects)
    project = Project(
        slug=slug,
        name=name,
        guidelines=guidelines,
        aspects=aspects,
        target_judgments=target_judgments,
        lease_seconds=lease_seconds,
        allow_tie=allow_tie,
        allow_both_bad=allow_both_bad,
        gold_rate=gold_rate,
    )
    project_settings_check(project)
    project.full_clean()
    project.save()
    return project


@transaction.atomic
def membership_set(
    *, project: Project, user: AbstractBaseUser, role: str
) -> Membership:
    """Give `user` exactly `role` in `project` (creating or changing the membership)."""
    if role not in Role.values:
        raise ValidationError({"role": UNKNOWN_ROLE.format(role=role)})
    membership, _ = Membership.objects.update_or_create(
        user=user, project=project, defaults={"role": role}
    )
    return membership


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str | None = None,
    email: str = "",
    superuser: bool = False,
) -> AbstractBaseUser:
    """Create a login; without a password the account can only use an API token.

    A superuser (staff too) sees every project and the Django admin.
    """
    User = get_user_model()
    user = User(
        username=username, email=email, is_superuser=superuser, is_staff=superuser
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user


PROJECT_UPDATABLE_FIELDS = (
    "name",
    "guidelines",
    "aspects",
    "target_judgments",
    "lease_seconds",
    "allow_tie",
    "allow_both_bad",
    "gold_rate",
)
UNKNOWN_PROJECT_FIELD = "Cannot change {field!r}; changeable fields: {allowed}."


def aspects_check(aspects) -> list[str]:
    """The aspect names as a list; raise ValidationError unless distinct, non-empty."""
    aspects = list(aspects or [])
    if any(not isinstance(a, str) or not a.strip() for a in aspects) or len(
        set(aspects)
    ) != len(aspects):
        raise ValidationError({"aspects": UNKNOWN_ASPECT_FORMAT})
    return aspects


@transaction.atomic
def project_update(*, project: Project, **changes) -> Project:
    """Change a project's settings (not its slug, which URLs and exports rely on)."""
    for field in changes:
        if field not in PROJECT_UPDATABLE_FIELDS:
            raise ValidationError(
                {
                    field: UNKNOWN_PROJECT_FIELD.format(
                        field=field, allowed=", ".join(PROJECT_UPDATABLE_FIELDS)
                    )
                }
            )
    if "aspects" in changes:
        changes["aspects"] = aspects_check(changes["aspects"])
    project = Project.objects.select_for_update().get(pk=project.pk)
    for field, value in changes.items():
        setattr(project, field, value)
    project_settings_check(project)
    project.full_clean()
    project.save()
    return project


@transaction.atomic
def membership_remove(*, project: Project, user: AbstractBaseUser) -> bool:
    """Remove the user's role in `project`; their past judgments stay. True if removed.

    Judgments keep their annotator (the foreign key protects them), so removing a
    member never loses annotation work; they just stop receiving tasks.
    """
    deleted, _ = Membership.objects.filter(project=project, user=user).delete()
    return deleted > 0


@transaction.atomic
def token_issue(*, user: AbstractBaseUser, rotate: bool = False) -> Token:
    """Return the user's API token, creating it (or replacing it when `rotate`)."""
    if rotate:
        Token.objects.filter(user=user).delete()
    token, _ = Token.objects.get_or_create(user=user)
    return token
