from training.cli import TrainCommand
from training.config import RLRunConfig


class Command(TrainCommand):
    help = (
        "Online RL against a Prefline reward model (--reward-model RUN_ID or "
        "directory) with a KL penalty to the reference (--beta): the PPO stage of "
        "the classic RLHF recipe. TRL 1.x no longer ships PPOTrainer and maintains "
        "RLOO and GRPO in its place: --algorithm rloo (default) or grpo. Every "
        "--heldout-steps it measures the policy's implicit preference accuracy on "
        "held-out pairs of the dataset's test split (eval_heldout_accuracy), which "
        "the reward-hacking warning compares with the reward. Records a "
        "TrainingRun with its metrics and checkpoints."
    )
    config_class = RLRunConfig
    kind = "rl"
    recipe = "training.recipes.rl"
    required = ("reward_model",)
