"""The registry callback records what the trainer logs, exactly, and only once; what
Prefline records and prints for a DPO job equals a bare TRL run of the same job."""

import importlib.util
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from training import services
from training.callbacks import RegistryCallback
from training.models import TrainingMetric, TrainingRun
from training.progress import progress_line

# Prefline's train_dpo and bare TRL (bench/dpo_bare_trl.py: same model, data, seed
# and DPOConfig) run the same float32 CPU computation in the same order, so their
# logged numbers agree to float32 rounding.
RTOL = 1e-5
ATOL = 1e-7
# Progress lines print the loss with 4 significant digits.
PRINTED_RTOL = 5e-4


@pytest.fixture
def run(db):
    return services.run_create(kind="dpo", config={}, base_model="/models/tiny")


@pytest.fixture
def trainer_objects(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state = TrainerState()
    state.global_step = 4
    state.epoch = 0.5
    return args, state, TrainerControl()


def test_logged_numbers_become_a_row_at_the_step(run, trainer_objects):
    args, state, control = trainer_objects
    callback = RegistryCallback(run_id=run.pk, base_model="m", is_main_process=True)
    callback.on_log(
        args, state, control, logs={"loss": 0.69, "rewards/margins": 0.1, "epoch": 0.5}
    )
    row = TrainingMetric.objects.get(run=run)
    assert (row.step, row.split, row.epoch) == (4, "train", 0.5)
    assert row.values == {"loss": 0.69, "rewards/margins": 0.1}


def test_eval_logs_go_to_the_eval_split_and_summary_is_not_a_step(run, trainer_objects):
    args, state, control = trainer_objects
    callback = RegistryCallback(run_id=run.pk, base_model="m", is_main_process=True)
    callback.on_log(args, state, control, logs={"eval_loss": 0.5, "epoch": 0.5})
    callback.on_log(
        args, state, control, logs={"train_runtime": 3.0, "train_loss": 0.6}
    )
    assert list(TrainingMetric.objects.values_list("split", flat=True)) == ["eval"]
    assert callback.last_eval == {"eval_loss": 0.5}
    assert callback.train_summary == {"train_runtime": 3.0, "train_loss": 0.6}


def test_only_the_main_process_writes(run, trainer_objects):
    args, state, control = trainer_objects
    state.is_world_process_zero = False
    callback = RegistryCallback(run_id=run.pk, base_model="m", is_main_process=False)
    callback.on_log(args, state, control, logs={"loss": 0.69})
    (Path(args.output_dir) / "checkpoint-4").mkdir()
    callback.on_save(args, state, control)
    assert not TrainingMetric.objects.exists()
    assert not run.checkpoints.exists()


def test_saved_checkpoint_is_registered_with_last_eval(run, trainer_objects):
    args, state, control = trainer_objects
    folder = Path(args.output_dir) / "checkpoint-4"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    callback = RegistryCallback(run_id=run.pk, base_model="/base", is_main_process=True)
    callback.on_log(args, state, control, logs={"eval_loss": 0.4})
    callback.on_save(args, state, control)
    checkpoint = run.checkpoints.get()
    assert checkpoint.path == str(folder)
    assert (checkpoint.step, checkpoint.is_adapter) == (4, True)
    assert checkpoint.base_model == "/base"
    assert checkpoint.eval_metrics == {"eval_loss": 0.4}


def test_cancel_request_stops_training_and_saves(run, trainer_objects):
    args, state, control = trainer_objects
    services.run_start(
        run=run, kind="dpo", config={}, output_dir="/o", base_model="m", pid=1
    )
    callback = RegistryCallback(run_id=run.pk, base_model="m", is_main_process=True)
    callback.on_step_end(args, state, control)
    assert not control.should_training_stop

    services.run_cancel_request(run=run)
    callback._last_poll = 0.0
    callback.on_step_end(args, state, control)
    assert control.should_training_stop and control.should_save
    assert callback.stop.reason == "Cancelled from the web."


def test_progress_line_counts_eta_from_steps_made_here():
    line = progress_line(
        run_id=7,
        step=30,
        max_steps=40,
        first_step=20,
        elapsed=5.0,
        metrics={"loss": 0.123456, "kl": 0.5},
    )
    assert line == (
        "[run 7] step 30/40 (75%) | 2.00 steps/s | elapsed 0:00:05 | ETA 0:00:05 "
        "| loss 0.1235 | kl 0.5"
    )


def bare_trl():
    """bench/dpo_bare_trl.py, the benchmark's bare TRL script, as a module."""
    path = Path(__file__).resolve().parents[2] / "bench" / "dpo_bare_trl.py"
    spec = importlib.util.spec_from_file_location("dpo_bare_trl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.training
def test_dpo_numbers_recorded_and_printed_equal_a_bare_trl_run_of_the_same_job(
    db, tiny_model_dir, preference_dir, tmp_path
):
    out = StringIO()
    call_command(
        "train_dpo", "--dataset", str(preference_dir), "--model", str(tiny_model_dir),
        "--max-steps", "3", "--logging-steps", "1", "--save-steps", "3",
        "--per-device-train-batch-size", "4", "--eval-strategy", "no",
        "--no-gradient-checkpointing", "--output-dir", str(tmp_path / "prefline"),
        stdout=out,
    )  # fmt: skip
    run = TrainingRun.objects.get()
    _, history = bare_trl().train_bare_dpo(
        model=str(tiny_model_dir),
        dataset=str(preference_dir),
        output_dir=str(tmp_path / "bare"),
        max_steps=3,
        batch_size=4,
        logging_steps=1,
    )
    logged = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3]
    printed = dict(
        (int(step), float(loss))
        for step, loss in re.findall(r"step (\d+)/3 .*\| loss (\S+)", out.getvalue())
    )
    assert sorted(printed) == [1, 2, 3]
    for entry in logged:
        step = entry["step"]
        recorded = run.metrics.get(step=step, split="train").values
        expected = {k: v for k, v in entry.items() if k not in ("step", "epoch")}
        assert set(recorded) == set(expected), step
        for key, value in expected.items():
            assert recorded[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
        # Printed with 4 significant digits.
        assert printed[step] == pytest.approx(entry["loss"], rel=PRINTED_RTOL), step


def test_buffered_rows_are_written_before_a_checkpoint_and_at_the_end(
    run, trainer_objects
):
    args, state, control = trainer_objects
    callback = RegistryCallback(run_id=run.pk, base_model="m", is_main_process=True)
    callback.on_log(args, state, control, logs={"loss": 0.7})  # first: written now
    state.global_step = 5
    callback.on_log(args, state, control, logs={"loss": 0.6})
    assert list(TrainingMetric.objects.values_list("step", flat=True)) == [4]

    (Path(args.output_dir) / "checkpoint-5").mkdir()
    callback.on_save(args, state, control)
    assert list(TrainingMetric.objects.values_list("step", flat=True)) == [4, 5]

    state.global_step = 6
    callback.on_log(args, state, control, logs={"loss": 0.5})
    callback.on_train_end(args, state, control)
    assert list(TrainingMetric.objects.values_list("step", flat=True)) == [4, 5, 6]
