"""What the PostgreSQL benchmarks share: a bench database of their own, and Django
set up on it with production settings (DEBUG off: no query log growing over
thousands of calls)."""

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent


def database_url(server_url: str, name: str, *, bench: str) -> str:
    """The URL of database `name` on the server of `server_url` (PostgreSQL only)."""
    parts = urlsplit(server_url)
    if not parts.scheme.startswith("postgres"):
        sys.exit(f"{bench} needs PostgreSQL; got {server_url!r}")
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(server_url: str, name: str, *, reuse: bool = False) -> bool:
    """(Re)create the bench database; return True when it must be loaded."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists and reuse:
            return False
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return True


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(40))
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
