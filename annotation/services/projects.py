"""Projects and memberships."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.models import Membership, Project, Role

UNKNOWN_ROLE = "Unknown role {role!r}; choose one of: annotator, researcher, admin."
UNKNOWN_ASPECT_FORMAT = "Aspects must be a list of distinct non-empty names."


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
    aspects = list(aspects or [])
    if any(not isinstance(a, str) or not a.strip() for a in aspects) or len(
        set(aspects)
    ) != len(aspects):
        raise ValidationError({"aspects": UNKNOWN_ASPECT_FORMAT})
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
    *, username: str, password: str | None = None, email: str = ""
) -> AbstractBaseUser:
    """Create a login; without a password the account can only use an API token."""
    User = get_user_model()
    user = User(username=username, email=email)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user
