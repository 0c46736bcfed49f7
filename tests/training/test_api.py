"""The runs API over real HTTP handling: visibility per role, queue, cancel, metrics,
warnings with thresholds, checkpoints and the log tail."""

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django_tasks_db.models import DBTaskResult

from annotation.models import Role
from annotation.services.projects import project_create
from tests.training.webdata import HUB_MODEL, make_snapshot
from training import queueing, selectors, services
from training.models import RunStatus, TrainingRun
from training.recipes_catalog import RECIPES


@pytest.fixture
def run(snapshot, researcher):
    return services.run_queue(
        snapshot=snapshot,
        recipe="dpo-lora-sigmoid",
        base_model=HUB_MODEL,
        user=researcher,
    )


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.org", "pw")


def queue_payload(snapshot, **extra):
    return {
        "snapshot": snapshot.pk,
        "recipe": "sft-lora-tiny",
        "base_model": HUB_MODEL,
        **extra,
    }


# --- visibility ---------------------------------------------------------------------

RUN_URLS = ["", "metrics/", "warnings/", "checkpoints/", "log/"]


@pytest.mark.parametrize("suffix", RUN_URLS)
def test_anonymous_gets_401(api_client_for, run, suffix):
    response = api_client_for(None).get(f"/api/v1/runs/{run.pk}/{suffix}")
    assert response.status_code == 401


@pytest.mark.parametrize("suffix", RUN_URLS)
def test_outsider_gets_404_as_if_the_run_did_not_exist(
    api_client_for, run, outsider, suffix
):
    response = api_client_for(outsider).get(f"/api/v1/runs/{run.pk}/{suffix}")
    assert response.status_code == 404
    assert response.json()["detail"] == selectors.RUN_NOT_FOUND.format(run_id=run.pk)


@pytest.mark.parametrize("suffix", RUN_URLS)
def test_annotator_of_the_project_gets_403_with_the_reason(
    api_client_for, run, annotator, suffix
):
    response = api_client_for(annotator).get(f"/api/v1/runs/{run.pk}/{suffix}")
    assert response.status_code == 403
    assert response.json()["detail"] == selectors.RUN_RESEARCHERS_ONLY.format(
        project="demo"
    )


@pytest.mark.parametrize("suffix", RUN_URLS)
def test_researcher_and_project_admin_see_the_run(
    api_client_for, run, researcher, project_admin, suffix
):
    for user in (researcher, project_admin):
        response = api_client_for(user).get(f"/api/v1/runs/{run.pk}/{suffix}")
        assert response.status_code == 200, response.content


def test_list_shows_each_user_only_the_runs_they_may_see(
    api_client_for, run, researcher, annotator, outsider, superuser, make_user, tmp_path
):
    other_project = project_create(slug="other", name="Other")
    stranger = make_user("stranger", project=other_project, role=Role.RESEARCHER)
    mine = services.run_create(
        kind="sft", config={}, base_model="m", created_by=stranger
    )
    orphan = services.run_create(kind="sft", config={}, base_model="m")

    def listed(user):
        response = api_client_for(user).get("/api/v1/runs/")
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    assert listed(researcher) == {run.pk}
    assert listed(annotator) == set()
    assert listed(outsider) == set()
    assert listed(stranger) == {mine.pk}
    assert listed(superuser) == {run.pk, mine.pk, orphan.pk}
    assert api_client_for(None).get("/api/v1/runs/").status_code == 401


def test_run_without_snapshot_is_visible_to_its_creator_and_superusers_only(
    api_client_for, researcher, superuser, make_user
):
    mine = services.run_create(
        kind="dpo",
        config={},
        base_model="m",
        dataset_path="/data/pairs",
        created_by=researcher,
    )
    other = make_user("other-researcher")
    url = f"/api/v1/runs/{mine.pk}/"
    assert api_client_for(researcher).get(url).status_code == 200
    assert api_client_for(superuser).get(url).status_code == 200
    assert api_client_for(other).get(url).status_code == 404


def test_list_filters_by_status_and_kind_and_rejects_unknown_values(
    api_client_for, run, researcher
):
    client = api_client_for(researcher)
    assert client.get("/api/v1/runs/?status=queued&kind=dpo").json()["count"] == 1
    assert client.get("/api/v1/runs/?status=running").json()["count"] == 0
    assert client.get("/api/v1/runs/?kind=sft").json()["count"] == 0
    response = client.get("/api/v1/runs/?status=done")
    assert response.status_code == 400
    assert "Unknown status 'done'" in response.json()["status"][0]


def test_detail_has_config_and_provenance(api_client_for, run, researcher, snapshot):
    data = api_client_for(researcher).get(f"/api/v1/runs/{run.pk}/").json()
    assert data["kind"] == "dpo"
    assert data["status"] == "queued"
    assert data["dataset_snapshot"] == snapshot.pk
    assert data["project"] == "demo"
    assert data["dataset_path"] == snapshot.output_dir
    assert data["base_model"] == HUB_MODEL
    assert data["created_by"] == "res"
    assert data["config"]["beta"] == 0.1
    assert data["config"]["loss_type"] == "sigmoid"
    assert data["config"]["dataset"] == str(snapshot.pk)
    assert data["config"]["recipe"] == "dpo-lora-sigmoid"


# --- queue --------------------------------------------------------------------------


def test_researcher_queues_a_run_and_the_task_is_enqueued_on_commit(
    api_client_for, snapshot, researcher, django_capture_on_commit_callbacks
):
    client = api_client_for(researcher)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            "/api/v1/runs/",
            queue_payload(snapshot, overrides={"learning_rate": 1e-5, "max_steps": 3}),
            format="json",
        )
    assert response.status_code == 201, response.content
    data = response.json()
    run = TrainingRun.objects.get(pk=data["id"])
    assert run.status == RunStatus.QUEUED
    assert run.created_by == researcher
    assert run.dataset_snapshot == snapshot
    assert run.config["learning_rate"] == 1e-5
    assert run.config["max_steps"] == 3
    # the recipe's other settings stay
    assert run.config["per_device_train_batch_size"] == 2
    assert len(callbacks) == 1
    task = DBTaskResult.objects.get()
    assert task.task_path == "training.tasks.execute_training_run"
    assert task.args_kwargs["args"] == [run.pk]


def test_task_is_enqueued_only_when_the_transaction_commits(
    snapshot, researcher, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.run_queue(
            snapshot=snapshot,
            recipe="sft-lora-tiny",
            base_model=HUB_MODEL,
            user=researcher,
        )
    assert DBTaskResult.objects.count() == 0
    assert len(callbacks) == 1


def test_annotator_cannot_queue_and_outsider_cannot_see_the_snapshot(
    api_client_for, snapshot, annotator, outsider
):
    response = api_client_for(annotator).post(
        "/api/v1/runs/", queue_payload(snapshot), format="json"
    )
    assert response.status_code == 403
    assert "researchers and admins" in response.json()["detail"]
    response = api_client_for(outsider).post(
        "/api/v1/runs/", queue_payload(snapshot), format="json"
    )
    assert response.status_code == 404
    assert TrainingRun.objects.count() == 0


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"recipe": "ppo-magic"}, "recipe", "is not a valid choice"),
        ({"kind": "dpo"}, "kind", "trains a sft run, not dpo"),
        ({"overrides": {"learning_rat": 1e-5}}, "overrides", "unknown setting"),
        ({"overrides": {"max_steps": 0}}, "overrides", "max_steps must be -1"),
        ({"overrides": {"learning_rate": "fast"}}, "overrides", "must be a number"),
        ({"overrides": {"model": "x/y"}}, "overrides", "is set by the form"),
        ({"base_model": "/no/such/model/dir"}, "base_model", "does not exist"),
        ({"base_model": "not a model!"}, "base_model", "neither an absolute"),
        ({"base_model": ""}, "base_model", "Give a base model"),
        ({"colour": "blue"}, "non_field_errors", "Unknown field(s): colour"),
    ],
)
def test_queue_rejects_bad_input_with_a_message_naming_the_field(
    api_client_for, snapshot, researcher, extra, field, fragment
):
    response = api_client_for(researcher).post(
        "/api/v1/runs/", queue_payload(snapshot, **extra), format="json"
    )
    assert response.status_code == 400, response.content
    messages = response.json()[field]
    assert any(fragment in message for message in messages), messages
    assert TrainingRun.objects.count() == 0


def test_model_path_check_can_be_left_to_workers_on_other_machines(
    api_client_for, snapshot, researcher, settings
):
    settings.PREFLINE_TRAINING_CHECK_MODEL_PATHS = False
    payload = queue_payload(snapshot, base_model="/only/on/the/gpu/box")
    response = api_client_for(researcher).post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["base_model"] == "/only/on/the/gpu/box"


def test_rl_recipe_needs_a_reward_model(
    api_client_for, snapshot, researcher, scorer_config_dir
):
    client = api_client_for(researcher)
    payload = queue_payload(snapshot, recipe="rloo-lora")
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["overrides"] == [queueing.REWARD_MODEL_REQUIRED]
    payload["overrides"] = {"reward_model": str(scorer_config_dir)}
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["config"]["algorithm"] == "rloo"


def finished_reward_run(snapshot, user, output_dir="/out/rm"):
    reward = services.run_queue(
        snapshot=snapshot, recipe="reward-lora", base_model=HUB_MODEL, user=user
    )
    services.run_start(
        run=reward, kind="reward", config=reward.config, output_dir=output_dir,
        base_model="m", pid=1,
    )  # fmt: skip
    services.checkpoint_register(
        run=reward, path=output_dir, step=5, is_adapter=True, base_model=HUB_MODEL
    )
    return reward


def test_the_queue_checks_the_reward_model_as_train_rl_does(
    api_client_for, project, snapshot, researcher, run, tmp_path, settings, make_user
):
    """Checked before anything is queued, as `train_rl` checks it: a run that is
    not a reward run, not finished, missing or not the user's to see, and a causal
    LM directory (scored by a random new head) are refused."""
    causal = tmp_path / "causal"
    causal.mkdir()
    (causal / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    unfinished = finished_reward_run(snapshot, researcher)
    other = project_create(slug="other", name="Other", target_judgments=1)
    stranger = make_user("stranger", project=other, role="researcher")
    hidden = finished_reward_run(
        make_snapshot(other, stranger, tmp_path), stranger, "/out/hidden"
    )
    services.run_finish(run=hidden)
    client = api_client_for(researcher)
    for spec, fragment in [
        (str(run.pk), f"reward_model {run.pk}: run {run.pk} is a dpo run, not reward"),
        (str(unfinished.pk), "is running; only a succeeded run scores an RL run"),
        ("999", "no such reward run or directory"),
        (str(hidden.pk), f"{hidden.pk}: no such reward run"),  # not: "is a reward run"
        (str(causal), "a LlamaForCausalLM, not a sequence-classification"),
    ]:
        payload = queue_payload(
            snapshot, recipe="rloo-lora", overrides={"reward_model": spec}
        )
        response = client.post("/api/v1/runs/", payload, format="json")
        assert response.status_code == 400, response.content
        assert fragment in response.json()["overrides"][0]
    runs = TrainingRun.objects.count()
    services.run_finish(run=unfinished)
    payload["overrides"] = {"reward_model": str(unfinished.pk)}
    assert client.post("/api/v1/runs/", payload, format="json").status_code == 201
    settings.PREFLINE_TRAINING_CHECK_MODEL_PATHS = False  # workers elsewhere
    payload["overrides"] = {"reward_model": "/only/on/the/gpu/box"}
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 201, response.content
    assert TrainingRun.objects.count() == runs + 2


def test_the_queue_checks_the_eval_batch_only_when_the_snapshot_has_a_test_split(
    api_client_for, project, snapshot, researcher, scorer_config_dir, tmp_path
):
    overrides = {
        "reward_model": str(scorer_config_dir),
        "per_device_eval_batch_size": 2,
    }
    client = api_client_for(researcher)
    assert snapshot.counts.get("test")
    payload = queue_payload(snapshot, recipe="rloo-lora", overrides=overrides)
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 400
    assert (
        "per_device_eval_batch_size x processes (2)" in response.json()["overrides"][0]
    )
    snapshot.counts = {"train": 10, "test": 0}
    snapshot.save(update_fields=["counts"])
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 201, response.content


def test_a_reward_run_cannot_be_the_parent_of_a_dpo_run(
    api_client_for, snapshot, researcher
):
    reward = services.run_queue(
        snapshot=snapshot, recipe="reward-lora", base_model=HUB_MODEL, user=researcher
    )
    payload = queue_payload(snapshot, recipe="dpo-lora-sigmoid", parent=reward.pk)
    payload["base_model"] = ""
    response = api_client_for(researcher).post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 400
    message = response.json()["parent"][0]
    assert f"Parent run {reward.pk} is a reward run" in message


def test_snapshot_in_a_format_the_stage_cannot_use_is_rejected(
    api_client_for, project, researcher, tmp_path
):
    sft_snapshot = make_snapshot(project, researcher, tmp_path, fmt="sft")
    response = api_client_for(researcher).post(
        "/api/v1/runs/",
        queue_payload(sft_snapshot, recipe="dpo-lora-sigmoid"),
        format="json",
    )
    assert response.status_code == 400
    assert "'sft' format; a dpo run needs one of" in response.json()["snapshot"][0]


def test_parent_run_gives_the_base_model_from_its_final_checkpoint(
    api_client_for, snapshot, researcher, run
):
    client = api_client_for(researcher)
    payload = queue_payload(snapshot, recipe="dpo-lora-sigmoid", parent=run.pk)
    payload["base_model"] = ""
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 400
    assert "only a succeeded run can be continued" in response.json()["parent"][0]

    services.run_start(
        run=run,
        kind="dpo",
        config=run.config,
        output_dir="/out/1",
        base_model="m",
        pid=1,
    )
    services.checkpoint_register(
        run=run, path="/out/1", step=20, is_adapter=True, base_model=HUB_MODEL
    )
    services.run_finish(run=run)
    response = client.post("/api/v1/runs/", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["base_model"] == "/out/1"
    assert response.json()["parent"] == run.pk
    # The command resolves (and merges) the parent's model, as --parent-run does.
    child = TrainingRun.objects.get(pk=response.json()["id"])
    assert child.config["model"] == "" and child.config["parent_run"] == run.pk


def test_recipes_are_listed_with_their_overrides(api_client_for, researcher):
    data = api_client_for(researcher).get("/api/v1/training-recipes/").json()
    assert [r["name"] for r in data] == list(RECIPES)
    assert {r["kind"] for r in data} == {"sft", "reward", "dpo", "rl"}


def test_every_recipe_resolves_with_its_stage_config(scorer_config_dir):
    for recipe in RECIPES.values():
        extra = {"reward_model": str(scorer_config_dir)} if recipe.kind == "rl" else {}
        config = queueing.run_config_build(
            kind=recipe.kind,
            recipe_overrides=recipe.overrides,
            overrides=extra,
            model=HUB_MODEL,
            dataset="1",
            parent_id=None,
            name=recipe.name,
        )
        assert config["model"] == HUB_MODEL


# --- cancel -------------------------------------------------------------------------


def test_cancel_a_queued_run_ends_it_at_once(api_client_for, run, researcher):
    client = api_client_for(researcher)
    response = client.post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.finished_at is not None
    assert "Cancelled by res" in run.error
    again = client.post(f"/api/v1/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    assert again.json() == {
        "detail": services.RUN_ALREADY_FINISHED.format(
            run_id=run.pk, status="cancelled"
        )
    }


def test_cancel_a_running_run_asks_it_to_stop(api_client_for, run, researcher):
    services.run_start(
        run=run, kind="dpo", config=run.config, output_dir="/o", base_model="m", pid=1
    )
    client = api_client_for(researcher)
    response = client.post(f"/api/v1/runs/{run.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    again = client.post(f"/api/v1/runs/{run.pk}/cancel/")
    assert again.status_code == 409
    assert again.json() == {
        "detail": services.RUN_ALREADY_CANCELLING.format(run_id=run.pk)
    }


def test_annotator_and_outsider_cannot_cancel(api_client_for, run, annotator, outsider):
    assert (
        api_client_for(annotator).post(f"/api/v1/runs/{run.pk}/cancel/").status_code
        == 403
    )
    assert (
        api_client_for(outsider).post(f"/api/v1/runs/{run.pk}/cancel/").status_code
        == 404
    )
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and not run.cancel_requested


# --- metrics, warnings, checkpoints, log -----------------------------------------


def record(run, step, split="train", **values):
    services.metric_record(run=run, step=step, split=split, values=values)


def test_metrics_series_with_eval_prefix_nulls_and_after_step(
    api_client_for, run, researcher
):
    record(run, 1, loss=0.7, learning_rate=1e-4)
    record(run, 2, loss=0.6, learning_rate=9e-5, grad_norm=float("inf"))
    record(run, 2, split="eval", loss=0.65, **{"rewards/accuracies": 0.5})
    record(run, 3, loss=0.5)
    client = api_client_for(researcher)
    data = client.get(f"/api/v1/runs/{run.pk}/metrics/").json()
    assert data["last_step"] == 3
    series = data["series"]
    assert series["loss"] == {"steps": [1, 2, 3], "values": [0.7, 0.6, 0.5]}
    assert series["eval_loss"] == {"steps": [2], "values": [0.65]}
    assert series["eval_rewards/accuracies"]["values"] == [0.5]
    assert series["grad_norm"] == {"steps": [2], "values": [None]}
    later = client.get(f"/api/v1/runs/{run.pk}/metrics/?after_step=2").json()
    assert later["series"] == {"loss": {"steps": [3], "values": [0.5]}}
    bad = client.get(f"/api/v1/runs/{run.pk}/metrics/?after_step=two")
    assert bad.status_code == 400


def test_warnings_explain_the_triggering_metric_and_honour_thresholds(
    api_client_for, run, researcher
):
    rng = np.random.default_rng(0)
    for step in range(1, 41):
        record(
            run,
            step,
            **{
                "logps/chosen": -80.0 - 0.4 * step + rng.normal(0, 0.3),
                "rewards/margins": 0.1 * step + rng.normal(0, 0.05),
                "loss": 0.69 - 0.01 * step,
            },
        )
    client = api_client_for(researcher)
    data = client.get(f"/api/v1/runs/{run.pk}/warnings/").json()
    assert [w["code"] for w in data["warnings"]] == ["chosen_logp_decline"]
    warning = data["warnings"][0]
    assert warning["metrics"] == ["logps/chosen", "rewards/margins"]
    assert (warning["step_start"], warning["step_end"]) == (1, 40)
    assert "logps/chosen fell by" in warning["explanation"]
    assert data["thresholds"]["logp_drop"] == 2.0

    lenient = client.get(f"/api/v1/runs/{run.pk}/warnings/?logp_drop=50").json()
    assert lenient["warnings"] == []
    assert lenient["thresholds"]["logp_drop"] == 50.0
    bad = client.get(f"/api/v1/runs/{run.pk}/warnings/?kl_max=-1")
    assert bad.status_code == 400
    assert "kl_max must be a positive number" in bad.json()["thresholds"][0]
    unknown = client.get(f"/api/v1/runs/{run.pk}/warnings/?klmax=1")
    assert "Unknown pitfall threshold 'klmax'" in unknown.json()["thresholds"][0]


def test_warnings_use_thresholds_from_settings(
    api_client_for, run, researcher, settings
):
    for step in range(1, 21):
        record(run, step, kl=0.6)
    url = f"/api/v1/runs/{run.pk}/warnings/"
    client = api_client_for(researcher)
    assert client.get(url).json()["warnings"] == []
    settings.PREFLINE_PITFALL_THRESHOLDS = {"kl_max": 0.5}
    assert [w["code"] for w in client.get(url).json()["warnings"]] == ["kl_explosion"]


def test_checkpoints_are_listed_in_step_order(api_client_for, run, researcher):
    for step in (10, 5):
        services.checkpoint_register(
            run=run,
            path=f"/out/checkpoint-{step}",
            step=step,
            is_adapter=True,
            base_model=HUB_MODEL,
            eval_metrics={"eval_loss": 0.5},
        )
    data = api_client_for(researcher).get(f"/api/v1/runs/{run.pk}/checkpoints/").json()
    assert [c["step"] for c in data] == [5, 10]
    assert data[0]["is_adapter"] is True
    assert data[0]["eval_metrics"] == {"eval_loss": 0.5}


def test_log_tail_returns_the_last_lines_and_the_last_progress_state(
    api_client_for, run, researcher, tmp_path
):
    log = tmp_path / "run.log"
    lines = [f"line {i}" for i in range(500)] + ["step 1/9\rstep 5/9\rstep 9/9"]
    log.write_text("\n".join(lines) + "\n")
    services.run_log_attach(run=run, log_path=str(log))
    client = api_client_for(researcher)
    data = client.get(f"/api/v1/runs/{run.pk}/log/?lines=3").json()
    assert data["exists"] is True and data["truncated"] is True
    assert data["text"] == "line 498\nline 499\nstep 9/9"
    services.run_log_attach(run=run, log_path=str(tmp_path / "gone.log"))
    data = client.get(f"/api/v1/runs/{run.pk}/log/").json()
    assert data["exists"] is False and data["text"] == ""


def test_openapi_schema_documents_the_runs_api(api_client_for, researcher):
    response = api_client_for(researcher).get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/runs/",
        "/api/v1/runs/{run_id}/",
        "/api/v1/runs/{run_id}/cancel/",
        "/api/v1/runs/{run_id}/metrics/",
        "/api/v1/runs/{run_id}/warnings/",
        "/api/v1/training-recipes/",
    ):
        assert path in paths
