"""DPO: load model -> load data -> build trainer -> train -> register.

With LoRA (the default) the reference is the base model with the adapter disabled,
so no second copy is loaded; with --full-finetune the reference is --ref-model, or a
frozen copy of --model.
"""

from __future__ import annotations

from training.config import DPORunConfig
from training.models import RunKind
from training.recipes import common


def load_model(ctx: common.RunContext):
    """The policy, and the reference model when --ref-model names one."""
    from transformers import AutoModelForCausalLM

    path, model, tokenizer = common.load_causal_lm(ctx)
    ref_model = None
    if ctx.config.ref_model:
        ref_model = AutoModelForCausalLM.from_pretrained(
            ctx.config.ref_model, dtype=common.model_dtype(ctx.config)
        )
    return path, model, tokenizer, ref_model


def build_trainer(ctx: common.RunContext, path, model, tokenizer, ref_model, data):
    from trl import DPOConfig, DPOTrainer

    config: DPORunConfig = ctx.config
    args = common.trainer_arguments(
        config,
        DPOConfig,
        has_eval=data.eval is not None,
        beta=config.beta,
        loss_type=[config.loss_type],
        label_smoothing=config.label_smoothing,
        max_length=config.max_length,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=common.peft_config(config),
    )
    registry = common.attach_callbacks(trainer, ctx, base_model=path)
    return trainer, registry


def main(config: DPORunConfig, **run_options):
    """Train; `run_options` go to `common.start_run` (run_id, resume, write, user)."""
    ctx = common.start_run(config, kind=RunKind.DPO, **run_options)
    with common.run_guard(ctx):
        common.seed(ctx)
        data = common.load_data(ctx, "dpo")  # refusals before any model loads
        path, model, tokenizer, ref_model = load_model(ctx)
        trainer, registry = build_trainer(ctx, path, model, tokenizer, ref_model, data)
        common.train(trainer, ctx)
        return common.register(trainer, ctx, registry, base_model=path)
