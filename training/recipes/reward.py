"""Reward model (Bradley-Terry on chosen/rejected pairs): load model -> load data ->
build trainer -> train -> register.

The model is the base LM with a one-output score head
(AutoModelForSequenceClassification, num_labels=1); with LoRA the head is trained
fully (modules_to_save) and the adapter is saved with it.
"""

from __future__ import annotations

from training.config import RewardRunConfig
from training.models import RunKind
from training.recipes import common


def load_model(ctx: common.RunContext):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = common.resolve_model_path(ctx)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=common.model_dtype(ctx.config)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return path, model, tokenizer


def build_trainer(ctx: common.RunContext, path, model, tokenizer, data):
    from trl import RewardConfig, RewardTrainer

    config: RewardRunConfig = ctx.config
    args = common.trainer_arguments(
        config,
        RewardConfig,
        has_eval=data.eval is not None,
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=common.peft_config(config, task_type="SEQ_CLS"),
    )
    registry = common.attach_callbacks(trainer, ctx, base_model=path)
    return trainer, registry


def main(config: RewardRunConfig, **run_options):
    """Train; `run_options` go to `common.start_run` (run_id, resume, write, user)."""
    ctx = common.start_run(config, kind=RunKind.REWARD, **run_options)
    with common.run_guard(ctx):
        common.seed(ctx)
        data = common.load_data(ctx, "reward")  # refusals before any model loads
        path, model, tokenizer = load_model(ctx)
        trainer, registry = build_trainer(ctx, path, model, tokenizer, data)
        common.train(trainer, ctx)
        return common.register(trainer, ctx, registry, base_model=path)
