"""Import a 10k-row and a 100k-row JSONL file: wall time and peak memory.

Each size runs in a fresh Python process on a fresh database (SQLite in a temporary
data directory by default, or `--database-url`). The child sets Django up and
migrates, then resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, "5") so
the peak it reports is the import's own, and checks the rows it wrote. The baseline is
the 10k-row file measured in the same run: bounded memory means the 100k peak is close
to the 10k peak while the time grows about tenfold.

    .venv/bin/python bench/import_scale.py [--sizes 10000 100000] [--database-url URL]

Prints a table and writes bench/results/import_scale_<database>.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
RESPONSES_PER_ROW = 2

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
import django
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
from annotation.models import Comparison, Prompt, Response
from annotation.services.imports import import_file
from annotation.services.projects import project_create

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return None

project = project_create(slug="bench-" + str(os.getpid()), name="bench")
try:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
start = time.perf_counter()
batch = import_file(project=project, path={path!r})
wall = time.perf_counter() - start
print(json.dumps({{
    "wall_s": wall,
    "rss_before_bytes": before,
    "peak_rss_bytes": status("VmHWM") if reset else
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "peak_is_import_only": reset,
    "counts": batch.counts,
    "db_prompts": Prompt.objects.filter(project=project).count(),
    "db_responses": Response.objects.filter(prompt__project=project).count(),
    "db_comparisons": Comparison.objects.filter(project=project).count(),
    "database": connection.vendor,
}}))
"""


def write_jsonl(path: Path, rows: int) -> None:
    """Prompts with two responses each, about 400 bytes a row."""
    with path.open("w") as handle:
        for i in range(rows):
            record = {
                "prompt": f"Question {i}: explain topic {i % 977} in two sentences.",
                "id": f"q{i}",
                "metadata": {"source": "bench", "index": i},
                "responses": [
                    {"model": f"model-{k}", "text": f"Answer {k} to {i}. " * 6}
                    for k in range(RESPONSES_PER_ROW)
                ],
            }
            handle.write(json.dumps(record) + "\n")


def run_size(rows: int, workdir: Path, database_url: str | None) -> dict:
    path = workdir / f"import_{rows}.jsonl"
    write_jsonl(path, rows)
    data_dir = workdir / f"data_{rows}"
    data_dir.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "PREFLINE_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url or "",
    }
    code = CHILD.format(root=str(REPO_ROOT), path=str(path))
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(f"import of {rows} rows failed:\n{result.stderr[-4000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["process_s"] = time.perf_counter() - started
    measured["rows"] = rows
    measured["file_bytes"] = path.stat().st_size
    expected = (rows, rows * RESPONSES_PER_ROW, rows)
    found = (
        measured["db_prompts"],
        measured["db_responses"],
        measured["db_comparisons"],
    )
    if found != expected:
        raise SystemExit(f"{rows} rows: database holds {found}, expected {expected}")
    path.unlink()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prefline-bench-") as tmp:
        results = [run_size(n, Path(tmp), args.database_url) for n in args.sizes]
    base = results[0]
    mib = 1024 * 1024
    print(
        f"{'rows':>8} {'file MiB':>9} {'wall s':>8} {'rows/s':>8} "
        f"{'peak RSS MiB':>13} {'x time':>7} {'x peak RSS':>11}"
    )
    for r in results:
        r["rows_per_s"] = r["rows"] / r["wall_s"]
        r["time_ratio_vs_baseline"] = r["wall_s"] / base["wall_s"]
        r["peak_rss_ratio_vs_baseline"] = r["peak_rss_bytes"] / base["peak_rss_bytes"]
        print(
            f"{r['rows']:>8} {r['file_bytes'] / mib:>9.1f} {r['wall_s']:>8.1f} "
            f"{r['rows_per_s']:>8.0f} {r['peak_rss_bytes'] / mib:>13.1f} "
            f"{r['time_ratio_vs_baseline']:>7.2f} "
            f"{r['peak_rss_ratio_vs_baseline']:>11.2f}"
        )
    scope = "during the import" if base["peak_is_import_only"] else "incl. setup"
    print(
        f"database: {base['database']}; baseline: the {base['rows']}-row file; "
        f"peak RSS: {scope}"
    )
    out = RESULTS_DIR / f"import_scale_{base['database']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"benchmark": "import_scale", "results": results}, indent=2) + "\n"
    )
    print(f"wrote {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
