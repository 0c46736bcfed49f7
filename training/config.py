"""Config dataclasses of the training commands, one per stage.

Field names are TRL's own where TRL has the argument (`learning_rate`, `beta`,
`loss_type`, `use_peft`, `lora_r`, ...), so a TRL user's YAML file works here. A config
is resolved from, in order: a queued run's stored config (`--run-id`), a YAML file
(`--config`), then command-line flags. Each dataclass checks itself in `__post_init__`
and raises `ConfigError` with the field and the fix.

This module imports nothing heavy: the web process uses it to validate queued runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RL_ALGORITHMS = ("rloo", "grpo")
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
EVAL_STRATEGIES = ("no", "steps", "epoch")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

# TRL script argument names accepted in YAML files as aliases of ours.
ALIASES = {"model_name_or_path": "model", "dataset_name": "dataset"}

UNKNOWN_KEY = "{source}: unknown setting {key!r} for {stage}; valid settings: {valid}"
NOT_A_MAPPING = "{source}: the YAML file must hold a mapping of setting: value"
BAD_TYPE = "{source}: setting {key!r} must be {expected}, got {value!r}"
MISSING = "{name} is required: pass --{flag} (or set it in the --config YAML file)"


# transformers' `SchedulerType` values (a test compares them): checked here, where
# the web form validates too, without importing transformers.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)


def world_size() -> int:
    """Processes training together: `WORLD_SIZE` (torchrun, accelerate), else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


class ConfigError(ValueError):
    """A config value is missing or wrong; the message names the field and the fix."""


def local_model_missing(model: str) -> bool:
    """True when `model` is written as a path (`/`, `~`, `.`) and is no directory
    here. Anything else is a hub id for the loader to resolve. The web form and the
    train_* commands both refuse such a path before a run row exists; the hub
    client would otherwise take it for a repo id and fail on its characters."""
    if not model.startswith(("/", "~", ".")):
        return False
    try:
        return not Path(model).expanduser().is_dir()
    except RuntimeError:  # "~nosuchuser/...": no home to expand
        return True


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """Settings every stage shares."""

    model: str = field(
        default="",
        metadata=_help(
            "Base model: a local directory or a hub id, loaded with from_pretrained "
            "either way. Defaults to the final model of --parent-run."
        ),
    )
    dataset: str = field(
        default="",
        metadata=_help(
            "A DatasetSnapshot id, or a dataset directory (save_to_disk, parquet or "
            "jsonl files named by split), or one parquet/jsonl file."
        ),
    )
    output_dir: str = field(
        default="",
        metadata=_help(
            "Where checkpoints go (default PREFLINE_DATA_DIR/runs/<run id>)."
        ),
    )
    name: str = field(default="", metadata=_help("A label for the run."))
    parent_run: int | None = field(
        default=None,
        metadata=_help("Run this one continues (SFT -> DPO): provenance and model."),
    )
    dataset_train_split: str = field(
        default="train", metadata=_help("Dataset split to train on.")
    )
    dataset_test_split: str = field(
        default="test", metadata=_help("Dataset split to evaluate on, when present.")
    )
    learning_rate: float = field(
        default=2e-4, metadata=_help("Initial AdamW learning rate.")
    )
    per_device_train_batch_size: int = field(
        default=8, metadata=_help("Batch size per device for training.")
    )
    per_device_eval_batch_size: int = field(
        default=8, metadata=_help("Batch size per device for evaluation.")
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("Micro-batches accumulated per optimizer step.")
    )
    num_train_epochs: float = field(
        default=1.0, metadata=_help("Epochs to train (ignored when max_steps > 0).")
    )
    max_steps: int = field(
        default=-1, metadata=_help("Stop after this many optimizer steps (-1: off).")
    )
    warmup_steps: float = field(
        default=0,
        metadata=_help("Linear warmup steps (a float below 1: a fraction of steps)."),
    )
    lr_scheduler_type: str = field(
        default="linear", metadata=_help("Learning-rate schedule (transformers name).")
    )
    logging_steps: int = field(
        default=10, metadata=_help("Record metrics every this many steps.")
    )
    save_steps: int = field(
        default=500, metadata=_help("Save a checkpoint every this many steps.")
    )
    save_total_limit: int | None = field(
        default=None, metadata=_help("Keep at most this many checkpoints on disk.")
    )
    eval_strategy: str = field(
        default="steps",
        metadata=_help(
            "When to evaluate on the test split (if the dataset has one): no, "
            "steps or epoch."
        ),
    )
    eval_steps: int | None = field(
        default=None,
        metadata=_help("Evaluate every this many steps (default: save_steps)."),
    )
    max_length: int | None = field(
        default=1024, metadata=_help("Truncate tokenized sequences to this length.")
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata=_help("Recompute activations in backward to save memory (TRL: on)."),
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help(
            "bf16 mixed precision. Default: on when a bf16-capable GPU is present, "
            "off on CPU (TRL would turn it on everywhere)."
        ),
    )
    seed: int = field(default=42, metadata=_help("Random seed."))
    use_peft: bool = field(
        default=True,
        metadata=_help("Train a LoRA adapter (default); --full-finetune turns it off."),
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha."))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout."))
    lora_target_modules: tuple[str, ...] = field(
        default=DEFAULT_LORA_TARGETS,
        metadata=_help("Modules LoRA adapts (default: the attention projections)."),
    )

    stage: typing.ClassVar[str] = "train"

    def __post_init__(self) -> None:
        positive = {
            "learning_rate": self.learning_rate,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "per_device_eval_batch_size": self.per_device_eval_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(
                f"max_steps must be -1 (off) or > 0, got {self.max_steps}"
            )
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ConfigError("num_train_epochs must be > 0 when max_steps is -1")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(
                f"lora_dropout must be in [0, 1), got {self.lora_dropout}"
            )
        if self.eval_strategy not in EVAL_STRATEGIES:
            raise ConfigError(
                f"eval_strategy must be one of {', '.join(EVAL_STRATEGIES)}, "
                f"got {self.eval_strategy!r}"
            )
        if self.lr_scheduler_type not in LR_SCHEDULERS:
            raise ConfigError(
                f"lr_scheduler_type must be one of {', '.join(LR_SCHEDULERS)}, "
                f"got {self.lr_scheduler_type!r}"
            )
        for name in ("eval_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be > 0 (or unset), got {value}")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")
        if self.use_peft and not self.lora_target_modules:
            raise ConfigError("lora_target_modules is empty: name at least one module")

    def require(self, *names: str) -> None:
        """Raise ConfigError when one of the named settings is empty."""
        for name in names:
            if getattr(self, name) in ("", None):
                raise ConfigError(
                    MISSING.format(name=name, flag=name.replace("_", "-"))
                )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        return data


@dataclass(frozen=True)
class SFTRunConfig(TrainConfig):
    """Supervised fine-tuning on chosen responses or an SFT export."""

    assistant_only_loss: bool = field(
        default=False,
        metadata=_help("Loss only on assistant turns (conversational data)."),
    )
    completion_only_loss: bool | None = field(
        default=None,
        metadata=_help("Loss only on the completion (prompt/completion data)."),
    )
    packing: bool = field(
        default=False, metadata=_help("Pack several examples into one sequence.")
    )

    stage: typing.ClassVar[str] = "sft"


@dataclass(frozen=True)
class RewardRunConfig(TrainConfig):
    """Bradley-Terry reward model on chosen/rejected pairs."""

    learning_rate: float = field(
        default=1e-4, metadata=_help("Initial AdamW learning rate.")
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata=_help("Weight of the penalty that centres rewards on zero."),
    )

    stage: typing.ClassVar[str] = "reward"


@dataclass(frozen=True)
class DPORunConfig(TrainConfig):
    """Direct preference optimization."""

    learning_rate: float = field(
        default=5e-6, metadata=_help("Initial AdamW learning rate.")
    )
    beta: float = field(
        default=0.1,
        metadata=_help("Strength of the implicit KL constraint to the reference."),
    )
    loss_type: str = field(
        default="sigmoid",
        metadata=_help(f"DPO loss, one of: {', '.join(DPO_LOSS_TYPES)}."),
    )
    label_smoothing: float = field(
        default=0.0, metadata=_help("Assumed label noise (robust/cDPO losses).")
    )
    ref_model: str = field(
        default="",
        metadata=_help(
            "Reference model for full fine-tuning (default: a frozen copy of "
            "--model). With LoRA the adapter-disabled base is the reference."
        ),
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata=_help("Compute reference log-probs once before training."),
    )

    stage: typing.ClassVar[str] = "dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ConfigError(
                f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)}, "
                f"got {self.loss_type!r}"
            )
        if not self.beta > 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}"
            )
        if self.ref_model and self.use_peft:
            raise ConfigError(
                "ref_model is only used with --full-finetune: with LoRA the "
                "adapter-disabled base model is the reference"
            )


@dataclass(frozen=True)
class RLRunConfig(TrainConfig):
    """Online RL (RLOO or GRPO) against a Prefline reward model, KL to the reference.

    TRL 1.x ships no PPOTrainer; RLOO and GRPO are maintained in its place.
    """

    learning_rate: float = field(
        default=1e-5, metadata=_help("Initial AdamW learning rate.")
    )
    algorithm: str = field(
        default="rloo", metadata=_help("Online RL algorithm: rloo or grpo.")
    )
    reward_model: str = field(
        default="",
        metadata=_help(
            "Reward model: a Prefline reward run id, or a directory holding a "
            "sequence-classification model or a LoRA adapter on one."
        ),
    )
    beta: float = field(
        default=0.05,
        metadata=_help("KL penalty coefficient to the reference policy."),
    )
    num_generations: int = field(
        default=4, metadata=_help("Completions sampled per prompt.")
    )
    max_completion_length: int = field(
        default=64, metadata=_help("Longest sampled completion, in tokens.")
    )
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature."))
    heldout_pairs: int = field(
        default=64,
        metadata=_help(
            "Held-out preference pairs (a fixed sample of the dataset's test split) "
            "on which the policy's implicit preference accuracy is measured, for "
            "the reward-hacking warning; 0 turns the measurement off."
        ),
    )
    heldout_steps: int | None = field(
        default=None,
        metadata=_help(
            "Measure the held-out accuracy every this many steps, and at the last "
            "step (default: eval_steps, else save_steps)."
        ),
    )

    stage: typing.ClassVar[str] = "rl"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.algorithm not in RL_ALGORITHMS:
            raise ConfigError(
                f"algorithm must be one of {', '.join(RL_ALGORITHMS)}, "
                f"got {self.algorithm!r} (TRL 1.x has no PPOTrainer)"
            )
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.num_generations < 2:
            raise ConfigError(
                f"num_generations must be >= 2 (the baseline needs a group), "
                f"got {self.num_generations}"
            )
        if self.max_completion_length < 1:
            raise ConfigError("max_completion_length must be >= 1")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.heldout_pairs < 0:
            raise ConfigError(f"heldout_pairs must be >= 0, got {self.heldout_pairs}")
        if self.heldout_steps is not None and self.heldout_steps < 1:
            raise ConfigError(f"heldout_steps must be >= 1, got {self.heldout_steps}")
        # TRL's own checks (RLOOConfig / GRPOConfig), made here so that a bad
        # combination is refused before a run is queued or a model loaded. Every
        # generation batch holds whole groups of num_generations completions.
        processes = world_size()
        generation = (
            self.per_device_train_batch_size
            * processes
            * self.gradient_accumulation_steps
        )
        if generation % self.num_generations:
            raise ConfigError(
                f"per_device_train_batch_size x gradient_accumulation_steps x "
                f"processes ({generation}) must be a multiple of num_generations "
                f"({self.num_generations}): each batch holds whole groups of "
                f"completions"
            )

    def eval_batch_problem(self) -> str | None:
        """Why TRL would refuse to evaluate this config on a test split, or None.

        Checked where it is known that the run evaluates (the dataset has a test
        split and eval_strategy is not no): the web queue and the trainer's build;
        without a test split the rule does not apply."""
        evaluation = self.per_device_eval_batch_size * world_size()
        if self.eval_strategy == "no" or evaluation % self.num_generations == 0:
            return None
        return (
            f"per_device_eval_batch_size x processes ({evaluation}) must be a "
            f"multiple of num_generations ({self.num_generations}) to evaluate on "
            f"the test split (TRL scores whole groups); or set eval_strategy to no"
        )


PARENT_IS_REWARD = (
    "Parent run {run_id} is a reward run: a scorer without a language-model head. A "
    "{kind} run continues an sft, dpo or rl run (a reward run is the reward model "
    "of an rl run)."
)


def parent_kind_problem(*, run_id: int, parent_kind: str, kind: str) -> str | None:
    """Why a run of `kind` cannot start from a parent of `parent_kind`, or None.

    Only a reward stage may start from a reward run: its final model is a sequence
    classifier, and loaded as a causal LM it gets a new, random LM head."""
    if parent_kind == "reward" and kind != "reward":
        return PARENT_IS_REWARD.format(run_id=run_id, kind=kind)
    return None


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {
    "sft": SFTRunConfig,
    "reward": RewardRunConfig,
    "dpo": DPORunConfig,
    "rl": RLRunConfig,
}


def _field_types(cls: type[TrainConfig]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(hint: Any) -> tuple[Any, bool]:
    """Return (type, optional) for `X` or `X | None`."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return hint, False


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    base, optional = _base_type(hint)
    if value is None and optional:
        return None
    origin = typing.get_origin(base)
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) for v in value
        ):
            raise ConfigError(
                BAD_TYPE.format(
                    source=source, key=key, expected="a list of names", value=value
                )
            )
        return tuple(value)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(
                BAD_TYPE.format(
                    source=source, key=key, expected="true or false", value=value
                )
            )
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                BAD_TYPE.format(
                    source=source, key=key, expected="an integer", value=value
                )
            )
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(
                BAD_TYPE.format(
                    source=source, key=key, expected="a number", value=value
                )
            )
        try:
            return float(value)
        except ValueError:
            raise ConfigError(
                BAD_TYPE.format(
                    source=source, key=key, expected="a number", value=value
                )
            ) from None
    if not isinstance(value, str):
        raise ConfigError(
            BAD_TYPE.format(source=source, key=key, expected="a string", value=value)
        )
    return value


def _normalise(
    cls: type[TrainConfig], values: dict[str, Any], source: str
) -> dict[str, Any]:
    hints = _field_types(cls)
    out = {}
    for raw_key, value in values.items():
        key = ALIASES.get(raw_key, raw_key).replace("-", "_")
        if key not in hints:
            raise ConfigError(
                UNKNOWN_KEY.format(
                    source=source,
                    key=raw_key,
                    stage=cls.stage,
                    valid=", ".join(sorted(hints)),
                )
            )
        out[key] = _coerce(raw_key, value, hints[key], source)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (empty file: empty dict)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(NOT_A_MAPPING.format(source=path))
    return data


def config_resolve(
    cls: type[TrainConfig],
    *,
    stored: dict[str, Any] | None = None,
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Build a config from stored values, then a YAML file, then overrides."""
    values: dict[str, Any] = {}
    if stored:
        known = {f.name for f in dataclasses.fields(cls)}
        stored = {k: v for k, v in stored.items() if k in known}
        values.update(_normalise(cls, stored, "stored run config"))
    if yaml_path:
        values.update(_normalise(cls, read_yaml(yaml_path), str(yaml_path)))
    if overrides:
        values.update(_normalise(cls, overrides, "command line"))
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{cls.stage} config: {exc}") from exc


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]):
    """Add one `--kebab-case` option per config field; unset options stay absent."""
    for name, hint in _field_types(cls).items():
        spec = next(f for f in dataclasses.fields(cls) if f.name == name)
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": spec.metadata.get("help", ""),
        }
        base, _ = _base_type(hint)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = base
        parser.add_argument(flag, **kwargs)
