"""The worker side of a queued run: a django-tasks task that runs the training command.

`manage.py db_worker` claims the task (django-tasks' database backend) and calls
`execute_training_run(run_id)`, which starts `manage.py train_<kind> --run-id N` as
a subprocess (torch and TRL load there, never in the web or worker process), sends
its output to the run's log file, and once a second checks the run's
`cancel_requested`: on cancel it sends the process SIGTERM, then SIGKILL after
`KILL_AFTER_SECONDS`. A process that exits without recording an outcome (killed,
crashed on import, out of memory) leaves the run `failed` with its exit status and
the end of its log. The task never retries: a failed run stays failed until someone
resumes it on purpose. A worker asked to stop (SIGTERM/SIGINT) passes SIGTERM on to
the training process, which checkpoints and ends `cancelled`, ready for `--resume`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django_tasks import task

from training import services
from training.models import RunStatus, TrainingRun

POLL_SECONDS = 1.0
KILL_AFTER_SECONDS = 60.0
LOG_TAIL_IN_ERROR = 40

PROCESS_FAILED = (
    "The training process exited with status {code} without recording an outcome. "
    "Last lines of its log ({log}):\n{tail}"
)
PROCESS_NOT_STARTED = "Could not start the training process ({command}): {error}"
PROCESS_CANCELLED = "Cancelled: the training process was stopped (exit status {code})."
WORKER_STOPPED = (
    "The worker was stopped while this run was in progress; resume it with "
    "`manage.py train_{kind} --run-id {run_id} --resume`."
)


def training_command(run: TrainingRun) -> list[str]:
    """The command line that executes `run` (what a person could type themselves)."""
    manage = Path(settings.BASE_DIR) / "manage.py"
    return [sys.executable, str(manage), f"train_{run.kind}", "--run-id", str(run.pk)]


def default_log_path(run: TrainingRun) -> Path:
    return Path(settings.DATA_DIR) / "logs" / f"run-{run.pk}.log"


def _tail(path: str, lines: int = LOG_TAIL_IN_ERROR) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 16384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(log not readable)"
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


class _ShutdownForwarder:
    """While a run executes, pass the worker's SIGTERM/SIGINT on to the process.

    The worker's own handler still runs afterwards, so db_worker finishes this
    task and then exits (a second signal makes it exit at once: `finally` below
    then terminates the process).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> _ShutdownForwarder:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _stop(process: subprocess.Popen, *, grace: float) -> int:
    """SIGTERM the process, SIGKILL it after `grace` seconds; return its status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _supervise(run_id: int, process: subprocess.Popen) -> tuple[int, bool]:
    """Wait for the process, sending SIGTERM on cancel; return (status, cancelled)."""
    terminated_at: float | None = None
    while True:
        code = process.poll()
        if code is not None:
            return code, terminated_at is not None
        if terminated_at is None:
            cancel = (
                TrainingRun.objects.filter(pk=run_id)
                .values_list("cancel_requested", flat=True)
                .first()
            )
            if cancel is None or cancel:
                process.send_signal(signal.SIGTERM)
                terminated_at = time.monotonic()
        elif time.monotonic() - terminated_at > KILL_AFTER_SECONDS:
            process.kill()
        time.sleep(POLL_SECONDS)


def _record_outcome(
    run: TrainingRun, *, code: int, cancelled: bool, worker_signal: int | None
) -> str:
    """Record an outcome the process did not record itself; return the status."""
    run.refresh_from_db()
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return run.status
    if worker_signal is not None:
        reason = WORKER_STOPPED.format(kind=run.kind, run_id=run.pk)
        return services.run_cancel(run=run, reason=reason).status
    if cancelled or run.cancel_requested:
        return services.run_cancel(
            run=run, reason=PROCESS_CANCELLED.format(code=code)
        ).status
    error = PROCESS_FAILED.format(code=code, log=run.log_path, tail=_tail(run.log_path))
    return services.run_fail(run=run, error=error).status


@task()
def execute_training_run(run_id: int) -> str:
    """Execute queued run `run_id` in a subprocess; return its final status."""
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        return "missing"
    if run.status != RunStatus.QUEUED:
        return f"skipped ({run.status})"
    log_path = Path(run.log_path) if run.log_path else default_log_path(run)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run = services.run_log_attach(run=run, log_path=str(log_path))
    command = training_command(run)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=settings.BASE_DIR,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            error = PROCESS_NOT_STARTED.format(command=" ".join(command), error=exc)
            return services.run_fail(run=run, error=error).status
    forwarder = _ShutdownForwarder(process)
    cancelled = False
    try:
        with forwarder:
            _, cancelled = _supervise(run_id, process)
    finally:
        # Also reached when the worker is made to exit at once (second signal).
        code = _stop(process, grace=KILL_AFTER_SECONDS / 6)
        status = _record_outcome(
            run, code=code, cancelled=cancelled, worker_signal=forwarder.received
        )
    return status
