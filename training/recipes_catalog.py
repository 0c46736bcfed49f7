"""Named recipes for the "new run" form: a stage plus config overrides, described.

Each recipe is a starting point a researcher picks on the web (or names in the API);
the form's own fields (learning rate, steps, beta, ...) override it, and the result
is validated by the stage's config dataclass (`training.config`) before the run is
queued. Keys are the config's field names, which are TRL's own argument names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UNKNOWN_RECIPE = "Unknown recipe {name!r}; choose one of: {known}."


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    title: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "title": self.title,
            "description": self.description,
            "overrides": dict(self.overrides),
        }


_QUICK = {
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 2,
    "logging_steps": 1,
    "save_steps": 5,
    "max_length": 256,
    "gradient_checkpointing": False,
}

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="sft-lora-tiny",
            kind="sft",
            title="SFT, LoRA, a few steps",
            description=(
                "Supervised fine-tuning on the chosen answers with a LoRA adapter "
                "(r=16, alpha=32 on the attention projections): 10 steps, batch 2, "
                "a metric row every step. A smoke test of the pipeline on a small "
                "model; raise max_steps for a real run."
            ),
            overrides={**_QUICK, "max_steps": 10, "learning_rate": 2e-4},
        ),
        Recipe(
            name="sft-lora",
            kind="sft",
            title="SFT, LoRA, one epoch",
            description=(
                "Supervised fine-tuning on the chosen answers, one epoch with a LoRA "
                "adapter, learning rate 2e-4, evaluation on the test split."
            ),
            overrides={
                "num_train_epochs": 1.0,
                "learning_rate": 2e-4,
                "eval_strategy": "epoch",
                "logging_steps": 10,
            },
        ),
        Recipe(
            name="reward-lora",
            kind="reward",
            title="Reward model, LoRA",
            description=(
                "Bradley-Terry reward model on chosen/rejected pairs with a LoRA "
                "adapter; evaluates held-out preference accuracy every 10 steps."
            ),
            overrides={
                **_QUICK,
                "max_steps": 20,
                "learning_rate": 1e-4,
                "eval_strategy": "steps",
                "eval_steps": 10,
            },
        ),
        Recipe(
            name="dpo-lora-sigmoid",
            kind="dpo",
            title="DPO (sigmoid loss), LoRA",
            description=(
                "Direct preference optimization with the original sigmoid loss, "
                "beta 0.1, LoRA adapter (the adapter-disabled base is the "
                "reference); evaluates held-out reward accuracy every 10 steps. Use "
                "an SFT run as the parent when you have one."
            ),
            overrides={
                **_QUICK,
                "max_steps": 20,
                "learning_rate": 5e-5,
                "beta": 0.1,
                "loss_type": "sigmoid",
                "eval_strategy": "steps",
                "eval_steps": 10,
            },
        ),
        Recipe(
            name="dpo-lora-ipo",
            kind="dpo",
            title="DPO (IPO loss), LoRA",
            description=(
                "Identity preference optimization: a squared loss that does not "
                "push margins to infinity, more robust to noisy labels; LoRA."
            ),
            overrides={
                **_QUICK,
                "max_steps": 20,
                "learning_rate": 5e-5,
                "beta": 0.1,
                "loss_type": "ipo",
                "eval_strategy": "steps",
                "eval_steps": 10,
            },
        ),
        Recipe(
            name="rloo-lora",
            kind="rl",
            title="RLOO against a reward model, LoRA",
            description=(
                "Online RL with REINFORCE leave-one-out (the maintained successor of "
                "PPO in TRL 1.x): 4 completions per prompt scored by a Prefline "
                "reward model, KL penalty 0.05 to the reference; the policy's "
                "preference accuracy on the snapshot's held-out pairs every 2 steps "
                "(for the reward-hacking warning). Needs a reward model (a reward "
                "run id or a directory)."
            ),
            overrides={
                **_QUICK,
                "algorithm": "rloo",
                "max_steps": 10,
                "heldout_steps": 2,
                "learning_rate": 1e-5,
                "beta": 0.05,
                "per_device_train_batch_size": 4,
                "per_device_eval_batch_size": 4,  # whole groups of generations
                "num_generations": 4,
                "max_completion_length": 32,
            },
        ),
        Recipe(
            name="grpo-lora",
            kind="rl",
            title="GRPO against a reward model, LoRA",
            description=(
                "Group relative policy optimization: completions normalised within "
                "their group, KL penalty 0.05 to the reference, LoRA; held-out "
                "preference accuracy every 2 steps. Needs a reward model (a reward "
                "run id or a directory)."
            ),
            overrides={
                **_QUICK,
                "algorithm": "grpo",
                "max_steps": 10,
                "heldout_steps": 2,
                "learning_rate": 1e-5,
                "beta": 0.05,
                "per_device_train_batch_size": 4,
                "per_device_eval_batch_size": 4,  # whole groups of generations
                "num_generations": 4,
                "max_completion_length": 32,
            },
        ),
    )
}


def recipe_get(name: str) -> Recipe:
    """The recipe called `name`; raise ValueError naming the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(
            UNKNOWN_RECIPE.format(name=name, known=", ".join(RECIPES))
        ) from None
