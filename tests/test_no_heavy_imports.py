"""The web process must never load the ML stack (torch & co. take seconds and GBs)."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

HEAVY_MODULES = [
    "torch",
    "transformers",
    "trl",
    "datasets",
    "peft",
    "vllm",
    "accelerate",
]

PROBE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.urls import get_resolver
resolver = get_resolver()
resolver.url_patterns  # import every view module the URL conf names
import config.wsgi  # noqa: F401
heavy = [m for m in {heavy!r} if m in sys.modules]
print(",".join(heavy))
"""


def test_url_conf_and_wsgi_import_no_ml_library():
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY_MODULES)],
        capture_output=True,
        text=True,
        env={"DEBUG": "1", "PATH": "/usr/bin:/bin"},
        check=True,
        cwd=REPO_ROOT,
    )
    assert result.stdout.strip() == "", f"heavy modules imported: {result.stdout}"
