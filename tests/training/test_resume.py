"""Kill-and-resume, SIGTERM and web cancel, on a real `manage.py train_dpo` process
writing to the test database."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from training import services
from training.models import ModelCheckpoint, RunStatus, TrainingMetric, TrainingRun

pytestmark = [pytest.mark.training, pytest.mark.django_db(transaction=True)]

WAIT_SECONDS = 240
MAX_STEPS = 16
CANCEL_STEPS = 2000


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        if connection.is_in_memory_db():
            pytest.skip(
                "a subprocess cannot see an in-memory SQLite test database: set "
                "PREFLINE_TEST_DB_NAME to run this on SQLite"
            )
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or 'localhost'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


def train_dpo(*args: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "1",  # a fresh clone has no .env and no SECRET_KEY
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "train_dpo", *args],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def dpo_args(
    tiny_model_dir, preference_dir, output_dir, max_steps: int = MAX_STEPS
) -> list[str]:
    return [
        "--dataset", str(preference_dir), "--model", str(tiny_model_dir),
        "--max-steps", str(max_steps), "--save-steps", "2", "--logging-steps", "1",
        "--per-device-train-batch-size", "2", "--eval-strategy", "no",
        "--no-gradient-checkpointing", "--output-dir", str(output_dir),
    ]  # fmt: skip


def wait_for(condition, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"training exited early:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")


def test_killed_run_resumes_with_same_steps_and_no_duplicate_metrics(
    tiny_model_dir, preference_dir, tmp_path
):
    log = tmp_path / "first.log"
    process = train_dpo(
        *dpo_args(tiny_model_dir, preference_dir, tmp_path / "run"), log=log
    )
    wait_for(lambda: ModelCheckpoint.objects.filter(step__gte=2).exists(), process, log)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    run = TrainingRun.objects.get()
    assert run.status == RunStatus.RUNNING  # the process died without a verdict
    killed_at = max(run.metrics.values_list("step", flat=True))
    assert killed_at < MAX_STEPS

    log = tmp_path / "resume.log"
    resumed = train_dpo("--run-id", str(run.pk), "--resume", log=log)
    assert resumed.wait(timeout=WAIT_SECONDS) == 0, log.read_text()[-3000:]

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert "resuming at step" in log.read_text()
    steps = list(
        TrainingMetric.objects.filter(run=run, split="train").values_list(
            "step", flat=True
        )
    )
    assert steps == list(range(1, MAX_STEPS + 1))
    assert run.summary["global_step"] == MAX_STEPS
    checkpoint_steps = sorted(
        run.checkpoints.exclude(path=run.output_dir).values_list("step", flat=True)
    )
    assert checkpoint_steps == list(range(2, MAX_STEPS + 1, 2))


def test_sigterm_cancels_with_a_checkpoint_and_the_run_resumes(
    tiny_model_dir, preference_dir, tmp_path
):
    log = tmp_path / "sigterm.log"
    process = train_dpo(
        *dpo_args(tiny_model_dir, preference_dir, tmp_path / "run"), log=log
    )
    wait_for(lambda: TrainingMetric.objects.exists(), process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=WAIT_SECONDS) != 0

    run = TrainingRun.objects.get()
    assert run.status == RunStatus.CANCELLED, log.read_text()[-3000:]
    assert "SIGTERM" in run.error
    assert run.finished_at is not None
    last_step = max(run.metrics.values_list("step", flat=True))
    assert last_step < MAX_STEPS
    # The stop step was saved, so the cancelled run can be resumed.
    assert run.checkpoints.filter(step=run.summary["global_step"]).exists()
    assert f"--run-id {run.pk} --resume" in log.read_text()

    log = tmp_path / "resume.log"
    resumed = train_dpo("--resume", "--output-dir", str(tmp_path / "run"), log=log)
    assert resumed.wait(timeout=WAIT_SECONDS) == 0, log.read_text()[-3000:]
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.error == ""
    steps = list(run.metrics.values_list("step", flat=True))
    assert steps == list(range(1, MAX_STEPS + 1))


def test_cancel_requested_from_the_web_stops_the_run(
    tiny_model_dir, preference_dir, tmp_path
):
    log = tmp_path / "cancel.log"
    # Far more steps than the cancel needs: the run must still be going when the
    # cancel poll (every second) sees the request, however fast this machine is.
    process = train_dpo(
        *dpo_args(tiny_model_dir, preference_dir, tmp_path / "run", CANCEL_STEPS),
        log=log,
    )
    wait_for(lambda: TrainingMetric.objects.exists(), process, log)
    services.run_cancel_request(run=TrainingRun.objects.get())
    process.wait(timeout=WAIT_SECONDS)

    run = TrainingRun.objects.get()
    assert run.status == RunStatus.CANCELLED, log.read_text()[-3000:]
    assert run.error == "Cancelled from the web."
    assert max(run.metrics.values_list("step", flat=True)) < CANCEL_STEPS


def test_a_web_cancel_delivered_by_sigterm_is_recorded_as_the_cancel(
    tiny_model_dir, preference_dir, tmp_path
):
    """The worker answers a web cancel with SIGTERM, often before the trainer's
    callback has polled the flag: the run still says it was cancelled from the web."""
    log = tmp_path / "cancel-sigterm.log"
    process = train_dpo(
        *dpo_args(tiny_model_dir, preference_dir, tmp_path / "run", CANCEL_STEPS),
        log=log,
    )
    wait_for(lambda: TrainingMetric.objects.exists(), process, log)
    services.run_cancel_request(run=TrainingRun.objects.get())
    process.send_signal(signal.SIGTERM)  # at once, as the worker does
    process.wait(timeout=WAIT_SECONDS)
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.CANCELLED, log.read_text()[-3000:]
    assert run.error == "Cancelled from the web."
