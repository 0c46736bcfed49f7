from training.cli import TrainCommand
from training.config import RewardRunConfig


class Command(TrainCommand):
    help = (
        "Train a reward model (TRL's RewardTrainer, Bradley-Terry loss on "
        "chosen/rejected pairs) from a preference snapshot. Records a TrainingRun "
        "with its metrics and checkpoints; train_rl --reward-model RUN_ID uses it."
    )
    config_class = RewardRunConfig
    kind = "reward"
    recipe = "training.recipes.reward"
