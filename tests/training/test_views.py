"""Run pages per role: list, detail (provenance, warnings, checkpoints, log, cancel),
the new-run form and the cancel button."""

import re

import numpy as np
import pytest
from django.test import Client
from django.utils.html import escape

from tests.conftest import PASSWORD
from tests.training.webdata import HUB_MODEL
from training import selectors, services
from training.forms import ONLY_FOR_KINDS
from training.models import RunStatus, TrainingRun


@pytest.fixture
def run(snapshot, researcher, scorer_config_dir):
    return services.run_queue(
        snapshot=snapshot,
        recipe="rloo-lora",
        base_model=HUB_MODEL,
        overrides={"reward_model": str(scorer_config_dir)},
        user=researcher,
        name="first rloo",
    )


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.mark.parametrize("path", ["/runs/", "/runs/1/", "/runs/new/"])
def test_anonymous_is_sent_to_login(db, path):
    response = client_for().get(path)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_list_shows_the_researchers_runs_with_their_columns(run, researcher):
    response = client_for(researcher).get("/runs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="/runs/{run.pk}/"' in html
    assert "first rloo" in html
    assert "Online RL (RLOO/GRPO)" in html
    assert "Queued" in html
    assert HUB_MODEL in html
    assert f"#{run.dataset_snapshot_id}" in html
    assert 'href="/runs/new/"' in html


def test_list_filters_and_hides_runs_from_other_roles(run, researcher, annotator):
    assert (
        f"/runs/{run.pk}/" not in client_for(annotator).get("/runs/").content.decode()
    )
    filtered = client_for(researcher).get("/runs/?status=succeeded").content.decode()
    assert f"/runs/{run.pk}/" not in filtered
    assert "match these filters" in filtered


def test_detail_shows_provenance_config_checkpoints_and_log(
    run, researcher, tmp_path, scorer_config_dir
):
    services.run_start(
        run=run,
        kind="rl",
        config=run.config,
        output_dir="/runs/out-1",
        base_model=HUB_MODEL,
        pid=4242,
    )
    services.checkpoint_register(
        run=run,
        path="/runs/out-1/checkpoint-5",
        step=5,
        is_adapter=True,
        base_model=HUB_MODEL,
        eval_metrics={"eval_loss": 0.25},
    )
    log = tmp_path / "run.log"
    log.write_text("loading model\nstep 5/10 loss=0.3\n")
    services.run_log_attach(run=run, log_path=str(log))
    response = client_for(researcher).get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    snapshot = run.dataset_snapshot
    assert f'href="/projects/demo/exports/{snapshot.pk}/"' in html
    assert snapshot.output_dir in html
    assert "/runs/out-1/checkpoint-5" in html
    assert "LoRA adapter" in html
    assert "eval_loss=0.2500" in html
    assert "pid 4242" in html
    assert "step 5/10 loss=0.3" in html
    assert f"&quot;reward_model&quot;: &quot;{scorer_config_dir}&quot;" in html
    assert 'id="cancel-run"' in html
    assert f'data-metrics-url="/api/v1/runs/{run.pk}/metrics/"' in html
    assert "training/run_live.js" in html


def test_detail_explains_each_warning_with_its_metric(run, researcher):
    rng = np.random.default_rng(1)
    for step in range(1, 41):
        services.metric_record(
            run=run,
            step=step,
            values={
                "completions/mean_length": 40 + 3 * step + rng.normal(0, 2),
                "kl": 0.02,
                "reward": 0.01 * step,
            },
        )
    html = client_for(researcher).get(f"/runs/{run.pk}/").content.decode()
    section = html[html.index('id="warnings"') : html.index('id="plots-title"')]
    assert "Completion length growing steadily (length exploitation)" in section
    assert "completions/mean_length · steps 1–40" in section
    assert "What to do:" in section
    assert section.count("<article") == 1


def test_detail_for_other_roles(run, annotator, outsider):
    response = client_for(annotator).get(f"/runs/{run.pk}/")
    assert response.status_code == 403
    assert (
        escape(selectors.RUN_RESEARCHERS_ONLY.format(project="demo"))
        in response.content.decode()
    )
    response = client_for(outsider).get(f"/runs/{run.pk}/")
    assert response.status_code == 404
    assert client_for(outsider).get("/runs/999999/").status_code == 404


def test_finished_run_has_no_cancel_button(run, researcher):
    services.run_cancel_request(run=run, user=researcher)
    html = client_for(researcher).get(f"/runs/{run.pk}/").content.decode()
    assert 'id="cancel-run"' not in html
    assert "Cancelled by res before it started." in html
    assert "No log: the run never started." in html


def test_a_command_line_run_says_where_its_log_went(run, researcher):
    html = client_for(researcher).get(f"/runs/{run.pk}/").content.decode()
    assert "No log yet: the worker writes one" in html  # queued
    services.run_start(
        run=run, kind="rl", config=run.config, output_dir="/o", base_model="m", pid=1
    )  # as `manage.py train_rl` does, with no worker log attached
    html = client_for(researcher).get(f"/runs/{run.pk}/").content.decode()
    assert "Started from the command line: its output went to that terminal" in html


def test_cancel_button_cancels_a_queued_run(run, researcher):
    client = client_for(researcher)
    response = client.post(f"/runs/{run.pk}/cancel/", follow=True)
    assert response.redirect_chain[-1][0] == f"/runs/{run.pk}/"
    assert f"Run {run.pk} cancelled." in response.content.decode()
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    again = client.post(f"/runs/{run.pk}/cancel/", follow=True).content.decode()
    assert "already cancelled" in again


def test_cancel_needs_post_and_the_researcher_role(run, researcher, annotator):
    assert client_for(researcher).get(f"/runs/{run.pk}/cancel/").status_code == 405
    assert client_for(annotator).post(f"/runs/{run.pk}/cancel/").status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_new_run_form_preselects_the_snapshot_and_lists_recipes(snapshot, researcher):
    response = client_for(researcher).get(f"/runs/new/?snapshot={snapshot.pk}")
    assert response.status_code == 200
    html = response.content.decode()
    selected = re.search(r'<option value="(\d+)" selected>', html)
    assert selected and int(selected.group(1)) == snapshot.pk
    assert "dpo-lora-sigmoid" in html and "rloo-lora" in html


def test_new_run_form_queues_a_run_and_enqueues_its_task(
    snapshot, researcher, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client_for(researcher).post(
            "/runs/new/",
            {
                "snapshot": snapshot.pk,
                "recipe": "dpo-lora-sigmoid",
                "base_model": HUB_MODEL,
                "learning_rate": "1e-5",
                "beta": "0.2",
                "extra": '{"lora_r": 8}',
            },
        )
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response.url == f"/runs/{run.pk}/"
    assert run.kind == "dpo"
    assert run.config["beta"] == 0.2
    assert run.config["learning_rate"] == 1e-5
    assert run.config["lora_r"] == 8
    assert run.created_by == researcher
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"recipe": "sft-lora-tiny", "beta": "0.1"},
            escape(
                ONLY_FOR_KINDS.format(
                    field="beta", kinds="dpo and rl", recipe="sft-lora-tiny", kind="sft"
                )
            ),
        ),
        ({"extra": "[1, 2]"}, "Write a JSON object of setting: value"),
        ({"extra": "{nope"}, "Not valid JSON"),
        ({"extra": '{"max_stepz": 3}'}, "unknown setting &#x27;max_stepz&#x27;"),
        ({"base_model": "/nowhere/model"}, "does not exist on the web server"),
        ({"base_model": "~nosuchuser/model"}, "does not exist on the web server"),
    ],
)
def test_new_run_form_shows_errors_and_queues_nothing(
    snapshot, researcher, fields, message
):
    data = {
        "snapshot": snapshot.pk,
        "recipe": "dpo-lora-sigmoid",
        "base_model": HUB_MODEL,
    }
    response = client_for(researcher).post("/runs/new/", {**data, **fields})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert TrainingRun.objects.count() == 0


def test_new_run_form_refuses_snapshots_of_projects_where_user_is_annotator(
    snapshot, annotator
):
    client = client_for(annotator)
    html = client.get("/runs/new/").content.decode()
    assert "no finished dataset snapshot" in html
    response = client.post(
        "/runs/new/",
        {"snapshot": snapshot.pk, "recipe": "sft-lora-tiny", "base_model": HUB_MODEL},
    )
    assert response.status_code == 200
    assert TrainingRun.objects.count() == 0


def test_live_script_and_styles_are_served(researcher, run):
    from django.contrib.staticfiles import finders

    assert finders.find("training/run_live.js")
    assert finders.find("training/training.css")
