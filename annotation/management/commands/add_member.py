"""`manage.py add_member PROJECT USERNAME --role ROLE [--create] [--print-token]`."""

import getpass
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.models import Project, Role
from annotation.services.projects import membership_set, token_issue, user_create

UNKNOWN_ROLE = "Unknown role {role!r}: use --role annotator, researcher or admin."
UNKNOWN_PROJECT = (
    "No project {slug!r}. Existing projects: {existing}. Create one in the admin "
    "(/admin/annotation/project/add/) or with POST /api/v1/projects/."
)
UNKNOWN_USER = "No user {username!r}. Add --create to create the account."
PASSWORD_NEEDS_CREATE = (
    "User {username!r} already exists; --password/--password-prompt only apply with "
    "--create. Change a password with `manage.py changepassword {username}`."
)
PASSWORDS_DIFFER = "The two passwords differ; nothing was changed."
BOTH_PASSWORD_OPTIONS = "Use either --password or --password-prompt, not both."


@dataclass(frozen=True)
class AddMemberConfig:
    project: str = field(metadata={"help": "Slug of the project."})
    username: str = field(metadata={"help": "Login name of the member."})
    role: str = field(metadata={"help": "annotator, researcher or admin."})
    create: bool = field(
        default=False, metadata={"help": "Create the user when it does not exist."}
    )
    password: str | None = field(
        default=None, metadata={"help": "Password for a created user."}
    )
    password_prompt: bool = field(
        default=False, metadata={"help": "Ask for the created user's password."}
    )
    print_token: bool = field(
        default=False, metadata={"help": "Print the user's API token on stdout."}
    )

    def __post_init__(self):
        if self.role not in Role.values:
            raise CommandError(UNKNOWN_ROLE.format(role=self.role))
        if self.password is not None and self.password_prompt:
            raise CommandError(BOTH_PASSWORD_OPTIONS)


@dataclass(frozen=True)
class AddMemberResult:
    summary: str
    token: str | None


def _read_password() -> str:
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise CommandError(PASSWORDS_DIFFER)
    return first


def run_add_member(config: AddMemberConfig) -> AddMemberResult:
    """Give the user the role in the project, creating the user when asked."""
    project = Project.objects.filter(slug=config.project).first()
    if project is None:
        existing = ", ".join(Project.objects.values_list("slug", flat=True)) or "none"
        raise CommandError(
            UNKNOWN_PROJECT.format(slug=config.project, existing=existing)
        )
    user = get_user_model().objects.filter(username=config.username).first()
    wants_password = config.password is not None or config.password_prompt
    if user is not None and wants_password:
        raise CommandError(PASSWORD_NEEDS_CREATE.format(username=config.username))
    created = user is None
    if created and not config.create:
        raise CommandError(UNKNOWN_USER.format(username=config.username))
    # Ask before the transaction: SQLite would hold its write lock during the prompt.
    password = _read_password() if created and config.password_prompt else None
    with transaction.atomic():
        if created:
            user = _create_user(config.username, password or config.password)
        membership = membership_set(project=project, user=user, role=config.role)
        token = token_issue(user=user).key if config.print_token else None
    summary = (
        f"{'Created user' if created else 'User'} {user.username!r} is now "
        f"{membership.role} of project {project.slug!r}."
    )
    if created and not wants_password:
        summary += " The account has no password: it can only use its API token."
    return AddMemberResult(summary=summary, token=token)


def _create_user(username: str, password: str | None):
    if password is not None:
        try:
            validate_password(password, user=get_user_model()(username=username))
        except ValidationError as exc:
            raise CommandError("Password rejected: " + " ".join(exc.messages)) from exc
    try:
        return user_create(username=username, password=password)
    except ValidationError as exc:
        raise CommandError("Cannot create user: " + " ".join(exc.messages)) from exc


class Command(BaseCommand):
    help = (
        "Give USERNAME a role in PROJECT (annotator, researcher or admin). With "
        "--print-token only the API token goes to stdout, so a script can capture it."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project slug.")
        parser.add_argument("username")
        parser.add_argument(
            "--role", required=True, help="annotator, researcher or admin."
        )
        parser.add_argument(
            "--create", action="store_true", help="Create the user if missing."
        )
        parser.add_argument("--password", help="Password for the created user.")
        parser.add_argument(
            "--password-prompt",
            action="store_true",
            help="Ask for the created user's password (typed twice).",
        )
        parser.add_argument(
            "--print-token", action="store_true", help="Print the API token."
        )

    def handle(self, *args, **options):
        config = AddMemberConfig(
            project=options["project"],
            username=options["username"],
            role=options["role"],
            create=options["create"],
            password=options["password"],
            password_prompt=options["password_prompt"],
            print_token=options["print_token"],
        )
        result = run_add_member(config)
        if result.token is None:
            self.stdout.write(self.style.SUCCESS(result.summary))
        else:
            self.stderr.write(result.summary)
            self.stdout.write(result.token)
