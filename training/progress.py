"""Progress lines while a command trains, and the summary it prints at the end.

Lines, not a redrawn bar: the worker writes the command's output to the run's log,
and the run page shows its tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from transformers import TrainerCallback

SHOWN_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "reward", "kl")
PROGRESS_INTERVAL_SECONDS = 10.0


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return str(timedelta(seconds=round(max(seconds, 0.0))))


def progress_line(
    *,
    run_id: int,
    step: int,
    max_steps: int,
    first_step: int,
    elapsed: float,
    metrics: dict[str, float] | None = None,
) -> str:
    """Format one line: step/total, percent, speed, elapsed, ETA and key metrics.

    Speed and ETA count only the steps made by this process (a resumed run starts
    counting at its checkpoint).
    """
    done = step - first_step
    rate = done / elapsed if elapsed > 0 and done > 0 else None
    eta = (max_steps - step) / rate if rate else None
    percent = 100.0 * step / max_steps if max_steps else 0.0
    parts = [
        f"[run {run_id}] step {step}/{max_steps} ({percent:.0f}%)",
        f"{rate:.2f} steps/s" if rate else "- steps/s",
        f"elapsed {format_duration(elapsed)}",
        f"ETA {format_duration(eta)}",
    ]
    for key in SHOWN_METRICS:
        value = (metrics or {}).get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    return " | ".join(parts)


def summary_lines(
    *,
    run_id: int,
    status: str,
    steps: int,
    seconds: float,
    checkpoints: list[str],
    output_dir: str,
    error: str = "",
) -> list[str]:
    lines = [
        f"Run {run_id} {status} after {steps} steps in {format_duration(seconds)}.",
        f"Output directory: {output_dir}",
    ]
    if checkpoints:
        lines.append("Checkpoints:")
        lines.extend(f"  {path}" for path in checkpoints)
    if error:
        lines.append(f"Reason: {error.strip().splitlines()[-1]}")
    return lines


class ProgressCallback(TrainerCallback):
    """Print a progress line at each logging step, and at least every 10 seconds."""

    def __init__(self, *, run_id: int, write: Callable[[str], None]) -> None:
        self.run_id = run_id
        self.write = write
        self.started = 0.0
        self.first_step = 0
        self.last_line = 0.0
        self.last_metrics: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last_line = time.monotonic()
        self.first_step = state.global_step
        if state.is_world_process_zero:
            resumed = (
                f", resuming at step {state.global_step}" if self.first_step else ""
            )
            self.write(f"[run {self.run_id}] training {state.max_steps} steps{resumed}")

    def _emit(self, state) -> None:
        self.last_line = time.monotonic()
        self.write(
            progress_line(
                run_id=self.run_id,
                step=state.global_step,
                max_steps=state.max_steps,
                first_step=self.first_step,
                elapsed=self.last_line - self.started,
                metrics=self.last_metrics,
            )
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if (
            state.is_world_process_zero
            and logs
            and "train_runtime" not in logs
            and not any(key.startswith("eval_") for key in logs)
        ):
            self.last_metrics = logs
            self._emit(state)

    def on_step_end(self, args, state, control, **kwargs):
        if (
            state.is_world_process_zero
            and time.monotonic() - self.last_line >= PROGRESS_INTERVAL_SECONDS
        ):
            self._emit(state)
