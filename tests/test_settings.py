"""Settings: production checks, the SECRET_KEY guard, DATABASE_URL, migrations."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config import settings as prefline_settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh interpreter with exactly `env` (plus PATH)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "prefline.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://prefline.example.org",
        "DATABASE_URL": "postgres://prefline:secret@db.example.org:5432/prefline",
        "PREFLINE_DATA_DIR": str(tmp_path),
    }


def test_check_deploy_is_clean_with_production_variables(tmp_path):
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env=production_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_catches_an_insecure_production(tmp_path):
    """The check above can fail: relaxing HTTPS in production is reported."""
    env = production_env(tmp_path) | {"SECURE_SSL_REDIRECT": "0"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout


def test_missing_secret_key_without_debug_stops_with_the_fix(tmp_path):
    env = production_env(tmp_path) | {"SECRET_KEY": ""}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "DEBUG=1" in result.stderr


def test_debug_runs_without_a_secret_key(tmp_path):
    env = {"DEBUG": "1", "SECRET_KEY": "", "PREFLINE_DATA_DIR": str(tmp_path)}
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def database_env(monkeypatch):
    monkeypatch.delenv("PREFLINE_TEST_DB_NAME", raising=False)

    def _set(url: str | None):
        if url is None:
            monkeypatch.delenv("DATABASE_URL", raising=False)
        else:
            monkeypatch.setenv("DATABASE_URL", url)
        return prefline_settings._database_config()

    return _set


def test_database_url_postgres(database_env):
    config = database_env("postgres://alice:s3cret@db.example.org:6543/prefline")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == (
        "prefline",
        "alice",
        "s3cret",
    )
    assert (config["HOST"], config["PORT"]) == ("db.example.org", 6543)
    assert "transaction_mode" not in config.get("OPTIONS", {})


def test_database_url_sqlite_file(database_env, tmp_path):
    path = tmp_path / "x.sqlite3"
    config = database_env(f"sqlite:///{path}")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(path)
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_default_database_is_sqlite_in_the_data_dir(database_env):
    config = database_env(None)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(config["NAME"]) == prefline_settings.DATA_DIR / "prefline.sqlite3"


def test_test_database_name_comes_from_the_environment(database_env, monkeypatch):
    monkeypatch.setenv("PREFLINE_TEST_DB_NAME", "test_someone")
    config = database_env("postgres://postgres@127.0.0.1:5432/test")
    assert config["TEST"] == {"NAME": "test_someone"}


def test_models_and_migrations_agree(tmp_path):
    result = manage(
        "makemigrations",
        "--check",
        "--dry-run",
        env={"DEBUG": "1", "PREFLINE_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
