"""A child run (SFT -> DPO) starts from its parent's model, queued or typed.

The web queues a child with no base model and the parent run; the worker then runs
`manage.py train_dpo --run-id N`, which resolves the parent's final checkpoint the
way `--parent-run` does on the command line: the LoRA adapter is merged into its base
and the new adapter trains on that model. Its starting policy and, with LoRA, TRL's
reference (the adapter-disabled model) are then the SFT model, as TRL's docs
recommend, not the bare base.
"""

from pathlib import Path

import pytest
from django.core.management import call_command

from tests.training.webdata import make_judged_snapshot
from training import services
from training.config import DPORunConfig, config_resolve
from training.models import RunStatus, TrainingRun
from training.recipes import common, dpo

pytestmark = [pytest.mark.training, pytest.mark.django_db]

# Logits of the same weights computed twice on CPU agree to float32 rounding.
LOGITS_ATOL = 1e-5
# The SFT parent trains hard enough that its model differs from the base by more
# than this, so a child starting from the base fails the check.
SFT_CHANGES_LOGITS_BY = 1e-2
PROBE = [[4, 10, 20, 30, 40, 50, 2]]


def logits_of(model):
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(PROBE)).logits
    model.train(was_training)
    return out


def test_a_queued_child_run_starts_from_and_is_anchored_to_the_merged_parent(
    project, researcher, tiny_model_dir, tmp_path, settings
):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import use_adapter

    settings.DATA_DIR = tmp_path / "data"
    snapshot = make_judged_snapshot(project, tmp_path, user=researcher)
    call_command(
        "train_sft", "--dataset", str(snapshot.pk), "--model", str(tiny_model_dir),
        "--max-steps", "3", "--learning-rate", "1e-2", "--logging-steps", "1",
        "--per-device-train-batch-size", "4", "--eval-strategy", "no",
        "--no-gradient-checkpointing", "--output-dir", str(tmp_path / "sft"),
    )  # fmt: skip
    sft = TrainingRun.objects.get()
    assert sft.status == RunStatus.SUCCEEDED, sft.error

    child = services.run_queue(
        snapshot=snapshot,
        recipe="dpo-lora-sigmoid",
        parent=sft,
        user=researcher,
        overrides={"max_steps": 1, "eval_strategy": "no"},
    )
    assert child.config["model"] == "" and child.config["parent_run"] == sft.pk

    # What `manage.py train_dpo --run-id N` (the worker's command) does, stage by
    # stage, so that the trainer's starting policy can be looked at.
    config = config_resolve(DPORunConfig, stored=child.config)
    ctx = common.start_run(config, kind="dpo", run_id=child.pk)
    with common.run_guard(ctx):
        path, model, tokenizer, ref_model = dpo.load_model(ctx)
        data = common.load_data(ctx, "dpo")
        trainer, registry = dpo.build_trainer(
            ctx, path, model, tokenizer, ref_model, data
        )
        parent_model = AutoPeftModelForCausalLM.from_pretrained(
            str(tmp_path / "sft")
        ).merge_and_unload()
        expected = logits_of(parent_model)
        bare = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
        assert (expected - bare).abs().max() > SFT_CHANGES_LOGITS_BY

        policy = logits_of(trainer.model)
        with use_adapter(trainer.model, adapter_name=None):  # TRL's DPO reference
            reference = logits_of(trainer.model)
        torch.testing.assert_close(policy, expected, rtol=0, atol=LOGITS_ATOL)
        torch.testing.assert_close(reference, expected, rtol=0, atol=LOGITS_ATOL)

        common.train(trainer, ctx)
        run = common.register(trainer, ctx, registry, base_model=path)

    assert run.status == RunStatus.SUCCEEDED, run.error
    merged = Path(run.output_dir) / "parent-merged"
    assert run.base_model == path == str(merged)
    assert run.checkpoints.get(path=run.output_dir).base_model == str(merged)
    # The trained adapter is saved on the merged parent: loading it back gives the
    # same reference again.
    reloaded = AutoPeftModelForCausalLM.from_pretrained(run.output_dir)
    with reloaded.disable_adapter():
        torch.testing.assert_close(
            logits_of(reloaded), expected, rtol=0, atol=LOGITS_ATOL
        )


def test_a_model_argument_naming_an_adapter_is_merged_too(
    tiny_model_dir, preference_dir, tmp_path
):
    call_command(
        "train_sft", "--dataset", str(preference_dir), "--model", str(tiny_model_dir),
        "--max-steps", "1", "--per-device-train-batch-size", "4",
        "--eval-strategy", "no", "--no-gradient-checkpointing",
        "--output-dir", str(tmp_path / "sft"),
    )  # fmt: skip
    call_command(
        "train_dpo", "--dataset", str(preference_dir), "--model", str(tmp_path / "sft"),
        "--max-steps", "1", "--per-device-train-batch-size", "4",
        "--eval-strategy", "no", "--no-gradient-checkpointing",
        "--output-dir", str(tmp_path / "dpo"),
    )  # fmt: skip
    run = TrainingRun.objects.get(kind="dpo")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.base_model == str(tmp_path / "dpo" / "model-merged")
    assert (tmp_path / "dpo" / "model-merged" / "config.json").exists()


def test_a_reward_run_as_parent_of_a_dpo_run_is_refused_before_a_run_row(
    preference_dir,
):
    """Its final model is a sequence classifier: loaded as a causal LM it would get a
    new, random LM head, and the DPO run would train that and succeed."""
    from django.core.management.base import CommandError

    reward = services.run_create(kind="reward", config={}, base_model="m", name="rm")
    with pytest.raises(CommandError, match=rf"--parent-run {reward.pk}: .* reward run"):
        call_command(
            "train_dpo", "--dataset", str(preference_dir),
            "--parent-run", str(reward.pk),
        )  # fmt: skip
    assert list(TrainingRun.objects.all()) == [reward]


def test_train_rl_refuses_a_reward_model_directory_holding_a_causal_lm(
    tiny_model_dir, preference_dir
):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="a LlamaForCausalLM, not a sequence-class"):
        call_command(
            "train_rl", "--dataset", str(preference_dir), "--model",
            str(tiny_model_dir), "--reward-model", str(tiny_model_dir),
            "--max-steps", "1",
        )  # fmt: skip
    assert not TrainingRun.objects.exists()  # refused before a run row
