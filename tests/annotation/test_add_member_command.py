"""`manage.py add_member`: roles, account creation, tokens and errors with the fix."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from annotation.management.commands import add_member
from annotation.models import Membership

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("add_member", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_gives_an_existing_user_a_role(project, outsider):
    out, _ = run("demo", "outsider", "--role", "researcher")
    assert Membership.objects.get(user=outsider, project=project).role == "researcher"
    assert "'outsider' is now researcher of project 'demo'" in out


def test_changes_the_role_of_a_member(project, annotator):
    run("demo", "ann", "--role", "admin")
    assert Membership.objects.get(user=annotator).role == "admin"
    assert Membership.objects.filter(user=annotator).count() == 1


def test_creates_a_user_with_a_password_that_logs_in(project, client):
    run(
        "demo",
        "newbie",
        "--role",
        "annotator",
        "--create",
        "--password",
        "Tr0ub4dor&3x",
    )
    assert client.login(username="newbie", password="Tr0ub4dor&3x")


def test_creates_a_token_only_user_and_prints_just_the_token(project):
    out, err = run("demo", "bot", "--role", "annotator", "--create", "--print-token")
    user = get_user_model().objects.get(username="bot")
    assert not user.has_usable_password()
    assert out.strip() == Token.objects.get(user=user).key
    assert "only use its API token" in err
    again, _ = run("demo", "bot", "--role", "annotator", "--print-token")
    assert again == out


def test_password_prompt_asks_twice(project, monkeypatch, client):
    answers = iter(["Tr0ub4dor&3x", "Tr0ub4dor&3x"])
    monkeypatch.setattr(add_member.getpass, "getpass", lambda prompt: next(answers))
    run("demo", "typed", "--role", "annotator", "--create", "--password-prompt")
    assert client.login(username="typed", password="Tr0ub4dor&3x")


def test_password_prompt_mismatch_changes_nothing(project, monkeypatch):
    answers = iter(["Tr0ub4dor&3x", "different"])
    monkeypatch.setattr(add_member.getpass, "getpass", lambda prompt: next(answers))
    with pytest.raises(CommandError, match=add_member.PASSWORDS_DIFFER):
        run("demo", "typed", "--role", "annotator", "--create", "--password-prompt")
    assert not get_user_model().objects.filter(username="typed").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("nope", "ann", "--role", "annotator"),
            "No project 'nope'. Existing projects: demo.",
        ),
        (("demo", "ghost", "--role", "annotator"), "Add --create"),
        (("demo", "ann", "--role", "owner"), "use --role annotator, researcher"),
        (
            ("demo", "ann", "--role", "admin", "--password", "x"),
            "manage.py changepassword ann",
        ),
        (
            ("demo", "new", "--role", "admin", "--create", "--password", "123"),
            "Password rejected",
        ),
        (
            ("demo", "bad name!", "--role", "admin", "--create"),
            "Cannot create user",
        ),
    ],
)
def test_user_errors_say_how_to_fix_them_and_write_nothing(
    project, annotator, args, message
):
    users_before = get_user_model().objects.count()
    with pytest.raises(CommandError, match=message.replace(".", r"\.")):
        run(*args)
    assert get_user_model().objects.count() == users_before
    assert Membership.objects.get(user=annotator).role == "annotator"


def test_command_line_exit_status_and_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "add_member", "nope", "x", "--role", "owner"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "DEBUG": "1", "PREFLINE_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "CommandError: Unknown role 'owner'" in result.stderr
