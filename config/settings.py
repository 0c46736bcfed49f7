"""Prefline settings: one module, driven by environment variables.

Every value a deployment changes comes from the environment (or a `.env` file at the
repository root, which real environment variables override). The defaults give the
embedded set-up: SQLite in the data directory, DEBUG off. `scripts/demo` writes a
`.env` with DEBUG on and a generated SECRET_KEY for local use.

Variables:
    DEBUG                 "1"/"true" turns debug mode on (default off).
    SECRET_KEY            required when DEBUG is off (outside the test runner).
    ALLOWED_HOSTS         comma-separated host names (default localhost names).
    CSRF_TRUSTED_ORIGINS  comma-separated origins, e.g. https://prefline.example.org.
    DATABASE_URL          e.g. postgres://user@host:5432/prefline
                          (default sqlite:///$PREFLINE_DATA_DIR/prefline.sqlite3).
    PREFLINE_DATA_DIR     where the database, snapshots, runs and checkpoints live
                          (default ./data).
    PREFLINE_TEST_DB_NAME name of the test database (lets parallel runs coexist).
    DB_CONN_MAX_AGE       seconds a database connection is kept between requests
                          (default 0; 60 suits gunicorn on PostgreSQL).
    DB_CONN_HEALTH_CHECKS "0" skips the check (a `SELECT 1`) that a kept connection
                          still works before each request uses it (default on).
    DB_PREPARED_STATEMENTS "0" turns PostgreSQL server-side binding and prepared
                          statements off (default on), e.g. behind pgbouncer in
                          transaction pooling mode.
    PREFLINE_PITFALL_THRESHOLDS  JSON object overriding training pitfall thresholds,
                          e.g. {"kl_max": 0.5} (listed in the README).
    PREFLINE_TRAINING_CHECK_MODEL_PATHS  "0" lets the web queue runs whose model path
                          exists only on the worker machines.
    SECURE_SSL_REDIRECT, SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE
                          "0" relaxes that production flag (all on by default when
                          DEBUG is off), e.g. behind a proxy that redirects itself.
"""

import json
import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines from `path` without overriding the real environment."""
    if not path.is_file():
        return
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        os.environ.setdefault(key.strip(), value.strip().strip("'\""))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


_load_dotenv(BASE_DIR / ".env")

RUNNING_TESTS = "pytest" in sys.modules
DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG or RUNNING_TESTS:
        SECRET_KEY = "django-insecure-prefline-development-only-key-not-for-production"
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment (production), "
            "or set DEBUG=1 for local development (scripts/demo writes a .env for you)."
        )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATA_DIR = Path(os.environ.get("PREFLINE_DATA_DIR", BASE_DIR / "data")).resolve()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "annotation",
    "exports",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files in production; runserver and the test live
    # server serve them from the apps themselves.
    *([] if DEBUG or RUNNING_TESTS else ["whitenoise.middleware.WhiteNoiseMiddleware"]),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"


def _database_config() -> dict:
    default_url = f"sqlite:///{DATA_DIR / 'prefline.sqlite3'}"
    url = os.environ.get("DATABASE_URL") or default_url
    if url == default_url:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
    config = dj_database_url.parse(
        url,
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0")),
        conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", True),
    )
    if config["ENGINE"] == "django.db.backends.postgresql" and env_bool(
        "DB_PREPARED_STATEMENTS", True
    ):
        # Server-side parameters, and statements that ran `prepare_threshold` times
        # on a connection prepared: PostgreSQL then skips parsing and planning
        # (most of its CPU for the annotator API's short queries). Off behind a
        # pooler in transaction mode (pgbouncer), which cannot keep them.
        config.setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=5
        )
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the single writer; IMMEDIATE takes the write
        # lock at BEGIN so two writers queue up instead of failing on upgrade.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    test_name = os.environ.get("PREFLINE_TEST_DB_NAME")
    if test_name:
        config["TEST"] = {"NAME": test_name}
    return config


DATABASES = {"default": _database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_PASSWORD_VALIDATION = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_PASSWORD_VALIDATION}.UserAttributeSimilarityValidator"},
    {"NAME": f"{_PASSWORD_VALIDATION}.MinimumLengthValidator"},
    {"NAME": f"{_PASSWORD_VALIDATION}.CommonPasswordValidator"},
    {"NAME": f"{_PASSWORD_VALIDATION}.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or RUNNING_TESTS
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
MEDIA_ROOT = DATA_DIR / "media"
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's TokenAuthentication, with one plain query instead of a queryset.
        "annotation.authentication.LeanTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Prefline API",
    "DESCRIPTION": (
        "Human-preference loop for language-model alignment: projects, prompts, "
        "responses, pairwise comparisons, judgments, imports, exports and training "
        "runs. Authenticate with `Authorization: Token <key>` "
        "(`manage.py add_member ... --print-token`)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's assets come from the sidecar package, not a CDN: docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One schema name per shared choice set (fields with different names reuse them).
    "ENUM_NAME_OVERRIDES": {
        "JudgmentChoiceEnum": "annotation.models.Choice",
        "SplitEnum": "annotation.models.Split",
        "RoleEnum": "annotation.models.Role",
        "PositionalChoiceEnum": "annotation.services.judgments.POSITIONAL_CHOICES",
        "RunStatusEnum": "training.models.RunStatus",
        "SnapshotStatusEnum": "exports.models.SnapshotStatus",
    },
}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# Import limits (overridable per environment).
PREFLINE_IMPORT_MAX_FILE_BYTES = int(
    os.environ.get("PREFLINE_IMPORT_MAX_FILE_BYTES", 512 * 1024 * 1024)
)
PREFLINE_IMPORT_MAX_TEXT_CHARS = int(
    os.environ.get("PREFLINE_IMPORT_MAX_TEXT_CHARS", 100_000)
)
PREFLINE_IMPORT_MAX_MESSAGES = int(os.environ.get("PREFLINE_IMPORT_MAX_MESSAGES", 64))
PREFLINE_IMPORT_MAX_ERRORS = int(os.environ.get("PREFLINE_IMPORT_MAX_ERRORS", 20))

# Training: pitfall thresholds (see training/pitfalls.py) and whether the web form
# checks that a local model path exists before queueing.
PREFLINE_PITFALL_THRESHOLDS = json.loads(
    os.environ.get("PREFLINE_PITFALL_THRESHOLDS") or "{}"
)
PREFLINE_TRAINING_CHECK_MODEL_PATHS = env_bool(
    "PREFLINE_TRAINING_CHECK_MODEL_PATHS", True
)

if not DEBUG and not RUNNING_TESTS:
    # Production hardening; each flag can be relaxed by environment for a deployment
    # behind a proxy that handles TLS itself (or a local benchmark over plain HTTP).
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 30))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
