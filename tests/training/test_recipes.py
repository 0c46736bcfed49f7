"""SFT -> reward -> DPO -> RLOO on the tiny model, CPU, a few steps each: every stage
records its metrics and checkpoints, and its checkpoints load back."""

from pathlib import Path

import pytest
from django.core.management import call_command

from training.models import ModelCheckpoint, RunStatus, TrainingRun

pytestmark = [pytest.mark.training, pytest.mark.django_db]

FAST = [
    "--max-steps",
    "2",
    "--logging-steps",
    "1",
    "--save-steps",
    "2",
    "--per-device-train-batch-size",
    "4",
    "--no-gradient-checkpointing",
]
EXPECTED_KEYS = {
    "sft": {"loss", "learning_rate", "grad_norm", "entropy", "mean_token_accuracy"},
    "reward": {"loss", "learning_rate", "grad_norm", "accuracy", "margin"},
    "dpo": {
        "loss",
        "learning_rate",
        "grad_norm",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    },
    "rl": {
        "loss",
        "learning_rate",
        "kl",
        "reward",
        "reward_std",
        "entropy",
        "completions/mean_length",
    },
}


def train(command: str, *args: str) -> TrainingRun:
    call_command(command, *args, *FAST)
    return TrainingRun.objects.order_by("-id").first()


def assert_recorded(run: TrainingRun, kind: str) -> ModelCheckpoint:
    assert run.kind == kind
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.started_at and run.finished_at and run.host and run.pid
    assert run.config["lora_r"] == 16 and run.config["bf16"] is False
    train_rows = list(run.metrics.filter(split="train"))
    assert [m.step for m in train_rows] == [1, 2]
    for row in train_rows:
        assert EXPECTED_KEYS[kind] <= row.values.keys(), row.values.keys()
    eval_row = run.metrics.get(split="eval", step=2)
    assert "eval_loss" in eval_row.values
    steps = sorted(run.checkpoints.values_list("step", flat=True))
    assert steps == [2, 2]
    final = run.checkpoints.get(path=run.output_dir)
    assert final.is_adapter and not final.is_merged
    assert (Path(final.path) / "adapter_config.json").exists()
    assert final.eval_metrics["eval_loss"] == eval_row.values["eval_loss"]
    assert run.summary["global_step"] == 2
    return final


def test_sft_reward_dpo_rloo_chain_on_a_snapshot_of_real_judgments(
    project, tiny_model_dir, tmp_path
):
    import torch
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoModelForCausalLM

    from annotation.models import Judgment
    from tests.training.webdata import make_judged_snapshot

    snapshot = make_judged_snapshot(project, tmp_path)
    assert snapshot.status == "succeeded"
    assert Judgment.objects.filter(comparison__project=project).count() == 32
    common = ["--dataset", str(snapshot.pk)]
    sft = train(
        "train_sft",
        *common,
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(tmp_path / "sft"),
    )
    assert_recorded(sft, "sft")
    assert sft.dataset_snapshot == snapshot and sft.dataset_path == ""

    reward = train(
        "train_reward",
        *common,
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(tmp_path / "reward"),
    )
    reward_final = assert_recorded(reward, "reward")
    assert reward.dataset_snapshot == snapshot
    reward_model = AutoPeftModelForSequenceClassification.from_pretrained(
        reward_final.path, num_labels=1
    )
    assert reward_model.config.num_labels == 1

    dpo = train(
        "train_dpo",
        *common,
        "--parent-run",
        str(sft.pk),
        "--output-dir",
        str(tmp_path / "dpo"),
    )
    dpo_final = assert_recorded(dpo, "dpo")
    assert dpo.parent == sft and dpo.dataset_snapshot == snapshot
    # DPO started from the SFT adapter merged into a standalone model.
    assert dpo.base_model == str(tmp_path / "dpo" / "parent-merged")
    assert dpo_final.base_model == dpo.base_model

    rl = train(
        "train_rl",
        *common,
        "--parent-run",
        str(dpo.pk),
        "--reward-model",
        str(reward.pk),
        "--num-generations",
        "2",
        "--max-completion-length",
        "8",
        "--output-dir",
        str(tmp_path / "rl"),
    )
    rl_final = assert_recorded(rl, "rl")
    assert rl.config["algorithm"] == "rloo" and rl.dataset_snapshot == snapshot
    heldout = rl.metrics.get(split="eval", step=2).values
    assert 0.0 <= heldout["eval_heldout_accuracy"] <= 1.0
    assert (
        rl_final.eval_metrics["eval_heldout_accuracy"]
        == (heldout["eval_heldout_accuracy"])
    )

    # The adapter loads on its base; merged, it computes the same logits.
    adapter = AutoPeftModelForCausalLM.from_pretrained(rl_final.path)
    call_command("merge_lora", rl_final.path, str(tmp_path / "merged"))
    merged_row = rl.checkpoints.get(is_merged=True)
    assert merged_row.path == str(tmp_path / "merged")
    assert not merged_row.is_adapter and merged_row.step == 2
    merged = AutoModelForCausalLM.from_pretrained(merged_row.path)
    inputs = torch.tensor([[4, 10, 20, 30, 2]])
    with torch.no_grad():
        expected = adapter(input_ids=inputs).logits
        actual = merged(input_ids=inputs).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_dpo_full_finetune_with_reference_model(
    tiny_model_dir, preference_dir, tmp_path
):
    from transformers import AutoModelForCausalLM

    call_command(
        "train_dpo",
        "--dataset",
        str(preference_dir),
        "--model",
        str(tiny_model_dir),
        "--full-finetune",
        "--ref-model",
        str(tiny_model_dir),
        "--beta",
        "0.2",
        "--loss-type",
        "ipo",
        "--eval-strategy",
        "no",
        "--output-dir",
        str(tmp_path / "full"),
        *FAST,
    )
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.config["use_peft"] is False
    assert run.config["loss_type"] == "ipo" and run.config["beta"] == 0.2
    final = run.checkpoints.get(path=run.output_dir)
    assert not final.is_adapter
    model = AutoModelForCausalLM.from_pretrained(final.path)
    assert model.config.hidden_size == 128


def test_grpo_smoke(tiny_model_dir, preference_dir, tmp_path):
    reward = train(
        "train_reward",
        "--dataset",
        str(preference_dir),
        "--model",
        str(tiny_model_dir),
        "--eval-strategy",
        "no",
        "--output-dir",
        str(tmp_path / "reward"),
    )
    call_command(
        "train_rl",
        "--algorithm",
        "grpo",
        "--dataset",
        str(preference_dir),
        "--model",
        str(tiny_model_dir),
        "--reward-model",
        reward.output_dir,
        "--num-generations",
        "2",
        "--max-completion-length",
        "8",
        "--eval-strategy",
        "no",
        "--output-dir",
        str(tmp_path / "grpo"),
        *FAST,
    )
    run = TrainingRun.objects.get(kind="rl")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.config["algorithm"] == "grpo"
    assert {"kl", "reward"} <= run.metrics.get(step=2, split="train").values.keys()
    # GRPO gets the held-out preference accuracy too (at the last step).
    assert "eval_heldout_accuracy" in run.metrics.get(step=2, split="eval").values


def test_bad_dataset_fails_before_a_run_is_created(tiny_model_dir, tmp_path):
    from django.core.management.base import CommandError

    file = tmp_path / "texts.jsonl"
    file.write_text('{"text": "hello"}\n')
    with pytest.raises(CommandError, match="'chosen' and 'rejected'"):
        call_command(
            "train_dpo", "--dataset", str(file), "--model", str(tiny_model_dir), *FAST
        )
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.FAILED
    assert "DatasetError" in run.error


def test_dpo_and_sft_train_on_real_snapshots(project, tiny_model_dir, tmp_path):
    from tests.training.conftest import export_snapshot, import_pairs

    import_pairs(project, tmp_path)
    snapshot = export_snapshot(project, tmp_path / "snap")
    assert snapshot.status == "succeeded"
    dpo = train(
        "train_dpo",
        "--dataset",
        str(snapshot.pk),
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(tmp_path / "dpo"),
    )
    assert dpo.status == RunStatus.SUCCEEDED, dpo.error
    assert dpo.dataset_snapshot == snapshot
    assert dpo.dataset_path == ""
    assert {"rewards/margins", "loss"} <= dpo.metrics.get(
        step=2, split="train"
    ).values.keys()

    sft_snapshot = export_snapshot(project, tmp_path / "snap-sft", fmt="sft")
    sft = train(
        "train_sft",
        "--dataset",
        str(sft_snapshot.pk),
        "--model",
        str(tiny_model_dir),
        "--eval-strategy",
        "no",
        "--output-dir",
        str(tmp_path / "sft-run"),
    )
    assert sft.status == RunStatus.SUCCEEDED, sft.error
    assert sft.dataset_snapshot == sft_snapshot


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ([], "model is required: pass --model"),
        (["--model", "/nonexistent/model"], "no such directory"),
        (["--model", "~nosuchuser/model"], "no such directory"),
    ],
)
def test_missing_or_absent_model_is_a_plain_error_and_makes_no_run(
    project, tmp_path, model_args, message
):
    from django.core.management.base import CommandError

    from tests.training.conftest import export_snapshot, import_pairs

    import_pairs(project, tmp_path)
    snapshot = export_snapshot(project, tmp_path / "snap")
    with pytest.raises(CommandError, match=message):
        call_command("train_dpo", "--dataset", str(snapshot.pk), *model_args, *FAST)
    assert not TrainingRun.objects.exists()


def test_user_option_records_the_creator_and_is_checked(
    project, researcher, make_user, tiny_model_dir, tmp_path
):
    from django.core.management.base import CommandError

    from annotation.models import Role
    from tests.training.conftest import export_snapshot, import_pairs

    import_pairs(project, tmp_path)
    snapshot = export_snapshot(project, tmp_path / "snap")
    args = ["--dataset", str(snapshot.pk), "--model", str(tiny_model_dir), *FAST]
    make_user("ann", project=project, role=Role.ANNOTATOR)
    with pytest.raises(CommandError, match="No active user 'nobody'"):
        call_command("train_dpo", *args, "--user", "nobody")
    with pytest.raises(CommandError, match="'ann' is not a researcher or admin"):
        call_command("train_dpo", *args, "--user", "ann")
    assert not TrainingRun.objects.exists()
    call_command(
        "train_dpo", *args, "--user", researcher.username,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.created_by == researcher


def test_a_run_shorter_than_the_logging_interval_still_records_its_loss(
    project, tiny_model_dir, tmp_path
):
    """TRL logs every `logging_steps` (10 by default): `--max-steps 3` logged none."""
    from tests.training.conftest import export_snapshot, import_pairs

    import_pairs(project, tmp_path)
    snapshot = export_snapshot(project, tmp_path / "snap")
    call_command(
        "train_dpo", "--dataset", str(snapshot.pk), "--model", str(tiny_model_dir),
        "--max-steps", "3", "--save-steps", "3", "--per-device-train-batch-size", "4",
        "--no-gradient-checkpointing", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.config["logging_steps"] == 10  # the setting is kept as given
    assert "loss" in run.metrics.get(step=3, split="train").values


def test_a_library_refusal_is_a_command_error_and_the_run_keeps_the_traceback(
    tiny_model_dir, preference_dir, tmp_path
):
    """peft refuses LoRA target modules the model lacks; the terminal gets one plain
    line naming the run, the run row the whole traceback."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as raised:
        call_command(
            "train_sft", "--dataset", str(preference_dir), "--model",
            str(tiny_model_dir), "--max-steps", "1", "--lora-target-modules",
            "nonexist", "--output-dir", str(tmp_path / "sft"),
        )  # fmt: skip
    run = TrainingRun.objects.get()
    assert str(raised.value).startswith(f"Run {run.pk} failed: ")
    assert "nonexist" in str(raised.value)
    assert run.status == RunStatus.FAILED
    assert "Traceback (most recent call last)" in run.error
