"""Does next-task cost grow with project size? 1k vs 1M comparisons on PostgreSQL.

Builds its own database (default `prefline_queue_bench` on the server of
DATABASE_URL, or postgres://postgres@127.0.0.1:5432/postgres), migrates it, and
loads two projects with `generate_series` (seconds, not hours): "small" with 1,000
comparisons and "large" with 1,000,000, both with 0.1% gold comparisons and a gold
rate of 0.1, 50 annotators each. Then it times `next_assignment` (the service behind
`POST /next-task/`) in the same cases in both projects, interleaving the projects
call by call so that machine load hits both alike:

* `fresh`: annotators without history; every lease is judged right away with
  `judgment_submit`, so the queue state moves on as in real use;
* `history`: annotators who have already skipped the first `--history` comparisons
  at the head of the queue (the hot window must pass over them);
* `exhausted`: an annotator who has seen every comparison of the project (skipped
  rows, as many as the project has comparisons): the 204 path, which once scanned the
  whole project;
* `http`: the whole `POST next-task` then `POST judgment` through Django's URL conf,
  middleware and token authentication (in process, no network), counting every
  statement of both calls, BEGIN/COMMIT and the token and project look-ups included
  (the connection health check, one `SELECT 1` per request when
  `DB_CONN_HEALTH_CHECKS` is on, comes on top).

It reports p50/p99/mean latency and statements per call, the large/small ratios
(target <= 1.5 for each case), and the plans PostgreSQL uses for the service's own
pick statements (the hot window, and the fallback the exhausted case reaches), run
with EXPLAIN ANALYZE on the large project with the parameters the service passes.

Usage:
    .venv/bin/python bench/queue_scaling.py [--large 1000000] [--calls 300] [--reuse]

Prints a table and writes bench/results/queue_scaling.json.
"""

import argparse
import json
import os
import platform
import random
import statistics
import time

from _postgres import REPO, create_database, database_url, setup_django

RESULTS = REPO / "bench" / "results"
RESPONSES_PER_PROMPT = 46  # C(46, 2) = 1035 comparisons per prompt
ANNOTATORS = 50
HISTORY_ANNOTATORS = 10
TARGET_RATIO = 1.5
SLUGS = ("small", "large")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300, help="per case and project")
    parser.add_argument(
        "--history", type=int, default=150, help="head comparisons already skipped"
    )
    parser.add_argument("--db-name", default="prefline_queue_bench")
    parser.add_argument(
        "--server-url",
        default=os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
        help="any database URL on the PostgreSQL server to use",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep an already loaded database"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load_project(slug: str, comparisons: int, history: int):
    """Create a project with `comparisons` comparisons and its annotators, in SQL.

    Annotators 0..HISTORY_ANNOTATORS-1 have skipped the `history` comparisons at the
    head of the queue; `{slug}-exhausted` has skipped every comparison.
    """
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from annotation.models import Role
    from annotation.services.projects import (
        membership_set,
        project_create,
        user_create,
    )

    project = project_create(
        slug=slug, name=slug, target_judgments=3, gold_rate=0.1, aspects=["overall"]
    )
    names = [f"{slug}-annotator-{i}" for i in range(ANNOTATORS)]
    for name in [*names, f"{slug}-exhausted"]:
        user = user_create(username=name)
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        Token.objects.create(user=user)
    prompts = -(
        -comparisons // (RESPONSES_PER_PROMPT * (RESPONSES_PER_PROMPT - 1) // 2)
    )
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO annotation_prompt
                (project_id, messages, external_id, metadata, split, content_hash,
                 created_at)
            SELECT %s, jsonb_build_array(jsonb_build_object(
                       'role', 'user', 'content', 'Question ' || g || '?')),
                   '', '{}', 'train', md5(%s || g), now()
            FROM generate_series(1, %s) g
            """,
            [project.pk, slug, prompts],
        )
        cur.execute(
            """
            INSERT INTO annotation_response
                (prompt_id, text, model_name, generation_params, external_id,
                 content_hash, created_at)
            SELECT p.id, 'Answer ' || r || ' to prompt ' || p.id, 'model-' || r,
                   '{}', '', md5(p.id || '-' || r), now()
            FROM annotation_prompt p, generate_series(1, %s) r
            WHERE p.project_id = %s
            """,
            [RESPONSES_PER_PROMPT, project.pk],
        )
        cur.execute(
            """
            INSERT INTO annotation_comparison
                (project_id, prompt_id, response_a_id, response_b_id, priority,
                 origin, gold_choice, judgment_count, lease_count, a_left_count,
                 b_left_count, random_key, created_at)
            SELECT %s, a.prompt_id, a.id, b.id, 0, 'import',
                   CASE WHEN random() < 0.001 THEN 'first' END, 0, 0, 0, 0,
                   random(), now()
            FROM annotation_response a
            JOIN annotation_response b ON a.prompt_id = b.prompt_id AND a.id < b.id
            JOIN annotation_prompt p ON p.id = a.prompt_id
            WHERE p.project_id = %s
            LIMIT %s
            """,
            [project.pk, project.pk, comparisons],
        )
        skip = """
            INSERT INTO annotation_assignment (comparison_id, annotator_id, status,
                left_is_first, leased_at, expires_at, completed_at)
            SELECT c.id, u.id, 'skipped', true, now(), now(), now()
            FROM auth_user u, ({comparisons}) c
            WHERE u.username = ANY(%s)
        """
        head = (
            "SELECT id FROM annotation_comparison WHERE project_id = %s "
            "AND gold_choice IS NULL "
            "ORDER BY judgment_count, priority DESC, random_key LIMIT %s"
        )
        cur.execute(
            skip.format(comparisons=head),
            [project.pk, history, names[:HISTORY_ANNOTATORS]],
        )
        every = "SELECT id FROM annotation_comparison WHERE project_id = %s"
        cur.execute(skip.format(comparisons=every), [project.pk, [f"{slug}-exhausted"]])
    return project


def pick_plans(project, annotator) -> dict:
    """EXPLAIN ANALYZE of the service's own pick statements, with its parameters."""
    from django.db import connection, transaction

    from annotation.services import queue

    target, window = project.target_judgments, queue.QUEUE_WINDOW
    levels = [
        p
        for level in range(target)
        for _ in ("head", "tail")
        for p in (project.pk, level, target)
    ]
    pick = [annotator.pk, target, target]
    statements = {
        "hot_window": (
            queue._regular_sql(window),
            [project.pk, target, target, *pick],
        ),
        "fallback": (queue._fallback_sql(target, window), [*levels, *pick]),
    }
    plans = {}
    for name, (sql, params) in statements.items():
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plans[name] = "\n".join(row[0] for row in cur.fetchall())
            transaction.set_rollback(True)
    return plans


def _users(slug: str):
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.filter(username__startswith=f"{slug}-annotator-")
    by_name = {u.username: u for u in users}
    return [by_name[f"{slug}-annotator-{i}"] for i in range(ANNOTATORS)]


def measure_service(projects: dict, calls: int, seed: int, case: str) -> dict:
    """Alternate next-task (+ submit) between the projects; return per-call stats."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from annotation.services.judgments import judgment_submit
    from annotation.services.queue import next_assignment

    rng = random.Random(seed)
    users = {slug: _users(slug) for slug in projects}
    exhausted = {
        slug: get_user_model().objects.get(username=f"{slug}-exhausted")
        for slug in projects
    }
    samples = {slug: {"ms": [], "queries": []} for slug in projects}
    slugs = list(projects)
    for i in range(calls):
        rng.shuffle(slugs)
        for slug in slugs:
            project = projects[slug]
            if case == "exhausted":
                annotator = exhausted[slug]
            elif case == "history":
                annotator = users[slug][i % HISTORY_ANNOTATORS]
            else:
                annotator = users[slug][HISTORY_ANNOTATORS + i % 40]
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                assignment = next_assignment(annotator=annotator, project=project)
                elapsed = time.perf_counter() - t0
            samples[slug]["ms"].append(elapsed * 1000)
            samples[slug]["queries"].append(len(ctx.captured_queries))
            connection.queries_log.clear()
            if case == "exhausted":
                assert assignment is None, f"{slug}: the exhausted annotator got work"
                continue
            assert assignment is not None, f"{slug}: queue ran dry"
            judgment_submit(
                assignment=assignment,
                annotator=annotator,
                choice=rng.choice(["left", "right", "tie"]),
            )
    return samples


def measure_http(projects: dict, calls: int, seed: int) -> dict:
    """next-task then judgment through the URL conf with token authentication."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    rng = random.Random(seed)
    tokens = {
        slug: [Token.objects.get(user=u).key for u in _users(slug)[HISTORY_ANNOTATORS:]]
        for slug in projects
    }
    client = Client()
    client.post(  # the first request of a process builds the URL resolvers
        f"/api/v1/projects/{SLUGS[0]}/next-task/",
        HTTP_AUTHORIZATION=f"Token {tokens[SLUGS[0]][0]}",
    )
    samples = {
        slug: {"next_ms": [], "submit_ms": [], "next_q": [], "submit_q": []}
        for slug in projects
    }
    slugs = list(projects)
    for i in range(calls):
        rng.shuffle(slugs)
        for slug in slugs:
            auth = {"HTTP_AUTHORIZATION": f"Token {tokens[slug][i % 40]}"}
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                task = client.post(f"/api/v1/projects/{slug}/next-task/", **auth)
                elapsed = time.perf_counter() - t0
            assert task.status_code == 200, task.content[:200]
            samples[slug]["next_ms"].append(elapsed * 1000)
            samples[slug]["next_q"].append(len(ctx.captured_queries))
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                judged = client.post(
                    f"/api/v1/assignments/{task.json()['assignment']}/judgment/",
                    {"choice": rng.choice(["left", "right", "tie"])},
                    content_type="application/json",
                    **auth,
                )
                elapsed = time.perf_counter() - t0
            assert judged.status_code == 201, judged.content[:200]
            samples[slug]["submit_ms"].append(elapsed * 1000)
            samples[slug]["submit_q"].append(len(ctx.captured_queries))
            connection.queries_log.clear()
    return samples


def summarise(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(pick(0.99), 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def ratios(small: dict, large: dict) -> dict:
    return {k: round(large[k] / small[k], 3) for k in ("p50", "p99", "mean")}


def main() -> None:
    args = parse_args()
    url = database_url(args.server_url, args.db_name, bench="queue_scaling")
    must_load = create_database(args.server_url, args.db_name, reuse=args.reuse)
    # The http case goes through Django's test client: plain http, host testserver.
    os.environ.update(ALLOWED_HOSTS="testserver", SECURE_SSL_REDIRECT="0")
    setup_django(url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import Comparison, Project

    load_s = None
    if must_load:
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        for slug, size in zip(SLUGS, (args.small, args.large), strict=True):
            print(f"loading {slug}: {size:,} comparisons ...", flush=True)
            load_project(slug, size, args.history)
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        load_s = round(time.perf_counter() - started, 1)
    projects = {slug: Project.objects.get(slug=slug) for slug in SLUGS}
    sizes = {
        slug: Comparison.objects.filter(project=p).count()
        for slug, p in projects.items()
    }
    cases = {}
    for case in ("exhausted", "history", "fresh"):
        print(f"case {case} ...", flush=True)
        samples = measure_service(projects, args.calls, args.seed, case)
        rows = {
            slug: {
                "next_task_ms": summarise(samples[slug]["ms"]),
                "queries_max": max(samples[slug]["queries"]),
            }
            for slug in SLUGS
        }
        rows["ratio_large_to_small"] = ratios(
            rows["small"]["next_task_ms"], rows["large"]["next_task_ms"]
        )
        cases[case] = rows
    print("case http ...", flush=True)
    http = measure_http(projects, args.calls, args.seed)
    cases["http"] = {
        slug: {
            "next_task_ms": summarise(http[slug]["next_ms"]),
            "submit_ms": summarise(http[slug]["submit_ms"]),
            "next_task_statements": max(http[slug]["next_q"]),
            "submit_statements": max(http[slug]["submit_q"]),
        }
        for slug in SLUGS
    }
    cases["http"]["ratio_large_to_small"] = ratios(
        cases["http"]["small"]["next_task_ms"], cases["http"]["large"]["next_task_ms"]
    )
    exhausted = get_user_model().objects.get(username="large-exhausted")
    plans = pick_plans(projects["large"], exhausted)
    worst = max(cases[c]["ratio_large_to_small"]["p50"] for c in cases)
    result = {
        "benchmark": "queue_scaling",
        "database": "postgresql",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "sizes": sizes,
        "calls_per_case_and_project": args.calls,
        "history_skipped_per_annotator": args.history,
        "load_seconds": load_s,
        "cases": cases,
        "target_ratio": TARGET_RATIO,
        "worst_p50_ratio": worst,
        "meets_target": worst <= TARGET_RATIO,
        "plans_large_exhausted_annotator": plans,
    }
    print(f"sizes: {sizes}")
    print(
        f"{'case':<10}{'project':<8}{'p50 ms':>9}{'p99 ms':>9}{'mean':>8}"
        f"{'statements':>12}"
    )
    for case, rows in cases.items():
        for slug in SLUGS:
            row = rows[slug]
            stats = row["next_task_ms"]
            statements = row.get("queries_max") or (
                f"{row['next_task_statements']}+{row['submit_statements']}"
            )
            print(
                f"{case:<10}{slug:<8}{stats['p50']:>9.2f}{stats['p99']:>9.2f}"
                f"{stats['mean']:>8.2f}{statements!s:>12}"
            )
        r = rows["ratio_large_to_small"]
        print(f"{'':<10}{'large/small':<8} p50 x{r['p50']} p99 x{r['p99']}")
    print(f"worst large/small p50 ratio: x{worst} (target <= x{TARGET_RATIO})")
    for name, plan in plans.items():
        print(f"plan of the {name} pick (large project, exhausted annotator):\n{plan}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "queue_scaling.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
