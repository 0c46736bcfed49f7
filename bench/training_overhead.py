"""Overhead of Prefline's training wrapper over bare TRL, on the same DPO job.

Runs the same DPO job (same model, fixed data, fixed steps, LoRA, seed 42) through
`manage.py train_dpo` (run registry rows, a metric row per logging step, checkpoint
rows, cancel polling, progress lines) and through `bench/dpo_bare_trl.py` (a bare TRL
script, no database), alternating, several times. Both sides run with tqdm off and
print one line per logging step (Prefline its progress line, TRL its log dict).
Tokens/s is the trainer's processed tokens (TRL's `num_tokens`) over the trainer's
own `train_runtime`, so process start-up and model loading are excluded; whole
process wall time is reported beside it. Each pair must have processed the same
number of tokens in the same number of steps, or the run stops.

The registry is written to PostgreSQL, as in production (a bench database of its
own on `--server-url`, DEBUG off); `--database sqlite` uses a SQLite file instead.

    .venv/bin/python bench/training_overhead.py --repeats 3 --max-steps 20
    .venv/bin/python bench/training_overhead.py --database sqlite

`--gpu` is the real-size mode and needs a CUDA GPU with bf16: a small real model
(`--model`, default Qwen/Qwen2.5-0.5B-Instruct: a local directory or a hub id the
machine can download) in bf16 with gradient checkpointing, on 4x the data. Without
`--gpu` the job is the tiny model on CPU in float32, which any machine runs.

Prints a table and writes bench/results/training_overhead.json (`--out`). Target:
Prefline's tokens/s >= 0.95x bare TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _postgres import create_database, database_url  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "training_overhead.json"
TARGET_RATIO = 0.95
GPU_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
NO_GPU = "--gpu needs a CUDA GPU with bf16; run without --gpu for the CPU mode."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--logging-steps", type=int, default=1)
    parser.add_argument(
        "--database",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="where the registry is written (production: PostgreSQL)",
    )
    parser.add_argument(
        "--server-url",
        default=os.environ.get("DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
        help="any database URL on the PostgreSQL server to use",
    )
    parser.add_argument("--db-name", default="prefline_training_bench")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="real-size mode: --model in bf16 on a CUDA GPU (needs one)",
    )
    parser.add_argument(
        "--model", default="", help=f"model for --gpu (default {GPU_MODEL})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP/MKL threads for both sides (default: torch's); 1 steadies the "
        "timings on a machine whose cores other jobs share",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.gpu:
        import torch

        if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
            parser.error(NO_GPU)
    return args


def prepare(work: Path, args) -> tuple[str, Path]:
    """The model (tiny on CPU, --model on GPU) and the fixed preference data."""
    sys.path.insert(0, str(ROOT))
    from datasets import Dataset, DatasetDict

    from tests.training.conftest import preference_rows

    if args.gpu:
        model = args.model or GPU_MODEL
    else:
        from training.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny", seed=0))
    data = work / "pairs"
    rows = preference_rows(repeat=16 if not args.gpu else 64)
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(data))
    return model, data


def environment(work: Path, database: str, threads: int | None) -> dict[str, str]:
    """Production settings (DEBUG off) on the bench database, the same for both."""
    pinned = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return {
        **os.environ,
        **(pinned if threads else {}),
        "DATABASE_URL": database,
        "PREFLINE_DATA_DIR": str(work / "data"),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "PYTHONUNBUFFERED": "1",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(40),
    }


def bare_flags(args) -> list[str]:
    """The bare script's flags for what Prefline's run_prefline passes explicitly."""
    return ["--bf16", "--gradient-checkpointing"] if args.gpu else []


def run_prefline(model, data, work, index, args, env) -> dict:
    out = work / f"prefline-{index}"
    precision = ["--bf16"] if args.gpu else ["--no-bf16"]
    checkpointing = (
        ["--gradient-checkpointing"] if args.gpu else ["--no-gradient-checkpointing"]
    )
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "manage.py"), "train_dpo",
            "--dataset", str(data), "--model", str(model), "--output-dir", str(out),
            "--max-steps", str(args.max_steps),
            "--per-device-train-batch-size", str(args.batch_size),
            "--logging-steps", str(args.logging_steps),
            "--save-steps", str(args.max_steps), "--eval-strategy", "no",
            *checkpointing, *precision, "--seed", "42",
            "--learning-rate", "5e-6", "--beta", "0.1", "--loss-type", "sigmoid",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"train_dpo failed:\n{completed.stdout[-3000:]}")
    query = (
        "import json; from training.models import TrainingRun; "
        f"r = TrainingRun.objects.get(output_dir={str(out)!r}); "
        "t = max(m.values.get('num_tokens', 0) for m in r.metrics.all()); "
        "print(json.dumps({'train_runtime': r.summary['train_runtime'], "
        "'num_tokens': t, 'global_step': r.summary['global_step'], "
        "'metric_rows': r.metrics.count()}))"
    )
    shell = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", query],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(shell.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": wall}


def run_bare(model, data, work, index, args, env) -> dict:
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "dpo_bare_trl.py"),
            "--model", str(model), "--dataset", str(data),
            "--output-dir", str(work / f"bare-{index}"),
            "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size),
            "--logging-steps", str(args.logging_steps), *bare_flags(args),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"bare TRL failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def tokens_per_second(result: dict) -> float:
    return result["num_tokens"] / result["train_runtime"]


def database_for(work: Path, args) -> str:
    if args.database == "sqlite":
        return f"sqlite:///{work / 'bench.sqlite3'}"
    url = database_url(args.server_url, args.db_name, bench="training_overhead")
    create_database(args.server_url, args.db_name)
    return url


def measure(args) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="prefline-bench-") as tmp:
        work = Path(tmp)
        model, data = prepare(work, args)
        env = environment(work, database_for(work, args), args.threads)
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"],
            cwd=ROOT, env=env, check=True,
        )  # fmt: skip
        runs = []
        for index in range(args.repeats):
            # Alternate the order so that drift in machine load hits both sides.
            order = ("prefline", "bare") if index % 2 == 0 else ("bare", "prefline")
            pair = {}
            for name in order:
                runner = run_prefline if name == "prefline" else run_bare
                pair[name] = runner(model, data, work, index, args, env)
            runs.append(pair)
    return runs


def summarise(runs: list[dict], args) -> dict:
    import torch

    rows = []
    for index, pair in enumerate(runs):
        p, b = pair["prefline"], pair["bare"]
        if p["num_tokens"] != b["num_tokens"] or p["global_step"] != b["global_step"]:
            raise SystemExit(f"run {index}: the two jobs differ: {p} vs {b}")
        rows.append(
            {
                "repeat": index,
                "tokens": p["num_tokens"],
                "prefline_tokens_per_s": tokens_per_second(p),
                "bare_tokens_per_s": tokens_per_second(b),
                "ratio": tokens_per_second(p) / tokens_per_second(b),
                "prefline_wall_s": p["wall_seconds"],
                "bare_wall_s": b["wall_seconds"],
                "prefline_metric_rows": p["metric_rows"],
            }
        )
    prefline_median = statistics.median(r["prefline_tokens_per_s"] for r in rows)
    bare_median = statistics.median(r["bare_tokens_per_s"] for r in rows)
    prefline_best = max(r["prefline_tokens_per_s"] for r in rows)
    bare_best = max(r["bare_tokens_per_s"] for r in rows)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings.pop("server_url", None)
    return {
        "device": torch.cuda.get_device_name() if args.gpu else "cpu",
        "dtype": "bfloat16" if args.gpu else "float32",
        "database": args.database,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "settings": settings,
        "rows": rows,
        "prefline_tokens_per_s_median": prefline_median,
        "bare_tokens_per_s_median": bare_median,
        "ratio_of_medians": prefline_median / bare_median,
        "ratio_median": statistics.median(r["ratio"] for r in rows),
        # Best of N filters out interference from other jobs on a shared machine.
        "prefline_tokens_per_s_best": prefline_best,
        "bare_tokens_per_s_best": bare_best,
        "ratio_of_best": prefline_best / bare_best,
        "target_ratio": TARGET_RATIO,
    }


def print_table(summary: dict) -> None:
    print(
        f"{'rep':>3} {'tokens':>7} {'prefline tok/s':>15} {'bare tok/s':>11} "
        f"{'ratio':>6} {'prefline wall s':>16} {'bare wall s':>12} {'rows':>5}"
    )
    for r in summary["rows"]:
        print(
            f"{r['repeat']:>3} {r['tokens']:>7.0f} {r['prefline_tokens_per_s']:>15.1f} "
            f"{r['bare_tokens_per_s']:>11.1f} {r['ratio']:>6.3f} "
            f"{r['prefline_wall_s']:>16.1f} {r['bare_wall_s']:>12.1f} "
            f"{r['prefline_metric_rows']:>5}"
        )
    print(
        f"median tokens/s: Prefline {summary['prefline_tokens_per_s_median']:.1f}, "
        f"bare TRL {summary['bare_tokens_per_s_median']:.1f}; ratio "
        f"{summary['ratio_of_medians']:.3f} (target >= {TARGET_RATIO}) on "
        f"{summary['device']} ({summary['dtype']}), registry on {summary['database']}"
    )
    print(
        f"best tokens/s: Prefline {summary['prefline_tokens_per_s_best']:.1f}, "
        f"bare TRL {summary['bare_tokens_per_s_best']:.1f}; "
        f"ratio {summary['ratio_of_best']:.3f}"
    )


def main() -> None:
    args = parse_args()
    summary = summarise(measure(args), args)
    print_table(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
