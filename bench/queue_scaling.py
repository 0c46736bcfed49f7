"""Does next-task cost grow with project size? 1k vs 1M comparisons on PostgreSQL.

Builds its own database (default `prefline_queue_bench` on the server of
DATABASE_URL, or postgres://postgres@127.0.0.1:5432/postgres), migrates it, and
loads two projects with `generate_series` (seconds, not hours): "small" with 1,000
comparisons and "large" with 1,000,000, both with 0.1% gold comparisons and a gold
rate of 0.1. Then it times `next_assignment` (the service behind
`POST /next-task/`) for the same number of calls in each project, interleaving the two
so machine load hits both alike; every lease is judged right away with
`judgment_submit`, so the queue state moves on as in real use. It reports
p50/p95/mean latency, queries per call, the large/small ratio (target <= 1.5), and the
plan PostgreSQL uses for the candidate query.

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
TARGET_RATIO = 1.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300, help="next-task calls each")
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


def load_project(slug: str, comparisons: int):
    """Create a project with `comparisons` comparisons and its annotators, in SQL."""
    from django.db import connection

    from annotation.models import Role
    from annotation.services.projects import (
        membership_set,
        project_create,
        user_create,
    )

    project = project_create(
        slug=slug, name=slug, target_judgments=3, gold_rate=0.1, aspects=["overall"]
    )
    for i in range(ANNOTATORS):
        user = user_create(username=f"{slug}-annotator-{i}")
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
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
                 origin, gold_choice, judgment_count, lease_count, random_key,
                 created_at)
            SELECT %s, a.prompt_id, a.id, b.id, 0, 'import',
                   CASE WHEN random() < 0.001 THEN 'first' END, 0, 0, random(), now()
            FROM annotation_response a
            JOIN annotation_response b ON a.prompt_id = b.prompt_id AND a.id < b.id
            JOIN annotation_prompt p ON p.id = a.prompt_id
            WHERE p.project_id = %s
            LIMIT %s
            """,
            [project.pk, project.pk, comparisons],
        )
    return project


def candidate_plan(project, annotator) -> str:
    """EXPLAIN of the regular candidate query the service runs."""
    from django.db import connection, transaction

    from annotation.services import queue

    with transaction.atomic():
        qs = queue._candidates(annotator=annotator, project=project)
        qs = (
            qs.filter(
                gold_choice__isnull=True,
                judgment_count__lt=project.target_judgments,
            )
            .order_by("judgment_count", "-priority", "random_key")
            .values("pk")[:1]
        )
        sql, params = qs.query.sql_with_params()
        with connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            return "\n".join(row[0] for row in cur.fetchall())


def measure(projects: dict, calls: int, seed: int) -> dict:
    """Alternate next-task (+ submit) between the projects; return per-call stats."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from annotation.services.judgments import judgment_submit
    from annotation.services.queue import next_assignment

    rng = random.Random(seed)
    users = {
        slug: list(
            get_user_model().objects.filter(username__startswith=f"{slug}-annotator-")
        )
        for slug in projects
    }
    samples = {
        slug: {"next_ms": [], "submit_ms": [], "queries": []} for slug in projects
    }
    slugs = list(projects)
    for i in range(calls):
        rng.shuffle(slugs)
        for slug in slugs:
            project, annotator = projects[slug], users[slug][i % ANNOTATORS]
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                assignment = next_assignment(annotator=annotator, project=project)
                t1 = time.perf_counter()
            assert assignment is not None, f"{slug}: queue ran dry"
            judgment_submit(
                assignment=assignment,
                annotator=annotator,
                choice=rng.choice(["left", "right", "tie"]),
            )
            t2 = time.perf_counter()
            samples[slug]["next_ms"].append((t1 - t0) * 1000)
            samples[slug]["submit_ms"].append((t2 - t1) * 1000)
            samples[slug]["queries"].append(len(ctx.captured_queries))
    return samples


def summarise(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(pick(0.95), 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


def main() -> None:
    args = parse_args()
    url = database_url(args.server_url, args.db_name, bench="queue_scaling")
    must_load = create_database(args.server_url, args.db_name, reuse=args.reuse)
    setup_django(url)
    from django.core.management import call_command
    from django.db import connection

    from annotation.models import Comparison, Project

    load_s = None
    if must_load:
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        load_project("small", args.small)
        load_project("large", args.large)
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        load_s = round(time.perf_counter() - started, 1)
    projects = {slug: Project.objects.get(slug=slug) for slug in ("small", "large")}
    sizes = {
        slug: Comparison.objects.filter(project=p).count()
        for slug, p in projects.items()
    }
    samples = measure(projects, args.calls, args.seed)
    rows = {}
    for slug in projects:
        rows[slug] = {
            "comparisons": sizes[slug],
            "next_task_ms": summarise(samples[slug]["next_ms"]),
            "submit_ms": summarise(samples[slug]["submit_ms"]),
            "queries_per_next_task_max": max(samples[slug]["queries"]),
        }
    ratio_p50 = (
        rows["large"]["next_task_ms"]["p50"] / rows["small"]["next_task_ms"]["p50"]
    )
    ratio_mean = (
        rows["large"]["next_task_ms"]["mean"] / rows["small"]["next_task_ms"]["mean"]
    )
    from django.contrib.auth import get_user_model

    plan = candidate_plan(
        projects["large"],
        get_user_model().objects.get(username="large-annotator-0"),
    )
    result = {
        "benchmark": "queue_scaling",
        "database": "postgresql",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "calls_per_project": args.calls,
        "load_seconds": load_s,
        "projects": rows,
        "ratio_large_to_small": {
            "p50": round(ratio_p50, 3),
            "mean": round(ratio_mean, 3),
        },
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio_p50 <= TARGET_RATIO,
        "candidate_plan_large": plan,
    }
    print(
        f"{'project':<8}{'comparisons':>13}{'next p50':>10}{'p95':>8}{'mean':>8}"
        f"{'submit p50':>12}{'queries':>9}"
    )
    for slug, row in rows.items():
        nt, sm = row["next_task_ms"], row["submit_ms"]
        print(
            f"{slug:<8}{row['comparisons']:>13,}{nt['p50']:>10.2f}{nt['p95']:>8.2f}"
            f"{nt['mean']:>8.2f}{sm['p50']:>12.2f}{row['queries_per_next_task_max']:>9}"
        )
    print(
        f"large/small next-task latency: p50 x{ratio_p50:.2f}, mean x{ratio_mean:.2f} "
        f"(target <= x{TARGET_RATIO})"
    )
    print("candidate query plan (large project):\n" + plan)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "queue_scaling.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
