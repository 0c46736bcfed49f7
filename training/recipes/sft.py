"""SFT on chosen responses or an SFT export: load model -> load data -> build
trainer -> train -> register."""

from __future__ import annotations

from training.config import SFTRunConfig
from training.models import RunKind
from training.recipes import common


def build_trainer(ctx: common.RunContext, path, model, tokenizer, data):
    from trl import SFTConfig, SFTTrainer

    config: SFTRunConfig = ctx.config
    args = common.trainer_arguments(
        config,
        SFTConfig,
        has_eval=data.eval is not None,
        max_length=config.max_length,
        packing=config.packing,
        assistant_only_loss=config.assistant_only_loss,
        completion_only_loss=config.completion_only_loss,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=common.peft_config(config),
    )
    registry = common.attach_callbacks(trainer, ctx, base_model=path)
    return trainer, registry


def main(config: SFTRunConfig, **run_options):
    """Train; `run_options` go to `common.start_run` (run_id, resume, write, user)."""
    ctx = common.start_run(config, kind=RunKind.SFT, **run_options)
    with common.run_guard(ctx):
        common.seed(ctx)
        data = common.load_data(ctx, "sft")  # refusals before any model loads
        path, model, tokenizer = common.load_causal_lm(ctx)
        trainer, registry = build_trainer(ctx, path, model, tokenizer, data)
        common.train(trainer, ctx)
        return common.register(trainer, ctx, registry, base_model=path)
