"""A run queued through the API is executed by a real `manage.py db_worker` process.

The worker and the training subprocess it starts are separate processes, so the
database must be one they can open too: PostgreSQL, or SQLite in a file
(PREFLINE_TEST_DB_NAME); the tests commit their data (transactional tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_tasks_db.models import DBTaskResult

from tests.training.webdata import make_snapshot
from training import tasks
from training.models import ModelCheckpoint, RunStatus, TrainingMetric, TrainingRun

pytestmark = [pytest.mark.training, pytest.mark.django_db(transaction=True)]

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 420
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.postgresql":
        host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"
    name = str(db["NAME"])
    if "memory" in name or name == ":memory:":
        pytest.skip(
            "the worker needs a database another process can open: set "
            "PREFLINE_TEST_DB_NAME (SQLite file) or DATABASE_URL (PostgreSQL)"
        )
    return f"sqlite:///{Path(name).resolve()}"


@pytest.fixture
def worker(tmp_path):
    """Start `manage.py db_worker` on the test database; stop it afterwards."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PREFLINE_DATA_DIR": str(tmp_path / "worker-data"),
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PREFLINE_TEST_DB_NAME", None)
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--no-reload",
            "--no-startup-delay",
            "--interval",
            "0.2",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def wait_for(predicate, *, timeout: float, what: str, worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker is not None and worker.poll() is not None:
            raise AssertionError(
                f"the worker exited ({worker.returncode}) while {what}"
            )
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


def run_state(run_id: int) -> TrainingRun:
    return TrainingRun.objects.get(pk=run_id)


def queue(api_client_for, user, snapshot, model_dir, **overrides) -> int:
    response = api_client_for(user).post(
        "/api/v1/runs/",
        {
            "snapshot": snapshot.pk,
            "recipe": "sft-lora-tiny",
            "base_model": str(model_dir),
            "overrides": overrides,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def describe(run: TrainingRun) -> str:
    tail = tasks._tail(run.log_path) if run.log_path else "(no log)"
    return f"run {run.pk} {run.status}: {run.error}\n--- log ---\n{tail}"


def test_queued_run_is_executed_by_a_real_worker(
    api_client_for, project, researcher, tmp_path, tiny_model_dir, worker
):
    snapshot = make_snapshot(project, researcher, tmp_path)
    run_id = queue(api_client_for, researcher, snapshot, tiny_model_dir, max_steps=3)
    task = DBTaskResult.objects.get()
    assert task.args_kwargs["args"] == [run_id]

    run = wait_for(
        lambda: (r := run_state(run_id)).status in FINISHED and r,
        timeout=RUN_TIMEOUT_S,
        what="the run finished",
        worker=worker,
    )
    assert run.status == RunStatus.SUCCEEDED, describe(run)
    assert run.started_at and run.finished_at and run.host and run.pid
    steps = set(
        TrainingMetric.objects.filter(run=run, split="train").values_list(
            "step", flat=True
        )
    )
    assert steps == {1, 2, 3}
    first = TrainingMetric.objects.get(run=run, step=1, split="train").values
    assert "loss" in first and "learning_rate" in first
    checkpoints = ModelCheckpoint.objects.filter(run=run)
    assert checkpoints.filter(path=run.output_dir, step=3).exists()
    assert all(Path(c.path).is_dir() for c in checkpoints)
    log = Path(run.log_path)
    assert log.parent == tmp_path / "worker-data" / "logs"
    assert f"train_sft --run-id {run_id}" in log.read_text()
    task = wait_for(
        lambda: (t := DBTaskResult.objects.get()).status == "SUCCESSFUL" and t,
        timeout=30,
        what="the task was marked successful",
    )
    assert task.return_value == RunStatus.SUCCEEDED

    api = api_client_for(researcher)
    series = api.get(f"/api/v1/runs/{run_id}/metrics/").json()["series"]
    assert series["loss"]["steps"] == [1, 2, 3]
    log_tail = api.get(f"/api/v1/runs/{run_id}/log/").json()
    assert log_tail["exists"] and f"[run {run_id}]" in log_tail["text"]


def test_cancel_stops_a_running_run_and_it_ends_cancelled(
    api_client_for, project, researcher, tmp_path, tiny_model_dir, worker
):
    snapshot = make_snapshot(project, researcher, tmp_path)
    run_id = queue(
        api_client_for, researcher, snapshot, tiny_model_dir, max_steps=100000
    )
    wait_for(
        lambda: TrainingMetric.objects.filter(run_id=run_id).exists(),
        timeout=RUN_TIMEOUT_S,
        what="the run logged its first step",
        worker=worker,
    )
    pid = run_state(run_id).pid
    response = api_client_for(researcher).post(f"/api/v1/runs/{run_id}/cancel/")
    assert response.status_code == 202
    run = wait_for(
        lambda: (r := run_state(run_id)).status in FINISHED and r,
        timeout=120,
        what="the cancelled run stopped",
        worker=worker,
    )
    assert run.status == RunStatus.CANCELLED, describe(run)
    assert run.summary["global_step"] < 100000
    wait_for(lambda: not _alive(pid), timeout=30, what="the training process exited")
    task = wait_for(
        lambda: (t := DBTaskResult.objects.get()).status == "SUCCESSFUL" and t,
        timeout=30,
        what="the task finished",
    )
    assert task.return_value == RunStatus.CANCELLED


def test_a_training_process_that_dies_leaves_the_run_failed_with_its_log(
    api_client_for, project, researcher, tmp_path, tiny_model_dir, worker
):
    snapshot = make_snapshot(project, researcher, tmp_path)
    run_id = queue(
        api_client_for, researcher, snapshot, tiny_model_dir, max_steps=100000
    )
    wait_for(
        lambda: TrainingMetric.objects.filter(run_id=run_id).exists(),
        timeout=RUN_TIMEOUT_S,
        what="the run logged its first step",
        worker=worker,
    )
    os.kill(run_state(run_id).pid, signal.SIGKILL)  # no chance to record anything
    run = wait_for(
        lambda: (r := run_state(run_id)).status in FINISHED and r,
        timeout=60,
        what="the worker recorded the death",
        worker=worker,
    )
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("The training process exited with status -9")
    assert f"[run {run_id}]" in run.error  # the end of its log


def test_stopping_the_worker_stops_the_run_cleanly_for_a_later_resume(
    api_client_for, project, researcher, tmp_path, tiny_model_dir, worker
):
    snapshot = make_snapshot(project, researcher, tmp_path)
    run_id = queue(
        api_client_for, researcher, snapshot, tiny_model_dir, max_steps=100000
    )
    wait_for(
        lambda: TrainingMetric.objects.filter(run_id=run_id).exists(),
        timeout=RUN_TIMEOUT_S,
        what="the run logged its first step",
        worker=worker,
    )
    worker.send_signal(signal.SIGTERM)  # e.g. systemctl stop
    assert worker.wait(timeout=120) == 0
    run = run_state(run_id)
    assert run.status == RunStatus.CANCELLED, describe(run)
    # the trainer saved where it stopped, so --resume can continue from there
    assert ModelCheckpoint.objects.filter(run=run).exists()
    assert DBTaskResult.objects.get().status == "SUCCESSFUL"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by the worker) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_worker_side_modules_import_no_ml_library():
    probe = (
        "import os, sys, django\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
        "django.setup()\n"
        "import training.tasks, training.services, training.selectors\n"
        "import training.views, training.api.views\n"
        "heavy = ['torch', 'transformers', 'trl', 'datasets', 'peft', 'accelerate']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "DEBUG": "1"},
        check=True,
    )
    assert result.stdout.strip() == ""
    assert settings.TASKS["default"]["BACKEND"] == "django_tasks_db.DatabaseBackend"
