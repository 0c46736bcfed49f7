"""The OpenAPI 3 schema: valid, warning-free, and covering every API endpoint."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from drf_spectacular.generators import SchemaGenerator

REPO_ROOT = Path(__file__).resolve().parent.parent
API_PREFIX = "api/v1/"


def test_schema_generation_validates_with_no_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            str(out),
        ],
        cwd=REPO_ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DEBUG": "1",
            "PREFLINE_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/projects/{project_slug}/comparisons/{id}/" in schema["paths"]


def _api_routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^")
        if isinstance(pattern, URLResolver):
            yield from _api_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.startswith(API_PREFIX):
            groups = list(pattern.pattern.regex.groupindex)
            if "format" not in groups and pattern.name != "api-root":
                yield pattern.name, groups


def test_schema_covers_every_api_route():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    templates = [
        re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for path in schema["paths"]
    ]
    missing = []
    for name, groups in _api_routes(get_resolver().url_patterns):
        url = reverse(name, kwargs=dict.fromkeys(groups, "1"))
        if not any(template.match(url) for template in templates):
            missing.append(f"{name} ({url})")
    assert not missing, f"API routes absent from the OpenAPI schema: {missing}"


def test_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert schema.status_code == 200
    document = yaml.safe_load(schema.content)
    assert "/api/v1/projects/" in document["paths"]
    assert {"tokenAuth", "cookieAuth"} <= set(document["components"]["securitySchemes"])
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    # Served from this server (drf-spectacular-sidecar), so the page works offline.
    assert b"cdn.jsdelivr" not in docs.content
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs.content
