"""Overhead of Prefline's training wrapper over bare TRL, on the same DPO job.

Runs the same DPO job (tiny model, fixed data, fixed steps, LoRA, CPU or GPU) through
`manage.py train_dpo` (run registry, metrics rows every logging step, checkpoint
rows, cancel polling, progress lines) and through `bench/dpo_bare_trl.py` (a bare TRL
script), alternating, several times. Tokens/s is the trainer's processed tokens
(TRL's `num_tokens`) over the trainer's own `train_runtime`, so process start-up and
model loading are excluded; whole-process wall time is reported beside it.

    .venv/bin/python bench/training_overhead.py --repeats 3 --max-steps 20

Prints a table and writes bench/results/training_overhead.json. Target: Prefline's
tokens/s >= 0.95x bare TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "training_overhead.json"
TARGET_RATIO = 0.95


def prepare(work: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    from datasets import Dataset, DatasetDict

    from tests.training.conftest import preference_rows
    from training.tiny_model import build_tiny_model

    model = build_tiny_model(work / "tiny", seed=0)
    data = work / "pairs"
    DatasetDict({"train": Dataset.from_list(preference_rows(repeat=16))}).save_to_disk(
        str(data)
    )
    return model, data


def environment(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "PREFLINE_DATA_DIR": str(work / "data"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "DEBUG": "1",
    }


def run_prefline(model, data, work, index, args) -> dict:
    env = environment(work)
    out = work / f"prefline-{index}"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "manage.py"), "train_dpo",
            "--dataset", str(data), "--model", str(model), "--output-dir", str(out),
            "--max-steps", str(args.max_steps),
            "--per-device-train-batch-size", str(args.batch_size),
            "--logging-steps", str(args.logging_steps),
            "--save-steps", str(args.max_steps), "--eval-strategy", "no",
            "--no-gradient-checkpointing", "--no-bf16", "--seed", "42",
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


def run_bare(model, data, work, index, args) -> dict:
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "dpo_bare_trl.py"),
            "--model", str(model), "--dataset", str(data),
            "--output-dir", str(work / f"bare-{index}"),
            "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size),
            "--logging-steps", str(args.logging_steps),
        ],
        cwd=ROOT, env=environment(work), capture_output=True, text=True,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"bare TRL failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def tokens_per_second(result: dict) -> float:
    return result["num_tokens"] / result["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--logging-steps", type=int, default=1)
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory(prefix="prefline-bench-") as tmp:
        work = Path(tmp)
        model, data = prepare(work)
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"],
            cwd=ROOT, env=environment(work), check=True,
        )  # fmt: skip
        runs = []
        for index in range(args.repeats):
            # Alternate the order so that drift in machine load hits both sides.
            order = ("prefline", "bare") if index % 2 == 0 else ("bare", "prefline")
            pair = {}
            for name in order:
                runner = run_prefline if name == "prefline" else run_bare
                pair[name] = runner(model, data, work, index, args)
            runs.append(pair)

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
    summary = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "settings": vars(args),
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
    print(
        f"{'rep':>3} {'tokens':>7} {'prefline tok/s':>15} {'bare tok/s':>11} "
        f"{'ratio':>6} {'prefline wall s':>16} {'bare wall s':>12}"
    )
    for r in rows:
        print(
            f"{r['repeat']:>3} {r['tokens']:>7.0f} {r['prefline_tokens_per_s']:>15.1f} "
            f"{r['bare_tokens_per_s']:>11.1f} {r['ratio']:>6.3f} "
            f"{r['prefline_wall_s']:>16.1f} {r['bare_wall_s']:>12.1f}"
        )
    print(
        f"median tokens/s: Prefline {prefline_median:.1f}, bare TRL {bare_median:.1f}; "
        f"ratio {summary['ratio_of_medians']:.3f} (target >= {TARGET_RATIO}) "
        f"on {summary['device']}"
    )
    print(
        f"best tokens/s: Prefline {prefline_best:.1f}, bare TRL {bare_best:.1f}; "
        f"ratio {summary['ratio_of_best']:.3f}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
