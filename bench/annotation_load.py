"""Load test of the annotator API: gunicorn + PostgreSQL, 8 / 32 / 64 clients.

Creates its own database (default `prefline_bench`, dropped and re-created), migrates
it, loads one project (target 3 judgments per comparison, 20,000 comparisons, 0.1%
gold at gold rate 0.05) and 64 annotators with API tokens, then starts gunicorn on
127.0.0.1 with production settings (DEBUG off). Clients are asyncio tasks in a few
client processes (`--client-processes`), each speaking plain HTTP/1.1 over its own
socket (kept alive where the worker class allows it), so the load generator costs
little CPU and no GIL is shared with many threads; its CPU is measured and reported.

Phases, all in one run so that their figures can be compared:

1. warm-up: clients do next-task -> submit until every gunicorn worker has answered
   (each response names its worker in an `X-Worker-Pid` header) and `--warmup`
   seconds have passed; not measured;
2. baselines: the same clients call three endpoints that the bench adds: `raw` (a
   bare WSGI answer from the bench's wrapper: gunicorn and the client alone),
   `hello` (a plain Django view through the same middleware, no database) and
   `hello-api` (a DRF view behind the API's token authentication: one query). They
   give the per-request floor of each layer of the stack on this machine;
3. load: for each of `--clients` (8, 32, 64), that many clients loop `POST
   next-task` -> `POST judgment` for `--seconds` (a client that took a task always
   submits it, so no lease is left behind). After each phase the queue invariants
   are checked in the database:

   * no (comparison, annotator) judged twice;
   * every comparison's `judgment_count` equals its stored human judgments and never
     exceeds the target (gold excepted), `lease_count` equals its leased
     assignments, and no lease is left;
   * every 201 the clients received is a stored judgment, and nothing else is stored.

Besides latency (p50/p95/p99 of both calls) it reports the CPU time used per request
and per judgment by gunicorn's processes, by the PostgreSQL backends of the bench
database and by the clients (from /proc), figures that depend much less on what else
the machine runs than latency does, and the web CPU per request as a ratio to the
`hello-api` baseline measured in the same run. With clients that never pause,
latency is queueing: one judgment needs about (web + database + client) CPU ms, so
the machine completes at most cpus * 1000 / that many judgments per second and a
client waits about clients / throughput per judgment; the report prints that floor.

Usage:
    .venv/bin/python bench/annotation_load.py [--seconds 20] [--clients 8,32,64]
        [--workers 4] [--worker-class sync|gthread] [--threads 1]

Prints a table and writes bench/results/annotation_load.json.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _postgres import REPO, create_database, database_url, setup_django

RESULTS = REPO / "bench" / "results"
SLUG = "load"
TARGET = 3
CHOICES = ("left", "right", "tie", "both_bad")
P99_TARGET_MS = 250
HOST = "127.0.0.1"
BASELINES = {
    "raw": "/bench/raw/",
    "hello": "/bench/hello/",
    "hello-api": "/bench/hello-api/",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=1, help="gthread threads")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, at least")
    parser.add_argument(
        "--baseline-seconds", type=float, default=5.0, help="per baseline phase"
    )
    parser.add_argument("--baseline-clients", type=int, default=8)
    parser.add_argument("--comparisons", type=int, default=20_000)
    parser.add_argument("--db-name", default="prefline_bench")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
        help="any database URL on the PostgreSQL server to use",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "annotation_load.json"))
    return parser.parse_args()


# --- data ----------------------------------------------------------------------


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
                lease_count, a_left_count, b_left_count, random_key, created_at)
            SELECT %s, a.prompt_id, a.id, b.id, 0, 'import',
                   CASE WHEN random() < 0.001 THEN 'first' END, 0, 0, 0, 0, random(),
                   now()
            FROM annotation_response a
            JOIN annotation_response b ON a.prompt_id = b.prompt_id AND a.id < b.id
            JOIN annotation_prompt p ON p.id = a.prompt_id
            WHERE p.project_id = %s
            """,
            [project.pk, project.pk],
        )
        cur.execute("ANALYZE")
    return tokens


# --- the server ------------------------------------------------------------------


def bench_application():
    """WSGI app for gunicorn: Prefline plus the baseline endpoints, naming the worker.

    `gunicorn --pythonpath bench 'annotation_load:bench_application()'`. The two
    baseline views go through the same middleware and (for `hello-api`) the API's
    default authentication and permission classes as the annotator API.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import JsonResponse
    from django.urls import include, path
    from django.views.decorators.csrf import csrf_exempt
    from rest_framework.response import Response
    from rest_framework.views import APIView

    @csrf_exempt  # a POST like the API's, which DRF exempts from CSRF (tokens)
    def hello(request):
        return JsonResponse({"ok": True})

    class HelloApi(APIView):
        def post(self, request):
            return Response({"ok": True, "user": request.user.pk})

    globals()["urlpatterns"] = [
        path("bench/hello/", hello),
        path("bench/hello-api/", HelloApi.as_view()),
        path("", include(settings.ROOT_URLCONF)),
    ]
    settings.ROOT_URLCONF = __name__
    django_app = get_wsgi_application()
    pid_header = ("X-Worker-Pid", str(os.getpid()))
    raw_body = b'{"ok": true}'
    raw_headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(raw_body))),
        pid_header,
    ]

    def application(environ, start_response):
        if environ["PATH_INFO"] == BASELINES["raw"]:  # gunicorn alone, no Django
            environ["wsgi.input"].read()
            start_response("200 OK", raw_headers)
            return [raw_body]

        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, pid_header], exc_info)

        return django_app(environ, start)

    return application


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_gunicorn(url: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = os.environ | {
        "DATABASE_URL": url,
        "DEBUG": "0",
        # Keep connections across requests, as the README's gunicorn set-up does.
        # Keep connections for the whole run, so the CPU of their backends is seen.
        "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "600"),
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "ALLOWED_HOSTS": HOST,
        "LOG_LEVEL": "WARNING",
    }
    command = [
        str(REPO / ".venv" / "bin" / "gunicorn"),
        "--pythonpath",
        str(REPO / "bench"),
        "annotation_load:bench_application()",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--threads",
        str(args.threads),
        "--backlog",
        "512",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    sys.exit("gunicorn did not start within 120 s")


# --- CPU accounting ---------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gunicorn_pids(master_pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except OSError:
        return [master_pid]
    return [master_pid, *(int(pid) for pid in children.split())]


def postgres_pids(server_url: str, db_name: str) -> list[int]:
    """Backends connected to the bench database (gunicorn's persistent ones)."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> "
            "pg_backend_pid()",
            [db_name],
        ).fetchall()
    return [pid for (pid,) in rows]


class CpuMeter:
    """CPU seconds used by a set of processes between `start` and `stop`."""

    def __init__(self, pids_of):
        self.pids_of = pids_of

    def start(self) -> None:
        self.before = {pid: process_cpu_seconds(pid) for pid in self.pids_of()}

    def stop(self) -> float:
        after = {pid: process_cpu_seconds(pid) for pid in self.pids_of()}
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in after.items())


# --- the clients ---------------------------------------------------------------


class HttpConnection:
    """One client's HTTP/1.1 connection: kept alive unless the server closes it."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.auth = f"Authorization: Token {token}\r\n".encode()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes = b"") -> tuple[int, bytes, str]:
        """Send a POST; return (status, body, worker pid)."""
        reused = self.writer is not None
        try:
            return await self._post(path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            if not reused:
                raise
            return await self._post(path, body)  # the kept-alive socket had closed

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), HOST.encode(), self.auth, len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, close, worker = 0, False, ""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"x-worker-pid":
                worker = value.strip().decode()
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, payload, worker

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def timed_post(
    conn: HttpConnection, path: str, out: dict, latencies: str, body: bytes = b""
) -> tuple[int, bytes]:
    """POST `path`; its latency goes to `out[latencies]`, the serving worker's pid
    to `out["workers"]`."""
    t0 = time.perf_counter()
    status, answer, worker = await conn.post(path, body)
    out[latencies].append((time.perf_counter() - t0) * 1000)
    out["workers"].append(worker)
    return status, answer


async def annotate_loop(conn: HttpConnection, stop_at: float, seed: int, out: dict):
    """next-task -> submit until `stop_at`; record latencies, statuses, 201 ids."""
    rng = random.Random(seed)
    next_path = f"/api/v1/projects/{SLUG}/next-task/"
    while time.monotonic() < stop_at:
        try:
            status, body = await timed_post(conn, next_path, out, "next_ms")
            if status == 204:
                out["drained"] += 1
                return
            if status != 200:
                out["errors"].append(f"next-task {status}: {body[:200]!r}")
                continue
            assignment = json.loads(body)["assignment"]
            judgment = {"choice": rng.choice(CHOICES), "strength": rng.randint(1, 3)}
            status, body = await timed_post(
                conn,
                f"/api/v1/assignments/{assignment}/judgment/",
                out,
                "submit_ms",
                json.dumps(judgment).encode(),
            )
            if status == 201:
                out["created"].append(assignment)
            else:
                out["errors"].append(f"judgment {status}: {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}")
            conn.close()


async def baseline_loop(conn: HttpConnection, path: str, stop_at: float, out: dict):
    while time.monotonic() < stop_at:
        try:
            status, body = await timed_post(conn, path, out, "next_ms")
            if status != 200:
                out["errors"].append(f"{path} {status}: {body[:200]!r}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}")
            conn.close()


def client_process(pipe, spec: dict) -> None:
    """Run this process's share of the clients; send back results and CPU used."""
    out = {
        "next_ms": [],
        "submit_ms": [],
        "errors": [],
        "created": [],
        "workers": [],
        "drained": 0,
    }

    async def run() -> None:
        conns = [HttpConnection(spec["port"], token) for token in spec["tokens"]]
        if spec["kind"] == "annotate":
            loops = [
                annotate_loop(conn, spec["stop_at"], seed, out)
                for conn, seed in zip(conns, spec["seeds"], strict=True)
            ]
        else:
            loops = [
                baseline_loop(conn, spec["path"], spec["stop_at"], out)
                for conn in conns
            ]
        await asyncio.gather(*loops)
        for conn in conns:
            conn.close()

    cpu = time.process_time()
    asyncio.run(run())
    out["cpu_s"] = time.process_time() - cpu
    pipe.send(out)
    pipe.close()


def run_clients(
    *, port: int, tokens: list[str], seconds: float, processes: int, **spec
) -> dict:
    """Run len(tokens) clients split over `processes` processes; merge results."""
    context = multiprocessing.get_context("fork")
    stop_at = time.monotonic() + seconds
    seeds = spec.pop("seeds", list(range(len(tokens))))
    workers = []
    for i in range(min(processes, len(tokens))):
        receive, send = context.Pipe(duplex=False)
        share = {
            **spec,
            "port": port,
            "stop_at": stop_at,
            "tokens": tokens[i::processes],
            "seeds": seeds[i::processes],
        }
        process = context.Process(target=client_process, args=(send, share))
        process.start()
        workers.append((process, receive))
    started = time.perf_counter()
    merged = {
        "next_ms": [],
        "submit_ms": [],
        "errors": [],
        "created": [],
        "workers": [],
        "drained": 0,
        "cpu_s": 0.0,
    }
    for process, receive in workers:
        result = receive.recv()
        process.join()
        for key, value in result.items():
            merged[key] += value
    merged["elapsed_s"] = time.perf_counter() - started
    return merged


# --- report --------------------------------------------------------------------


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


def cpu_ms(seconds: float, count: int) -> float | None:
    return round(1000 * seconds / count, 2) if count else None


def measured_phase(run, meters: dict) -> tuple[dict, dict]:
    for meter in meters.values():
        meter.start()
    out = run()
    return out, {name: meter.stop() for name, meter in meters.items()}


def warm_up(port: int, tokens: list[str], args, server) -> dict:
    """Drive every worker (cold imports, first connections) before measuring."""
    expected = set(map(str, gunicorn_pids(server.pid)[1:]))
    seen: set[str] = set()
    created: list[int] = []
    deadline = time.monotonic() + 60
    rounds = 0
    while rounds == 0 or (not expected <= seen and time.monotonic() < deadline):
        out = run_clients(
            port=port,
            tokens=tokens,
            seconds=args.warmup,
            processes=args.client_processes,
            kind="annotate",
            seeds=[10_000 * (rounds + 1) + i for i in range(len(tokens))],
        )
        seen |= set(out["workers"])
        created += out["created"]
        rounds += 1
    return {
        "workers_expected": len(expected),
        "workers_seen": len(expected & seen),
        "created": created,
    }


def main() -> None:
    args = parse_args()
    phases = [int(n) for n in args.clients.split(",")]
    url = database_url(args.server_url, args.db_name, bench="annotation_load")
    create_database(args.server_url, args.db_name)
    setup_django(url)
    from django.db import connections

    load_before = os.getloadavg()
    print(
        f"loading {args.comparisons:,} comparisons into {args.db_name} ...", flush=True
    )
    tokens = load_data(args.comparisons, max(phases))
    connections.close_all()  # the client processes are forked from this one
    port = free_port()
    server = start_gunicorn(url, port, args)
    print(
        f"gunicorn ({args.workers} {args.worker_class} workers, {args.threads} "
        f"threads) on port {port}",
        flush=True,
    )
    meters = {
        "web": CpuMeter(lambda: gunicorn_pids(server.pid)),
        "db": CpuMeter(lambda: postgres_pids(args.server_url, args.db_name)),
    }
    rows, baselines, all_created = [], {}, []
    try:
        warm = warm_up(port, tokens[: max(phases)], args, server)
        all_created += warm["created"]
        print(
            f"warm-up: {warm['workers_seen']}/{warm['workers_expected']} workers "
            f"answered, {len(warm['created'])} judgments",
            flush=True,
        )
        for name, path in BASELINES.items():
            out, cpu = measured_phase(
                lambda path=path: run_clients(
                    port=port,
                    tokens=tokens[: args.baseline_clients],
                    seconds=args.baseline_seconds,
                    processes=args.client_processes,
                    kind="baseline",
                    path=path,
                ),
                meters,
            )
            requests = len(out["next_ms"])
            baselines[name] = {
                "clients": args.baseline_clients,
                "requests_per_s": round(requests / out["elapsed_s"], 1),
                "latency_ms": percentiles(out["next_ms"]),
                "web_cpu_ms_per_request": cpu_ms(cpu["web"], requests),
                "db_cpu_ms_per_request": cpu_ms(cpu["db"], requests),
                "client_cpu_ms_per_request": cpu_ms(out["cpu_s"], requests),
                "errors": len(out["errors"]),
                "error_samples": out["errors"][:3],
            }
        api_floor = baselines["hello-api"]["web_cpu_ms_per_request"]
        for i, n in enumerate(phases):
            print(f"phase: {n} clients for {args.seconds:g} s ...", flush=True)
            out, cpu = measured_phase(
                lambda n=n, i=i: run_clients(
                    port=port,
                    tokens=tokens[:n],
                    seconds=args.seconds,
                    processes=args.client_processes,
                    kind="annotate",
                    seeds=[args.seed + 1000 * i + k for k in range(n)],
                ),
                meters,
            )
            all_created += out["created"]
            invariants = check_invariants(all_created)
            judged = len(out["created"])
            requests = len(out["next_ms"]) + len(out["submit_ms"])
            per_judgment = {
                "web": cpu_ms(cpu["web"], judged),
                "db": cpu_ms(cpu["db"], judged),
                "client": cpu_ms(out["cpu_s"], judged),
            }
            total = sum(v for v in per_judgment.values() if v is not None)
            capacity = (os.cpu_count() or 1) * 1000 / total if total else None
            web_per_request = cpu_ms(cpu["web"], requests)
            rows.append(
                {
                    "clients": n,
                    "seconds": round(out["elapsed_s"], 1),
                    "judgments": judged,
                    "judgments_per_s": round(judged / out["elapsed_s"], 1),
                    "next_task_ms": percentiles(out["next_ms"]),
                    "submit_ms": percentiles(out["submit_ms"]),
                    "cpu_ms_per_judgment": per_judgment,
                    "web_cpu_ms_per_request": web_per_request,
                    "web_cpu_per_request_vs_hello_api": round(
                        web_per_request / api_floor, 2
                    )
                    if web_per_request and api_floor
                    else None,
                    "cpu_bound_judgments_per_s": round(capacity, 1)
                    if capacity
                    else None,
                    "cpu_bound_ms_per_judgment_at_these_clients": round(
                        1000 * n / capacity, 1
                    )
                    if capacity
                    else None,
                    "requests_per_worker": sorted(
                        Counter(out["workers"]).values(), reverse=True
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
        row["vs_first_phase"] = {
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
        "gunicorn": {
            "workers": args.workers,
            "worker_class": args.worker_class,
            "threads": args.threads,
        },
        "client_processes": args.client_processes,
        "comparisons": args.comparisons,
        "target_judgments": TARGET,
        "seconds_per_phase": args.seconds,
        "warm_up": {k: v for k, v in warm.items() if k != "created"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "note": "clients, gunicorn and PostgreSQL share this machine",
        },
        "targets": {"p99_ms_at_32_clients": P99_TARGET_MS, "errors": 0},
        "baselines": baselines,
        "phases": rows,
    }
    print_report(result)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


def print_report(result: dict) -> None:
    print(
        f"{'baseline':>10} {'req/s':>7} {'p50':>6} {'p99':>6} {'web CPU ms/req':>15} "
        f"{'db':>5} {'client':>7} {'errors':>6}"
    )
    for name, row in result["baselines"].items():
        lat = row["latency_ms"]
        print(
            f"{name:>10} {row['requests_per_s']:>7} {lat['p50']:>6} {lat['p99']:>6} "
            f"{row['web_cpu_ms_per_request']:>15} {row['db_cpu_ms_per_request']:>5} "
            f"{row['client_cpu_ms_per_request']:>7} {row['errors']:>6}"
        )
    print(
        f"{'clients':>7} {'judg/s':>7} {'next p50':>9} {'p95':>7} {'p99':>7} "
        f"{'submit p50':>11} {'p95':>7} {'p99':>7} {'errors':>6} {'invariants':>10} "
        f"{'CPU ms/judgment web+db+client':>30} {'web/req vs hello-api':>21}"
    )
    for row in result["phases"]:
        nt, sm, cpu = row["next_task_ms"], row["submit_ms"], row["cpu_ms_per_judgment"]
        split = f"{cpu['web']}+{cpu['db']}+{cpu['client']}"
        print(
            f"{row['clients']:>7} {row['judgments_per_s']:>7} {nt['p50']:>9} "
            f"{nt['p95']:>7} {nt['p99']:>7} {sm['p50']:>11} {sm['p95']:>7} "
            f"{sm['p99']:>7} {row['errors']:>6} "
            f"{'hold' if row['invariants_hold'] else 'BROKEN':>10} {split:>30} "
            f"{row['web_cpu_per_request_vs_hello_api']!s:>21}"
        )
        for sample in row["error_samples"]:
            print(f"    error: {sample}")
    for row in result["phases"]:
        if row["cpu_bound_judgments_per_s"]:
            print(
                f"{row['clients']} clients: the CPUs allow at most "
                f"{row['cpu_bound_judgments_per_s']} judgments/s, i.e. about "
                f"{row['cpu_bound_ms_per_judgment_at_these_clients']} ms per "
                "next-task + submit per client (queueing floor)"
            )
    machine = result["machine"]
    print(f"load average before: {machine['load_average_before']} on {machine['cpus']}")


if __name__ == "__main__":
    main()
