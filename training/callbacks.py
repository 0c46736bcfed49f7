"""TrainerCallbacks that connect a TRL trainer to the run registry.

`RegistryCallback` records every number the trainer logs as a TrainingMetric row at
its step (live, so the run page can plot it), registers each checkpoint the trainer
saves, and stops training when the run is cancelled (web cancel or SIGTERM). Under
`accelerate launch` only the main process writes; the cancel decision is broadcast so
that every process stops at the same step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from transformers import TrainerCallback

from training import services

WEB_CANCEL_REASON = "Cancelled from the web."

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
CANCEL_POLL_SECONDS = 1.0
# Metric rows are written at most this often (and always at a checkpoint and at the
# end): one commit per logging step would cost several percent of a small model's
# step time. A checkpoint flushes first, so a crash loses only rows that a resume
# recomputes anyway.
METRIC_FLUSH_SECONDS = 2.0


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


class StopSignal:
    """Why training should stop, set from a signal handler or the cancel poll."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason


class RegistryCallback(TrainerCallback):
    def __init__(
        self,
        *,
        run_id: int,
        base_model: str,
        is_main_process: bool,
        stop: StopSignal | None = None,
    ) -> None:
        self.run_id = run_id
        self.base_model = base_model
        self.is_main_process = is_main_process
        self.stop = stop or StopSignal()
        self.train_summary: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.pending: list[dict] = []
        self._last_poll = 0.0
        self._last_flush = 0.0
        self._last_eval_step: int | None = None

    # Metrics -------------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        if any(key in logs for key in SUMMARY_KEYS):
            # The end-of-training summary, not a logging step.
            self.train_summary.update(
                {k: v for k, v in logs.items() if isinstance(v, int | float)}
            )
            return
        is_eval = any(key.startswith("eval_") for key in logs)
        values = {k: v for k, v in logs.items() if k != "epoch"}
        if is_eval:
            numbers = {k: v for k, v in values.items() if isinstance(v, int | float)}
            # Several eval logs at one step (TRL's evaluate, the held-out accuracy
            # of RL) all belong to the checkpoint saved there.
            same_step = self._last_eval_step == state.global_step
            self.last_eval = {**self.last_eval, **numbers} if same_step else numbers
            self._last_eval_step = state.global_step
        self.pending.append(
            {
                "step": state.global_step,
                "epoch": logs.get("epoch", state.epoch),
                "split": "eval" if is_eval else "train",
                "values": values,
            }
        )
        if is_eval or time.monotonic() - self._last_flush >= METRIC_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered metric rows (main process only)."""
        if self.pending:
            services.metric_record_many(run=self.run_id, rows=self.pending)
            self.pending = []
        self._last_flush = time.monotonic()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.flush()

    # Checkpoints ---------------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.flush()
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if not os.path.isdir(path):
            return
        services.checkpoint_register(
            run=self.run_id,
            path=path,
            step=state.global_step,
            is_adapter=is_adapter_dir(path),
            base_model=self.base_model,
            eval_metrics=self.last_eval,
        )

    # Cancel --------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        if self._should_stop(args, state):
            control.should_training_stop = True
            control.should_save = True

    def _should_stop(self, args, state) -> bool:
        stop = self.stop.reason is not None
        if not stop and state.is_world_process_zero:
            now = time.monotonic()
            if now - self._last_poll >= CANCEL_POLL_SECONDS:
                self._last_poll = now
                from training.models import TrainingRun

                if TrainingRun.objects.filter(
                    pk=self.run_id, cancel_requested=True
                ).exists():
                    self.stop.request(WEB_CANCEL_REASON)
                    stop = True
        if args.world_size > 1:
            from accelerate.utils import broadcast_object_list

            decision = [stop, self.stop.reason]
            broadcast_object_list(decision, from_process=0)
            stop = bool(decision[0])
            if stop:
                self.stop.request(decision[1] or "Cancelled.")
        return stop
