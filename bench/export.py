"""Benchmark: export 1M judgments on 250k comparisons from PostgreSQL to Parquet.

Usage (PostgreSQL on 127.0.0.1:5432, user postgres):

    .venv/bin/python bench/export.py                 # 100k and 1M judgments
    .venv/bin/python bench/export.py --sizes 20000   # a quick run

It creates its own database (`prefline_bench_export`, dropped and re-created), runs
the migrations, bulk-inserts each size with one `generate_series` INSERT per table
(4 judgments per comparison from 20 annotators, one comparison per prompt), then, for
each size, in fresh child processes:

- export: the real `snapshot_export` (standard preference format, majority, 10%
  held out): one consistent read, Parquet + JSONL + DatasetDict + hygiene + card;
- floor: pyarrow writing the same columns (read back into memory first, untimed) with
  the same Parquet settings: what writing Parquet costs with no database and no
  aggregation at all.

Reported: wall time, rows/s and judgments/s, peak RSS of each child (ru_maxrss), the
export's stage timings, the ratio export/floor (target: within 3x for the database to
Parquet stage), and time per judgment at each size (linearity). Writes
`bench/results/export.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DB = "prefline_bench_export"
BASE_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
N_ANNOTATORS = 20
VOTES_PER_COMPARISON = 4


def bench_env(data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"{BASE_URL}/{BENCH_DB}",
        PREFLINE_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        PYTHONPATH=str(REPO),
        LOG_LEVEL="WARNING",
    )
    return env


def create_database(env: dict) -> None:
    import psycopg

    with psycopg.connect(f"{BASE_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        env=env,
        cwd=REPO,
        check=True,
    )


SEED_SQL = """
SELECT setseed(0.42);
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
SELECT '!', false, 'bench-ann-' || g, '', '', '', false, true, now()
FROM generate_series(1, {annotators}) g
ON CONFLICT (username) DO NOTHING;
INSERT INTO annotation_project (slug, name, guidelines, aspects, target_judgments,
    lease_seconds, allow_tie, allow_both_bad, gold_rate, created_at, updated_at)
VALUES ('{slug}', 'Bench {slug}', '', '[]', {votes}, 600, true, true, 0, now(), now());
INSERT INTO annotation_prompt (project_id, messages, external_id, metadata, split,
                               content_hash, created_at)
SELECT p.id,
       jsonb_build_array(jsonb_build_object('role', 'user', 'content',
           'Question ' || g || ': ' || repeat(md5(g::text), 2))),
       '', '{{}}', 'train', md5('{slug}-p' || g), now()
FROM generate_series(1, {comparisons}) g, annotation_project p WHERE p.slug = '{slug}';
INSERT INTO annotation_response (prompt_id, text, model_name, generation_params,
                                 external_id, content_hash, created_at)
SELECT q.id, 'Answer ' || side || ' to ' || q.id || ': '
             || repeat(md5(q.id::text || side), (3 + q.id % 5)::int),
       'model-' || side, '{{}}', '', md5(q.id::text || side), now()
FROM annotation_prompt q JOIN annotation_project p ON p.id = q.project_id
CROSS JOIN (VALUES ('a'), ('b')) AS sides(side)
WHERE p.slug = '{slug}';
INSERT INTO annotation_comparison (project_id, prompt_id, response_a_id, response_b_id,
    priority, origin, judgment_count, lease_count, random_key, created_at)
SELECT q.project_id, q.id, min(r.id), max(r.id), 0, 'import', {votes}, 0, random(),
       now()
FROM annotation_prompt q JOIN annotation_project p ON p.id = q.project_id
JOIN annotation_response r ON r.prompt_id = q.id
WHERE p.slug = '{slug}' GROUP BY q.id, q.project_id;
INSERT INTO annotation_judgment (public_id, comparison_id, annotator_id, origin, choice,
    aspect_choices, rationale, left_is_first, is_gold, submitted_at, duration_ms)
SELECT gen_random_uuid(), c.id,
       (SELECT array_agg(id ORDER BY id) FROM auth_user
        WHERE username LIKE 'bench-ann-%')[1 + ((c.id * {votes} + k) % {annotators})],
       'human',
       CASE WHEN u < 0.62 THEN 'first' WHEN u < 0.90 THEN 'second'
            WHEN u < 0.96 THEN 'tie' ELSE 'both_bad' END,
       '{{}}', '', random() < 0.5, false, now(), 1000
FROM annotation_comparison c JOIN annotation_project p ON p.id = c.project_id
CROSS JOIN generate_series(0, {votes} - 1) k
CROSS JOIN LATERAL (SELECT random() + 0 * k + 0 * c.id AS u) r
WHERE p.slug = '{slug}';
ANALYZE;
"""


def seed(slug: str, judgments: int) -> float:
    import psycopg

    start = time.perf_counter()
    sql = SEED_SQL.format(
        slug=slug,
        comparisons=judgments // VOTES_PER_COMPARISON,
        votes=VOTES_PER_COMPARISON,
        annotators=N_ANNOTATORS,
    )
    with psycopg.connect(f"{BASE_URL}/{BENCH_DB}", autocommit=True) as conn:
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement)
    return time.perf_counter() - start


def child_export(slug: str, out: str) -> dict:
    import logging

    import django

    django.setup()
    from annotation.models import Project
    from exports.formats import ExportConfig
    from exports.services import snapshot_export

    stages = {}

    class Capture(logging.Handler):
        def emit(self, record):
            if record.args and isinstance(record.args[-1], dict):
                stages.update(record.args[-1].get("timings", {}))

    logger = logging.getLogger("exports.services")
    logger.setLevel(logging.INFO)
    logger.addHandler(Capture())
    project = Project.objects.get(slug=slug)
    start = time.perf_counter()
    snapshot = snapshot_export(
        project=project, user=None, config=ExportConfig(), out_dir=Path(out)
    )
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "stages_s": stages,
        "rows": sum(snapshot.counts.values()),
        "judgments": len(snapshot.judgment_ids),
        "dropped": snapshot.dropped,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_floor(out: str, target: str) -> dict:
    import pyarrow.parquet as pq

    from exports.writers import BATCH_ROWS, PARQUET_OPTIONS

    tables = {p.stem: pq.read_table(p) for p in sorted(Path(out, "parquet").glob("*"))}
    Path(target).mkdir(parents=True)
    start = time.perf_counter()
    for split, table in tables.items():
        pq.write_table(
            table,
            Path(target, f"{split}.parquet"),
            row_group_size=BATCH_ROWS,
            **PARQUET_OPTIONS,
        )
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "rows": sum(t.num_rows for t in tables.values()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(env: dict, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="Judgment counts.")
    parser.add_argument("--child-export", nargs=2, metavar=("SLUG", "OUT"))
    parser.add_argument("--child-floor", nargs=2, metavar=("OUT", "TARGET"))
    args = parser.parse_args()
    if args.child_export:
        print(json.dumps(child_export(*args.child_export)))
        return
    if args.child_floor:
        print(json.dumps(child_floor(*args.child_floor)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="prefline-bench-export-"))
    env = bench_env(work / "data")
    create_database(env)
    results = []
    for n in sizes:
        slug = f"bench-{n}"
        seed_s = seed(slug, n)
        out = work / f"export-{n}"
        export = run_child(env, "--child-export", slug, str(out))
        floor = run_child(env, "--child-floor", str(out), str(work / f"floor-{n}"))
        to_parquet = export["stages_s"].get("plan", 0) + export["stages_s"].get(
            "rows_parquet_jsonl", 0
        )
        results.append(
            {
                "judgments": n,
                "comparisons": n // VOTES_PER_COMPARISON,
                "seed_s": seed_s,
                "export": export,
                "floor": floor,
                "ratio_total_to_floor": export["wall_s"] / floor["wall_s"],
                "ratio_db_to_parquet_to_floor": to_parquet / floor["wall_s"],
                "us_per_judgment": export["wall_s"] / n * 1e6,
            }
        )
        print(f"done {n}", file=sys.stderr)

    header = (
        f"{'judgments':>10} {'rows':>8} {'export s':>9} {'db->parquet s':>14} "
        f"{'floor s':>8} {'x floor':>8} {'x floor(db->pq)':>16} {'rows/s':>9} "
        f"{'judg/s':>9} {'RSS MB':>7} {'us/judg':>8}"
    )
    print(header)
    for r in results:
        e = r["export"]
        db_pq = e["stages_s"].get("plan", 0) + e["stages_s"].get(
            "rows_parquet_jsonl", 0
        )
        print(
            f"{r['judgments']:>10} {e['rows']:>8} {e['wall_s']:>9.2f} {db_pq:>14.2f} "
            f"{r['floor']['wall_s']:>8.2f} {r['ratio_total_to_floor']:>8.1f} "
            f"{r['ratio_db_to_parquet_to_floor']:>16.1f} "
            f"{e['rows'] / e['wall_s']:>9.0f} {r['judgments'] / e['wall_s']:>9.0f} "
            f"{e['peak_rss_mb']:>7.0f} {r['us_per_judgment']:>8.1f}"
        )
    for r in results:
        print(f"stages at {r['judgments']}: {r['export']['stages_s']}")
    out_path = REPO / "bench" / "results" / "export.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps({"cpu_count": os.cpu_count(), "runs": results}, indent=2)
    )
    print(f"written {out_path}")


if __name__ == "__main__":
    main()
