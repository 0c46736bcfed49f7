"""`--resume` is decided once, by the main process, and every process acts on it.

Under `accelerate launch` the main process marks the run `running` with its own pid
as soon as it has decided; another process that read the row after that would see a
live run and refuse, while the main process waits for it. The decision function is
tested here directly, and then with two real processes (torchrun, gloo) where the
second one starts only after the main one has marked the run running.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from training.models import RunStatus, TrainingRun
from training.recipes.common import (
    RESUME_NO_CHECKPOINT,
    RESUME_STILL_RUNNING,
    resume_decide,
)

HOST = "node-a"
LAUNCH_TIMEOUT_S = 180
# The second process starts this long after the first, which by then has marked
# the run running (the old code then refused there and the main process hung).
SECOND_PROCESS_DELAY_S = 8


def checkpoint(output_dir: Path, step: int) -> str:
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    return str(folder)


def a_run(status=RunStatus.RUNNING, host=HOST, pid=4242) -> TrainingRun:
    return TrainingRun(pk=7, kind="dpo", status=status, host=host, pid=pid)


def test_resume_starts_from_the_newest_complete_checkpoint(tmp_path):
    checkpoint(tmp_path, 2)
    newest = checkpoint(tmp_path, 10)
    (tmp_path / "checkpoint-12").mkdir()  # incomplete: no trainer_state.json
    point = resume_decide(
        run=a_run(RunStatus.FAILED), output_dir=tmp_path, resume=True, host=HOST
    )
    assert (point.checkpoint, point.step, point.error) == (newest, 10, "")


def test_a_run_still_running_on_this_host_is_not_resumed_twice(tmp_path):
    checkpoint(tmp_path, 2)
    point = resume_decide(
        run=a_run(),
        output_dir=tmp_path,
        resume=True,
        host=HOST,
        pid_alive=lambda pid: pid == 4242,
    )
    assert point.error == RESUME_STILL_RUNNING.format(run_id=7, pid=4242)
    assert point.checkpoint is None


def test_a_running_run_whose_process_died_or_ran_elsewhere_resumes(tmp_path):
    checkpoint(tmp_path, 2)
    dead = resume_decide(
        run=a_run(), output_dir=tmp_path, resume=True, host=HOST,
        pid_alive=lambda pid: False,
    )  # fmt: skip
    elsewhere = resume_decide(
        run=a_run(host="node-b"), output_dir=tmp_path, resume=True, host=HOST,
        pid_alive=lambda pid: True,
    )  # fmt: skip
    assert dead.step == elsewhere.step == 2 and not dead.error


def test_resume_without_a_checkpoint_says_so_and_no_resume_is_a_fresh_start(
    tmp_path,
):
    point = resume_decide(run=a_run(), output_dir=tmp_path, resume=True, host=HOST)
    assert point.error == RESUME_NO_CHECKPOINT.format(run_id=7, path=tmp_path)
    fresh = resume_decide(run=a_run(), output_dir=tmp_path, resume=False, host=HOST)
    assert (fresh.checkpoint, fresh.step, fresh.error) == (None, None, "")


# --- two real processes -------------------------------------------------------------

SCRIPT = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from accelerate import PartialState
from training.config import DPORunConfig
from training.recipes import common

PartialState(cpu=True)  # joins the process group: both processes are up
rank = int(os.environ["RANK"])
if rank:
    time.sleep({delay})
config = DPORunConfig(dataset={dataset!r}, model="unused", output_dir={out!r})
try:
    ctx = common.start_run(
        config, kind="dpo", run_id={run_id}, resume=True, write=lambda line: None
    )
    result = {{"resume_from": ctx.resume_from, "main": ctx.is_main_process}}
except Exception as exc:
    result = {{"error": str(exc)}}
with open(os.path.join({results!r}, f"rank{{rank}}.json"), "w") as out:
    json.dump({{"rank": rank, "pid": os.getpid(), **result}}, out)
"""


def database_url(connection) -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        if connection.is_in_memory_db():
            pytest.skip("other processes cannot see an in-memory SQLite database")
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or 'localhost'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(tmp_path, run: TrainingRun, dataset: Path) -> list[dict]:
    from django.db import connection

    script = tmp_path / "resume_two.py"
    script.write_text(
        SCRIPT.format(
            repo=str(settings.BASE_DIR),
            delay=SECOND_PROCESS_DELAY_S,
            dataset=str(dataset),
            out=run.output_dir,
            run_id=run.pk,
            results=str(tmp_path),
        )
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection),
        "DEBUG": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    env.pop("PREFLINE_TEST_DB_NAME", None)
    # torchrun is what `accelerate launch` runs for several GPUs; on CPU,
    # ACCELERATE_USE_CPU (set by `accelerate launch --cpu`) selects gloo.
    launcher = subprocess.Popen(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            str(script),
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = launcher.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        output, _ = launcher.communicate()
        pytest.fail(f"the processes hung:\n{output[-3000:]}")
    found = sorted(tmp_path.glob("rank*.json"))
    assert len(found) == 2, output[-3000:]
    return [json.loads(path.read_text()) for path in found]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.training
@pytest.mark.django_db(transaction=True)
def test_every_process_resumes_from_the_main_process_decision(tmp_path, preference_dir):
    output_dir = tmp_path / "run"
    from_step_2 = checkpoint(output_dir, 2)
    run = TrainingRun.objects.create(
        kind="dpo", status=RunStatus.RUNNING, base_model="m",
        host=os.uname().nodename, pid=dead_pid(), output_dir=str(output_dir),
    )  # fmt: skip
    main, other = launch_two(tmp_path, run, preference_dir)
    assert main == {**main, "resume_from": from_step_2, "main": True}
    assert other == {**other, "resume_from": from_step_2, "main": False}
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.pid == main["pid"]


@pytest.mark.training
@pytest.mark.django_db(transaction=True)
def test_every_process_refuses_a_run_that_is_still_running(tmp_path, preference_dir):
    output_dir = tmp_path / "run"
    checkpoint(output_dir, 2)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run = TrainingRun.objects.create(
            kind="dpo", status=RunStatus.RUNNING, base_model="m",
            host=os.uname().nodename, pid=alive.pid, output_dir=str(output_dir),
        )  # fmt: skip
        results = launch_two(tmp_path, run, preference_dir)
    finally:
        alive.kill()
        alive.wait()
    expected = RESUME_STILL_RUNNING.format(run_id=run.pk, pid=alive.pid)
    assert [r.get("error") for r in results] == [expected, expected]
