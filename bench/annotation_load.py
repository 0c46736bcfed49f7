"""Load test of the annotator API: gunicorn + PostgreSQL, 8 / 32 / 64 clients.

Creates its own database (default `prefline_bench`, dropped and re-created), migrates
it, loads one project (target 3 judgments per comparison, 20,000 comparisons, 0.1%
gold at gold rate 0.05) and 64 annotators with API tokens, then starts gunicorn on
127.0.0.1 with production settings (DEBUG off) and several workers. Each phase runs
N client threads for a fixed time; a client loops `POST next-task` -> `POST judgment`
over real HTTP with its own token (a client that took a task always submits it, so
no lease is left behind). After each phase the queue invariants are checked in the
database:

* no (comparison, annotator) judged twice;
* every comparison's `judgment_count` equals its stored human judgments and never
  exceeds the target (gold excepted), `lease_count` equals its leased assignments,
  and no lease is left;
* every 201 the clients received is a stored judgment, and nothing else is stored.

Usage:
    .venv/bin/python bench/annotation_load.py [--seconds 20] [--clients 8,32,64]
        [--workers 5]

Besides latency it reports the CPU time gunicorn's processes used per stored
judgment (from /proc), a figure that depends much less on what else the machine runs
than latency does. Prints a table and writes bench/results/annotation_load.json. The
first phase
(8 clients) is the baseline: the other phases report their p99 and throughput as
ratios to it.
"""

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _postgres import REPO, create_database, database_url, setup_django

RESULTS = REPO / "bench" / "results"
SLUG = "load"
TARGET = 3
CHOICES = ("left", "right", "tie", "both_bad")
P99_TARGET_MS = 250


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--workers", type=int, default=5, help="gunicorn workers")
    parser.add_argument("--comparisons", type=int, default=20_000)
    parser.add_argument("--db-name", default="prefline_bench")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
        help="any database URL on the PostgreSQL server to use",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load_data(comparisons: int, annotators: int) -> list[str]:
    """Create the project, its comparisons and annotators; return their tokens."""
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from annotation.models import Role
    from annotation.services.projects import (
        membership_set,
        project_create,
        user_create,
    )

    call_command("migrate", verbosity=0)
    project = project_create(
        slug=SLUG,
        name="Load test",
        aspects=["helpfulness"],
        target_judgments=TARGET,
        gold_rate=0.05,
    )
    tokens = []
    for i in range(annotators):
        user = user_create(username=f"load-{i}")
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        tokens.append(Token.objects.create(user=user).key)
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO annotation_prompt (project_id, messages, external_id,
                metadata, split, content_hash, created_at)
            SELECT %s, jsonb_build_array(
                       jsonb_build_object('role', 'system', 'content', 'Be brief.'),
                       jsonb_build_object('role', 'user',
                                          'content', 'Question ' || g || '?')),
                   '', '{}', 'train', md5('q' || g), now()
            FROM generate_series(1, %s) g
            """,
            [project.pk, comparisons],
        )
        cur.execute(
            """
            INSERT INTO annotation_response (prompt_id, text, model_name,
                generation_params, external_id, content_hash, created_at)
            SELECT p.id, repeat('Answer ' || r || ' to question ' || p.id || '. ', 20),
                   'bench-model-' || r, '{"temperature": 0.7}', '',
                   md5(p.id || '-' || r), now()
            FROM annotation_prompt p, generate_series(1, 2) r
            WHERE p.project_id = %s
            """,
            [project.pk],
        )
        cur.execute(
            """
            INSERT INTO annotation_comparison (project_id, prompt_id, response_a_id,
                response_b_id, priority, origin, gold_choice, judgment_count,
                lease_count, random_key, created_at)
            SELECT %s, a.prompt_id, a.id, b.id, 0, 'import',
                   CASE WHEN random() < 0.001 THEN 'first' END, 0, 0, random(), now()
            FROM annotation_response a
            JOIN annotation_response b ON a.prompt_id = b.prompt_id AND a.id < b.id
            JOIN annotation_prompt p ON p.id = a.prompt_id
            WHERE p.project_id = %s
            """,
            [project.pk, project.pk],
        )
        cur.execute("ANALYZE")
    return tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(url: str, port: int, workers: int) -> subprocess.Popen:
    env = os.environ | {
        "DATABASE_URL": url,
        "DEBUG": "0",
        # Keep connections across requests, as the README's gunicorn set-up does.
        "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "60"),
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "gunicorn"),
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--backlog",
            "512",
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
    )
    import requests

    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                # Unauthenticated: a 401 without templates or static files.
                requests.post(
                    f"http://127.0.0.1:{port}/api/v1/projects/{SLUG}/next-task/",
                    timeout=10,
                )
                return process
            except requests.RequestException:
                time.sleep(0.3)
    except BaseException:
        process.terminate()
        raise
    process.terminate()
    sys.exit("gunicorn did not start within 120 s")


def server_cpu_seconds(master_pid: int) -> float:
    """User+system CPU of gunicorn's master and workers (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [master_pid]
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
        pids += [int(pid) for pid in children.split()]
    except OSError:
        return float("nan")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def client(
    base: str, token: str, stop_at: float, seed: int, out: dict, lock: threading.Lock
) -> None:
    """next-task -> submit until `stop_at`; record latencies, statuses, 201 ids."""
    import requests

    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    next_ms, submit_ms, errors, created, drained = [], [], [], [], False
    while time.monotonic() < stop_at:
        try:
            t0 = time.perf_counter()
            r = session.post(f"{base}/api/v1/projects/{SLUG}/next-task/", timeout=30)
            next_ms.append((time.perf_counter() - t0) * 1000)
            if r.status_code == 204:
                drained = True
                break
            if r.status_code != 200:
                errors.append(f"next-task {r.status_code}: {r.text[:200]}")
                continue
            assignment = r.json()["assignment"]
            body = {"choice": rng.choice(CHOICES), "strength": rng.randint(1, 3)}
            t0 = time.perf_counter()
            r = session.post(
                f"{base}/api/v1/assignments/{assignment}/judgment/",
                json=body,
                timeout=30,
            )
            submit_ms.append((time.perf_counter() - t0) * 1000)
            if r.status_code == 201:
                created.append(assignment)
            else:
                errors.append(f"judgment {r.status_code}: {r.text[:200]}")
        except requests.RequestException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    with lock:
        out["next_ms"] += next_ms
        out["submit_ms"] += submit_ms
        out["errors"] += errors
        out["created"] += created
        out["drained"] += int(drained)


def run_phase(base: str, tokens: list[str], seconds: float, seed: int) -> dict:
    out = {"next_ms": [], "submit_ms": [], "errors": [], "created": [], "drained": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client, args=(base, t, stop_at, seed + i, out, lock))
        for i, t in enumerate(tokens)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out["elapsed_s"] = time.perf_counter() - started
    return out


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": pick(0.95),
        "p99": pick(0.99),
    }


def check_invariants(all_created: list[int]) -> dict:
    """Return {name: bool} for the queue invariants, read from the database."""
    from django.db.models import Count, F, Q

    from annotation.models import Assignment, Comparison, Judgment

    comparisons = Comparison.objects.filter(project__slug=SLUG).annotate(
        judged=Count("judgments", filter=Q(judgments__origin="human"), distinct=True),
        leased=Count(
            "assignments", filter=Q(assignments__status="leased"), distinct=True
        ),
    )
    duplicates = (
        Judgment.objects.exclude(annotator=None)
        .values("comparison", "annotator")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .exists()
    )
    stored = set(Judgment.objects.values_list("assignment_id", flat=True))
    return {
        "no_comparison_judged_twice_by_one_annotator": not duplicates,
        "judgment_count_matches_rows": not comparisons.exclude(
            judgment_count=F("judged")
        ).exists(),
        "lease_count_matches_rows": not comparisons.exclude(
            lease_count=F("leased")
        ).exists(),
        "no_comparison_over_target": not comparisons.filter(
            gold_choice__isnull=True, judgment_count__gt=TARGET
        ).exists(),
        "no_lease_left_behind": not Assignment.objects.filter(status="leased").exists(),
        "every_201_stored_and_nothing_else": stored == set(all_created),
    }


def main() -> None:
    args = parse_args()
    phases = [int(n) for n in args.clients.split(",")]
    url = database_url(args.server_url, args.db_name, bench="annotation_load")
    create_database(args.server_url, args.db_name)
    setup_django(url)
    load_before = os.getloadavg()
    print(
        f"loading {args.comparisons:,} comparisons into {args.db_name} ...", flush=True
    )
    tokens = load_data(args.comparisons, max(phases))
    port = free_port()
    server = start_gunicorn(url, port, args.workers)
    print(f"gunicorn ({args.workers} workers) on port {port}", flush=True)
    base = f"http://127.0.0.1:{port}"
    rows, all_created = [], []
    try:
        for i, n in enumerate(phases):
            print(f"phase: {n} clients for {args.seconds:g} s ...", flush=True)
            cpu_before = server_cpu_seconds(server.pid)
            out = run_phase(base, tokens[:n], args.seconds, args.seed + 1000 * i)
            cpu_used = server_cpu_seconds(server.pid) - cpu_before
            all_created += out["created"]
            invariants = check_invariants(all_created)
            rows.append(
                {
                    "clients": n,
                    "seconds": round(out["elapsed_s"], 1),
                    "judgments": len(out["created"]),
                    "judgments_per_s": round(len(out["created"]) / out["elapsed_s"], 1),
                    "next_task_ms": percentiles(out["next_ms"]),
                    "submit_ms": percentiles(out["submit_ms"]),
                    "web_cpu_ms_per_judgment": round(
                        1000 * cpu_used / max(len(out["created"]), 1), 1
                    ),
                    "errors": len(out["errors"]),
                    "error_samples": out["errors"][:5],
                    "queue_drained": out["drained"] > 0,
                    "invariants": invariants,
                    "invariants_hold": all(invariants.values()),
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    base_row = rows[0]
    for row in rows:
        row["vs_baseline"] = {
            "clients": f"{row['clients']} vs {base_row['clients']}",
            "throughput_ratio": round(
                row["judgments_per_s"] / max(base_row["judgments_per_s"], 1e-9), 2
            ),
            "next_task_p99_ratio": round(
                row["next_task_ms"]["p99"] / base_row["next_task_ms"]["p99"], 2
            )
            if row["next_task_ms"]["p99"] and base_row["next_task_ms"]["p99"]
            else None,
        }
    result = {
        "benchmark": "annotation_load",
        "database": "postgresql",
        "gunicorn_workers": args.workers,
        "comparisons": args.comparisons,
        "target_judgments": TARGET,
        "seconds_per_phase": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "note": "client threads, gunicorn and PostgreSQL share this machine",
        },
        "targets": {"p99_ms_at_32_clients": P99_TARGET_MS, "errors": 0},
        "phases": rows,
    }
    header = (
        f"{'clients':>7} {'judg/s':>7} {'next p50':>9} {'p95':>7} {'p99':>7} "
        f"{'submit p50':>11} {'p95':>7} {'p99':>7} {'errors':>6} {'invariants':>10} "
        f"{'web CPU ms/judgment':>19}"
    )
    print(header)
    for row in rows:
        nt, sm = row["next_task_ms"], row["submit_ms"]
        print(
            f"{row['clients']:>7} {row['judgments_per_s']:>7} {nt['p50']:>9} "
            f"{nt['p95']:>7} {nt['p99']:>7} {sm['p50']:>11} {sm['p95']:>7} "
            f"{sm['p99']:>7} {row['errors']:>6} "
            f"{'hold' if row['invariants_hold'] else 'BROKEN':>10} "
            f"{row['web_cpu_ms_per_judgment']:>19}"
        )
        for sample in row["error_samples"]:
            print(f"    error: {sample}")
    print(f"load average before: {load_before} on {os.cpu_count()} CPUs")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "annotation_load.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
