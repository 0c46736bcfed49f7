"""Run registry services: status transitions, metric rows, checkpoints."""

import math

import pytest
from django.core.exceptions import ValidationError

from training import services
from training.models import RunStatus, TrainingMetric


@pytest.fixture
def run(db):
    return services.run_create(
        kind="dpo", config={"beta": 0.1}, base_model="/models/tiny", name="demo"
    )


def start(run, **kwargs):
    return services.run_start(
        run=run,
        kind="dpo",
        config={"beta": 0.1},
        output_dir="/tmp/out",
        base_model="/models/tiny",
        pid=123,
        **kwargs,
    )


def test_run_moves_queued_running_succeeded(run):
    assert run.status == RunStatus.QUEUED
    run = start(run)
    assert run.status == RunStatus.RUNNING
    assert run.started_at is not None and run.host and run.pid == 123
    run = services.run_finish(run=run, summary={"global_step": 4})
    assert run.status == RunStatus.SUCCEEDED
    assert run.finished_at >= run.started_at
    assert run.summary == {"global_step": 4}


def test_started_run_cannot_start_again_without_resume(run):
    start(run)
    with pytest.raises(ValueError, match="only a queued run can be started"):
        start(run)


def test_kind_mismatch_is_refused(run):
    with pytest.raises(ValueError, match="is a dpo run"):
        services.run_start(
            run=run,
            kind="sft",
            config={},
            output_dir="/tmp/out",
            base_model="m",
            pid=1,
        )


def test_failed_run_keeps_its_error_and_a_late_verdict_does_not_overwrite(run):
    start(run)
    run = services.run_fail(run=run, error="Traceback ...\nValueError: boom")
    assert run.status == RunStatus.FAILED
    run = services.run_finish(run=run)
    assert run.status == RunStatus.FAILED
    assert "boom" in run.error


def test_resume_drops_rows_after_the_checkpoint_and_keeps_earlier(run):
    run = start(run)
    for step in (1, 2, 3):
        services.metric_record(run=run, step=step, values={"loss": 1.0 / step})
    services.checkpoint_register(
        run=run, path="/tmp/out/checkpoint-2", step=2, is_adapter=True, base_model="m"
    )
    services.checkpoint_register(
        run=run, path="/tmp/out/checkpoint-3", step=3, is_adapter=True, base_model="m"
    )
    services.run_fail(run=run, error="killed")
    first_start = run.started_at

    run = start(run, resume_step=2)

    assert run.status == RunStatus.RUNNING
    assert run.error == ""
    assert run.started_at == first_start
    assert list(run.metrics.values_list("step", flat=True)) == [1, 2]
    assert list(run.checkpoints.values_list("step", flat=True)) == [2]


def test_succeeded_run_cannot_be_resumed(run):
    start(run)
    services.run_finish(run=run)
    with pytest.raises(ValueError, match="nothing to resume"):
        start(run, resume_step=2)


def test_metric_record_merges_same_step_and_stores_non_finite_as_null(run):
    services.metric_record(run=run, step=5, epoch=0.5, values={"loss": 0.7})
    services.metric_record(
        run=run,
        step=5,
        values={"grad_norm": math.inf, "kl": math.nan, "note": "text", "flag": True},
    )
    rows = TrainingMetric.objects.filter(run=run)
    assert rows.count() == 1
    assert rows.get().values == {"loss": 0.7, "grad_norm": None, "kl": None, "flag": 1}
    assert rows.get().epoch == 0.5


def test_metric_record_keeps_train_and_eval_apart(run):
    services.metric_record(run=run, step=2, values={"loss": 0.7})
    services.metric_record(run=run, step=2, split="eval", values={"eval_loss": 0.8})
    assert TrainingMetric.objects.filter(run=run).count() == 2


def test_checkpoint_register_updates_the_same_path(run):
    first = services.checkpoint_register(
        run=run, path="/tmp/out", step=2, is_adapter=True, base_model="m"
    )
    again = services.checkpoint_register(
        run=run,
        path="/tmp/out",
        step=4,
        is_adapter=True,
        base_model="m",
        eval_metrics={"eval_loss": 0.5, "eval_runtime": math.nan},
    )
    assert first.pk == again.pk
    assert again.step == 4
    assert again.eval_metrics == {"eval_loss": 0.5, "eval_runtime": None}


def test_cancel_request_cancels_a_queued_run_at_once(run):
    run = services.run_cancel_request(run=run)
    assert run.status == RunStatus.CANCELLED
    assert run.cancel_requested
    assert run.error == "Cancelled by someone before it started."


def test_cancel_request_flags_a_running_run(run):
    start(run)
    run = services.run_cancel_request(run=run)
    assert run.status == RunStatus.RUNNING
    assert run.cancel_requested
    with pytest.raises(ValidationError, match="already being cancelled"):
        services.run_cancel_request(run=run)
    run = services.run_cancel(run=run, reason="Cancelled from the web.")
    assert run.status == RunStatus.CANCELLED
    with pytest.raises(ValidationError, match="already cancelled"):
        services.run_cancel_request(run=run)


def test_metric_record_many_merges_rows_of_one_step_in_a_batch_and_with_the_table(
    run, django_assert_max_num_queries
):
    services.metric_record(run=run, step=3, split="eval", values={"eval_loss": 0.9})
    rows = [
        {"step": step, "epoch": step / 10, "values": {"loss": 1.0 / step}}
        for step in range(1, 41)
    ]
    rows += [
        {"step": 3, "split": "eval", "values": {"eval_heldout_accuracy": 0.6}},
        {"step": 3, "split": "eval", "values": {"eval_loss": 0.8, "text": "x"}},
        {"step": 4, "split": "eval", "values": {"eval_loss": 0.7}},
        {"step": 4, "split": "eval", "values": {"eval_heldout_accuracy": 0.5}},
    ]
    with django_assert_max_num_queries(6):
        assert services.metric_record_many(run=run, rows=rows) == len(rows)
    assert run.metrics.filter(split="train").count() == 40
    assert run.metrics.get(step=40, split="train").epoch == 4.0
    assert run.metrics.get(step=3, split="eval").values == {
        "eval_loss": 0.8,
        "eval_heldout_accuracy": 0.6,
    }
    assert run.metrics.get(step=4, split="eval").values == {
        "eval_loss": 0.7,
        "eval_heldout_accuracy": 0.5,
    }
