"""Benchmark: export 1M judgments on 250k comparisons from PostgreSQL to Parquet.

Usage (PostgreSQL on 127.0.0.1:5432, user postgres):

    .venv/bin/python bench/export.py                   # 100k and 1M judgments
    .venv/bin/python bench/export.py --sizes 20000     # a quick run
    .venv/bin/python bench/export.py --reuse           # keep a database seeded before

It creates its own database (`--database`, default `prefline_bench_export`; dropped
and re-created unless `--reuse` finds it seeded), runs the migrations, bulk-inserts
each size with one `generate_series` INSERT per table (4 judgments per comparison
from 20 annotators, one comparison per prompt), then, for each size, in fresh child
processes (so peak RSS is per measurement):

- `export_parquet`: the real `build_files` (standard preference format, majority,
  10% held out) writing only Parquet (`files=("parquet",)`), with everything a
  snapshot needs beside it: hygiene report, card, judgment ids, checksums;
- `export_all`: the same writing every file kind (Parquet, JSONL, `datasets` folder);
- `floor_parquet`: pyarrow writing the same Parquet tables (read into memory first,
  untimed) with the same settings and row groups; its files must be byte-identical
  to the export's, which the run checks;
- `floor_all`: from memory, every large output the export writes: the same Parquet,
  the JSONL bytes (already encoded, so only written), the Arrow IPC streams of the
  `datasets` folder, and the sha256 of all of them (SHA256SUMS is an output too);
- `reads`: the database part alone: the first pass (`export_plan`) and the second
  pass's text reads as the export makes them (`_texts`, on both connections), with
  nothing built or written;
- `db_floor`: the plainest read of what the export needs, as a second reference:
  binary COPY of the project's comparisons and votes (the columns the export
  uses), then of all its prompts' messages and responses' texts, by two psql
  processes at once (libpq, no Python per row), the bytes read and dropped; wall
  time (also as a ratio to the Parquet floor), client (psql) and server CPU.

Each child first imports what the export loads lazily (pyarrow modules, xxhash,
`datasets` when written), as a worker process that has exported once has; that
fixed cost is reported apart (`imports_s`), not in the timings.

Reported per size: wall time, rows/s, judgments/s, peak RSS (ru_maxrss of each
child), CPU seconds of the exporting process and of the PostgreSQL server (all its
processes, /proc, local server only), the export's stage timings, the ratios (a)
export_parquet / floor_parquet and (b) export_all / floor_all (targets: within 3x),
and microseconds per judgment at each size (linearity). Timings are the best of
`--repeat` runs. Writes `bench/results/export.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
N_ANNOTATORS = 20
VOTES_PER_COMPARISON = 4
FLOOR_REPEAT = 3


def bench_env(database: str, data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"{BASE_URL}/{database}",
        PREFLINE_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        PYTHONPATH=str(REPO),
        LOG_LEVEL="WARNING",
    )
    return env


def create_database(database: str, env: dict, *, reuse: bool) -> bool:
    """(Re)create and migrate the bench database; True when it must be seeded."""
    sys.path.insert(0, str(REPO / "bench"))
    from _postgres import create_database as create

    fresh = create(f"{BASE_URL}/postgres", database, reuse=reuse)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        env=env,
        cwd=REPO,
        check=True,
    )
    return fresh


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
    priority, origin, judgment_count, lease_count, random_key, created_at{counters})
SELECT q.project_id, q.id, min(r.id), max(r.id), 0, 'import', {votes}, 0, random(),
       now(){zeros}
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


def seed(database: str, slug: str, judgments: int) -> float | None:
    """Insert one bench project; None when it is already there (`--reuse`)."""
    import psycopg

    with psycopg.connect(f"{BASE_URL}/{database}", autocommit=True) as conn:
        if conn.execute(
            "SELECT 1 FROM annotation_project WHERE slug = %s", [slug]
        ).fetchone():
            return None
        start = time.perf_counter()
        # Counter columns the queue keeps (NOT NULL, no database default): zero.
        counters = [
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'annotation_comparison' AND is_nullable = 'NO' "
                "AND column_default IS NULL AND column_name LIKE %s "
                "AND column_name NOT IN ('judgment_count', 'lease_count') "
                "ORDER BY column_name",
                ["%\\_count"],
            ).fetchall()
        ]
        sql = SEED_SQL.format(
            slug=slug,
            comparisons=judgments // VOTES_PER_COMPARISON,
            votes=VOTES_PER_COMPARISON,
            annotators=N_ANNOTATORS,
            counters="".join(f", {c}" for c in counters),
            zeros=", 0" * len(counters),
        )
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement)
    return time.perf_counter() - start


# --- children -----------------------------------------------------------------------


def _preimport(files: str) -> float:
    """Import what an export loads lazily, as a worker that exported before has;
    return the seconds it took (reported apart: a fixed cost per process)."""
    import importlib

    start = time.perf_counter()
    # pyarrow imports pandas on its first `pa.array` of a NumPy array.
    names = ["pyarrow.compute", "pyarrow.json", "pyarrow.parquet", "xxhash", "pandas"]
    names += ["exports.columns", "exports.jsonlines", "tokenizers"]
    if "datasets" in files:
        names.append("datasets")
    for name in names:
        importlib.import_module(name)
    return time.perf_counter() - start


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _backend_cpu():
    """CPU seconds of the PostgreSQL server so far (None if not readable): its
    postmaster's live children (this process's backend, the export's second
    read connection, background workers) plus those that exited (counted in the
    postmaster's cutime/cstime), so a backend that closes mid-export counts."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    tick = os.sysconf("SC_CLK_TCK")

    def fields(p):
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    try:
        postmaster = int(fields(pid)[1])
    except OSError:
        return lambda: None

    def read():
        try:
            own = fields(postmaster)
            total = sum(int(own[i]) for i in (11, 12, 13, 14))
        except OSError:
            return None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = fields(entry.name)
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                total += int(stat[11]) + int(stat[12])
        return total / tick

    return read


def child_export(slug: str, out: str, files: str) -> dict:
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
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Capture())
    project = Project.objects.get(slug=slug)
    imports_s = _preimport(files)
    backend = _backend_cpu()
    db0, cpu0 = backend(), time.process_time()
    start = time.perf_counter()
    snapshot = snapshot_export(
        project=project,
        user=None,
        config=ExportConfig(files=tuple(files.split(","))),
        out_dir=Path(out),
    )
    wall = time.perf_counter() - start
    db1 = backend()
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
        "db_cpu_s": None if db0 is None or db1 is None else db1 - db0,
        "stages_s": stages,
        "imports_s": imports_s,
        "rows": sum(snapshot.counts.values()),
        "judgments": snapshot.judgment_count,
        "dropped": snapshot.dropped,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_reads(slug: str) -> dict:
    """The database part of an export alone: the first pass, then the second pass's
    text reads as the export makes them (`_texts`: the next batches read on every
    connection of the snapshot at once), with nothing built or written."""
    import django

    django.setup()
    from annotation.models import Project
    from exports.formats import ExportConfig
    from exports.selectors import consistent_read, export_plan
    from exports.services import _Clock, _texts

    project = Project.objects.get(slug=slug)
    _preimport("")
    backend = _backend_cpu()
    db0, cpu0 = backend(), time.process_time()
    start = time.perf_counter()
    with consistent_read():
        plan = export_plan(project, ExportConfig())
        plan_s = time.perf_counter() - start
        for _ in _texts(plan, _Clock()):
            pass
    wall = time.perf_counter() - start
    db1 = backend()
    return {
        "wall_s": wall,
        "plan_s": plan_s,
        "texts_s": wall - plan_s,
        "cpu_s": time.process_time() - cpu0,
        "db_cpu_s": None if db0 is None or db1 is None else db1 - db0,
        "peak_rss_mb": _peak_rss_mb(),
    }


# Per part, the two large statements first: each psql process takes every other one.
DB_FLOOR_SQL = {
    "votes": [
        "SELECT id, comparison_id, annotator_id, choice, left_is_first "
        "FROM annotation_judgment WHERE comparison_id BETWEEN {c_low} AND {c_mid}",
        "SELECT id, comparison_id, annotator_id, choice, left_is_first "
        "FROM annotation_judgment WHERE comparison_id BETWEEN {c_mid1} AND {c_high}",
        "SELECT id, prompt_id, response_a_id, response_b_id FROM annotation_comparison "
        "WHERE project_id = {project}",
    ],
    "texts": [
        "SELECT id, text FROM annotation_response WHERE id BETWEEN {r_low} AND {r_mid}",
        "SELECT id, text FROM annotation_response "
        "WHERE id BETWEEN {r_mid1} AND {r_high}",
        "SELECT id, messages FROM annotation_prompt WHERE project_id = {project}",
    ],
}
DB_FLOOR_CLIENTS = 2


def _copy_with_psql(url: str, statements: list[str]) -> int:
    """Run `COPY (statement) TO STDOUT (FORMAT binary)` for every statement in
    `DB_FLOOR_CLIENTS` psql processes at once (each takes every other statement);
    return the bytes they wrote, read here in 1 MiB blocks and dropped.

    psql (libpq, C) is the cheapest client there is, so the client CPU is psql's
    own work, not a Python loop per row (psycopg's COPY iterator yields rows)."""
    import threading

    received = [0] * DB_FLOOR_CLIENTS

    def drain(i: int, pipe) -> None:
        while block := pipe.read(1 << 20):
            received[i] += len(block)

    processes, threads = [], []
    for i in range(DB_FLOOR_CLIENTS):
        args = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        for sql in statements[i::DB_FLOOR_CLIENTS]:
            args += ["-c", f"COPY ({sql}) TO STDOUT (FORMAT binary)"]
        process = subprocess.Popen(args, stdout=subprocess.PIPE)
        processes.append(process)
        threads.append(threading.Thread(target=drain, args=[i, process.stdout]))
        threads[-1].start()
    for process, thread in zip(processes, threads, strict=True):
        thread.join()
        if process.wait():
            sys.exit(f"psql failed ({process.returncode}) on {statements}")
    return sum(received)


def child_db_floor(slug: str) -> dict:
    """The plainest full read of what the export needs (see the module docstring)."""
    import django

    django.setup()
    from annotation.models import Comparison, Project, Response

    project = Project.objects.get(slug=slug)
    comparisons = Comparison.objects.filter(project=project)
    c_low, c_high = (
        comparisons.order_by("id").values_list("id", flat=True).first(),
        comparisons.order_by("-id").values_list("id", flat=True).first(),
    )
    responses = Response.objects.filter(prompt__project=project)
    r_low, r_high = (
        responses.order_by("id").values_list("id", flat=True).first(),
        responses.order_by("-id").values_list("id", flat=True).first(),
    )
    c_mid, r_mid = (c_low + c_high) // 2, (r_low + r_high) // 2
    values = dict(
        project=project.pk,
        c_low=c_low,
        c_mid=c_mid,
        c_mid1=c_mid + 1,
        c_high=c_high,
        r_low=r_low,
        r_mid=r_mid,
        r_mid1=r_mid + 1,
        r_high=r_high,
    )
    url = os.environ["DATABASE_URL"]
    backend = _backend_cpu()
    result = {}
    for part, statements in DB_FLOOR_SQL.items():
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        db0, cpu0 = backend(), time.process_time()
        start = time.perf_counter()
        received = _copy_with_psql(url, [sql.format(**values) for sql in statements])
        wall = time.perf_counter() - start
        db1 = backend()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        psql_cpu = (after.ru_utime + after.ru_stime) - (
            children.ru_utime + children.ru_stime
        )
        result[part] = {
            "wall_s": wall,
            "cpu_s": time.process_time() - cpu0 + psql_cpu,
            "db_cpu_s": None if db0 is None or db1 is None else db1 - db0,
            "mb": received / 1e6,
        }
    result["wall_s"] = result["votes"]["wall_s"] + result["texts"]["wall_s"]
    return result


def child_floor(out: str, target: str, kinds: str) -> dict:
    """Write, from memory, what the export wrote (best of FLOOR_REPEAT)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from exports.writers import PARQUET_OPTIONS, ROW_GROUP_ROWS

    splits = sorted(p.stem for p in Path(out, "parquet").glob("*.parquet"))
    tables = {s: pq.read_table(Path(out, "parquet", f"{s}.parquet")) for s in splits}
    jsonl = {}
    arrow_schema = {}
    if kinds == "all":
        jsonl = {s: Path(out, "jsonl", f"{s}.jsonl").read_bytes() for s in splits}
        for s in splits:
            with pa.ipc.open_stream(Path(out, s, "data-00000-of-00001.arrow")) as r:
                arrow_schema[s] = r.schema

    def write(path: Path, data) -> None:
        # Each output is produced once in memory, hashed there and written once.
        if kinds == "all":
            hashlib.sha256(data).hexdigest()
        path.write_bytes(data)

    best, best_cpu = None, None
    for _ in range(FLOOR_REPEAT):
        shutil.rmtree(target, ignore_errors=True)
        Path(target).mkdir(parents=True)
        start, cpu0 = time.perf_counter(), time.process_time()
        for split, table in tables.items():
            if kinds != "all":
                pq.write_table(
                    table,
                    Path(target, f"{split}.parquet"),
                    row_group_size=ROW_GROUP_ROWS,
                    **PARQUET_OPTIONS,
                )
                continue
            sink = pa.BufferOutputStream()
            pq.write_table(
                table, sink, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS
            )
            write(Path(target, f"{split}.parquet"), sink.getvalue())
            write(Path(target, f"{split}.jsonl"), jsonl[split])
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, arrow_schema[split]) as writer:
                writer.write_table(
                    pa.Table.from_arrays(table.columns, schema=arrow_schema[split]),
                    max_chunksize=ROW_GROUP_ROWS,
                )
            write(Path(target, f"{split}.arrow"), sink.getvalue())
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        if best is None or wall < best:
            best, best_cpu = wall, cpu
    identical = all(
        Path(target, f"{s}.parquet").read_bytes()
        == Path(out, "parquet", f"{s}.parquet").read_bytes()
        for s in splits
    )
    return {
        "wall_s": best,
        "cpu_s": best_cpu,
        "rows": sum(t.num_rows for t in tables.values()),
        "parquet_identical_to_export": identical,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_child(env: dict, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        sys.exit(f"child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of(n: int, env: dict, work: Path, make_args) -> dict:
    runs = []
    for i in range(n):
        out = work / f"run-{time.monotonic_ns()}-{i}"
        runs.append(run_child(env, *make_args(out)))
        shutil.rmtree(out, ignore_errors=True)
    best = min(runs, key=lambda r: r["wall_s"])
    best["walls_s"] = [r["wall_s"] for r in runs]
    return best


def measure(n: int, env: dict, work: Path, repeat: int) -> dict:
    slug = f"bench-{n}"
    results = {}
    for kind, files in (("export_parquet", "parquet"), ("export_all", "")):
        files = files or "parquet,jsonl,datasets"
        results[kind] = best_of(
            repeat,
            env,
            work,
            lambda out, files=files: ("--child-export", slug, str(out), files),
        )
    keep = work / f"keep-{n}"
    shutil.rmtree(keep, ignore_errors=True)
    run_child(env, "--child-export", slug, str(keep), "parquet,jsonl,datasets")
    for kind, kinds in (("floor_parquet", "parquet"), ("floor_all", "all")):
        results[kind] = run_child(
            env, "--child-floor", str(keep), str(work / f"floor-{n}"), kinds
        )
    shutil.rmtree(keep, ignore_errors=True)
    results["reads"] = best_of(repeat, env, work, lambda out: ("--child-reads", slug))
    results["db_floor"] = best_of(
        repeat, env, work, lambda out: ("--child-db-floor", slug)
    )
    e, f = results["export_parquet"], results["floor_parquet"]
    a, g = results["export_all"], results["floor_all"]
    return {
        "judgments": n,
        "comparisons": n // VOTES_PER_COMPARISON,
        **results,
        "ratio_db_floor_to_floor": results["db_floor"]["wall_s"] / f["wall_s"],
        "ratio_parquet_to_floor": e["wall_s"] / f["wall_s"],
        "ratio_all_to_floor": a["wall_s"] / g["wall_s"],
        "us_per_judgment_parquet": e["wall_s"] / n * 1e6,
        "us_per_judgment_all": a["wall_s"] / n * 1e6,
    }


def print_report(results: list[dict]) -> None:
    header = (
        f"{'judgments':>10} {'rows':>8} {'what':>15} {'wall s':>7} {'floor s':>8} "
        f"{'x floor':>8} {'rows/s':>9} {'judg/s':>9} {'cpu s':>6} {'db cpu s':>8} "
        f"{'RSS MB':>7} {'us/judg':>8}"
    )
    print(header)
    for r in results:
        for kind, floor in (
            ("export_parquet", "floor_parquet"),
            ("export_all", "floor_all"),
        ):
            e, f = r[kind], r[floor]
            db = "-" if e["db_cpu_s"] is None else f"{e['db_cpu_s']:.2f}"
            print(
                f"{r['judgments']:>10} {e['rows']:>8} {kind:>15} {e['wall_s']:>7.2f} "
                f"{f['wall_s']:>8.2f} {e['wall_s'] / f['wall_s']:>8.1f} "
                f"{e['rows'] / e['wall_s']:>9.0f} {r['judgments'] / e['wall_s']:>9.0f} "
                f"{e['cpu_s']:>6.2f} {db:>8} {e['peak_rss_mb']:>7.0f} "
                f"{e['wall_s'] / r['judgments'] * 1e6:>8.2f}"
            )
        reads, floor_s = r["reads"], r["floor_parquet"]["wall_s"]
        print(
            f"{'':>10} {'':>8} {'reads only':>15} {reads['wall_s']:>7.2f} "
            f"{floor_s:>8.2f} {reads['wall_s'] / floor_s:>8.1f}  "
            f"(first pass {reads['plan_s']:.2f} s, texts {reads['texts_s']:.2f} s, "
            f"cpu {reads['cpu_s']:.2f} s, db cpu {reads['db_cpu_s'] or 0:.2f} s)"
        )
        db = r["db_floor"]
        parts = ", ".join(
            f"{part} {d['wall_s']:.2f} s, {d['mb']:.0f} MB, cpu {d['cpu_s']:.2f} s, "
            f"db cpu {d['db_cpu_s'] or 0:.2f} s"
            for part, d in ((part, db[part]) for part in ("votes", "texts"))
        )
        print(
            f"{'':>10} {'':>8} {'db floor':>15} {db['wall_s']:>7.2f} {floor_s:>8.2f} "
            f"{r['ratio_db_floor_to_floor']:>8.1f}  ({parts})"
        )
    for r in results:
        for kind in ("export_parquet", "export_all"):
            stages = {k: round(v, 3) for k, v in r[kind]["stages_s"].items()}
            print(f"stages {kind} at {r['judgments']}: {stages}")
    if len(results) > 1:
        small, large = results[0], results[-1]
        scale = large["judgments"] / small["judgments"]
        for kind in ("export_parquet", "export_all"):
            grow = large[kind]["wall_s"] / small[kind]["wall_s"]
            print(f"linearity {kind}: x{scale:.0f} judgments -> x{grow:.1f} time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="Judgment counts.")
    parser.add_argument("--database", default="prefline_bench_export")
    parser.add_argument("--reuse", action="store_true", help="Keep a seeded database.")
    parser.add_argument("--repeat", type=int, default=1, help="Best of N runs.")
    parser.add_argument("--child-export", nargs=3, metavar=("SLUG", "OUT", "FILES"))
    parser.add_argument("--child-floor", nargs=3, metavar=("OUT", "TARGET", "KINDS"))
    parser.add_argument("--child-reads", nargs=1, metavar="SLUG")
    parser.add_argument("--child-db-floor", nargs=1, metavar="SLUG")
    args = parser.parse_args()
    if args.child_export:
        print(json.dumps(child_export(*args.child_export)))
        return
    if args.child_floor:
        print(json.dumps(child_floor(*args.child_floor)))
        return
    if args.child_reads:
        print(json.dumps(child_reads(*args.child_reads)))
        return
    if args.child_db_floor:
        print(json.dumps(child_db_floor(*args.child_db_floor)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="prefline-bench-export-"))
    env = bench_env(args.database, work / "data")
    create_database(args.database, env, reuse=args.reuse)
    results = []
    for n in sizes:
        seed_s = seed(args.database, f"bench-{n}", n)
        results.append({"seed_s": seed_s, **measure(n, env, work, args.repeat)})
        print(f"done {n}", file=sys.stderr)
    print_report(results)
    out_path = REPO / "bench" / "results" / "export.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps({"cpu_count": os.cpu_count(), "runs": results}, indent=2)
    )
    print(f"written {out_path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
