"""Online RL against a Prefline reward model: load model -> load reward model ->
load data -> build trainer -> train -> register.

This is the PPO stage of the classic RLHF recipe. TRL 1.x ships no PPOTrainer; it
maintains RLOO and GRPO in its place, and both are offered here (`--algorithm`). The
policy samples `num_generations` completions per prompt, the reward model scores
them, and `beta` weighs the KL penalty to the reference policy (with LoRA: the
adapter-disabled base).
"""

from __future__ import annotations

from django.core.management.base import CommandError

from training import selectors
from training.config import RLRunConfig
from training.models import RunKind
from training.recipes import common


def reward_model_path(spec: str) -> tuple[str, bool]:
    """Return (path, is_adapter) for a reward run id or a reward-model directory."""
    try:
        return selectors.reward_model_resolve(spec)
    except selectors.RewardModelError as exc:
        raise CommandError(f"--reward-model {exc}") from exc


def load_reward_model(ctx: common.RunContext, path: str, is_adapter: bool):
    """The reward model `reward_model_path` resolved, merged if an adapter."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dtype = common.model_dtype(ctx.config)
    if is_adapter:
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype
        ).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def build_trainer(ctx, path, model, tokenizer, reward_model, reward_tokenizer, data):
    config: RLRunConfig = ctx.config
    if config.algorithm == "grpo":
        from trl import GRPOConfig as ArgsClass
        from trl import GRPOTrainer as TrainerClass
    else:
        from trl import RLOOConfig as ArgsClass
        from trl import RLOOTrainer as TrainerClass
    args = common.trainer_arguments(
        config,
        ArgsClass,
        has_eval=data.eval is not None,
        beta=config.beta,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
    )
    trainer = TrainerClass(
        model=model,
        reward_funcs=reward_model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        reward_processing_classes=reward_tokenizer,
        peft_config=common.peft_config(config),
    )
    registry = common.attach_callbacks(trainer, ctx, base_model=path)
    add_heldout_callback(trainer, ctx, tokenizer)
    return trainer, registry


def heldout_pairs(ctx: common.RunContext) -> tuple[list[dict], str]:
    """A fixed sample of the dataset's held-out preference pairs, or why none."""
    from training.data import DatasetError, load_stage_data

    config: RLRunConfig = ctx.config
    if config.heldout_pairs == 0:
        return [], "heldout_pairs is 0"
    try:
        pairs = load_stage_data(
            config.dataset,
            "dpo",
            train_split=config.dataset_train_split,
            test_split=config.dataset_test_split,
        ).eval
    except DatasetError as exc:
        return [], f"the dataset has no preference pairs ({exc})"
    if pairs is None:
        return [], f"the dataset has no {config.dataset_test_split!r} split"
    count = min(config.heldout_pairs, len(pairs))
    return list(pairs.shuffle(seed=config.seed).select(range(count))), ""


def add_heldout_callback(trainer, ctx: common.RunContext, tokenizer) -> None:
    """Measure the policy's held-out preference accuracy (training.heldout)."""
    from training.heldout import HeldoutPreferenceCallback, tokenize_pairs

    config: RLRunConfig = ctx.config
    rows, reason = heldout_pairs(ctx)
    if not rows:
        if ctx.is_main_process:
            ctx.write(f"[run {ctx.run.pk}] held-out preference accuracy off: {reason}")
        return
    every = config.heldout_steps or config.eval_steps or config.save_steps
    trainer.add_callback(
        HeldoutPreferenceCallback(
            trainer=trainer,
            pairs=tokenize_pairs(rows, tokenizer, max_length=config.max_length),
            every=every,
            temperature=config.temperature,
            batch_size=config.per_device_eval_batch_size,
            write=ctx.write,
        )
    )
    if ctx.is_main_process:
        ctx.write(
            f"[run {ctx.run.pk}] held-out preference accuracy on {len(rows)} pairs "
            f"every {every} steps"
        )


def main(config: RLRunConfig, **run_options):
    """Train; `run_options` go to `common.start_run` (run_id, resume, write, user).

    The reward model is resolved once, before anything loads: from the command line
    before a run row exists; a queued run (its config is the row's) first thing in
    it."""
    reward = None
    if run_options.get("run_id") is None:
        config.require("reward_model")
        reward = reward_model_path(config.reward_model)
    ctx = common.start_run(config, kind=RunKind.RL, **run_options)
    with common.run_guard(ctx):
        common.seed(ctx)
        if reward is None:
            ctx.config.require("reward_model")
            reward = reward_model_path(ctx.config.reward_model)
        data = common.load_data(ctx, "rl")  # refusals before any model loads
        problem = ctx.config.eval_batch_problem() if data.eval is not None else None
        if problem:
            raise CommandError(problem)
        path, model, tokenizer = common.load_causal_lm(ctx)
        reward_model, reward_tokenizer = load_reward_model(ctx, *reward)
        trainer, registry = build_trainer(
            ctx, path, model, tokenizer, reward_model, reward_tokenizer, data
        )
        common.train(trainer, ctx)
        return common.register(trainer, ctx, registry, base_model=path)
