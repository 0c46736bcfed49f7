from training.cli import TrainCommand
from training.config import SFTRunConfig


class Command(TrainCommand):
    help = (
        "Supervised fine-tuning with TRL's SFTTrainer on an SFT export or on the "
        "chosen responses of a preference snapshot. Records a TrainingRun with its "
        "metrics and checkpoints."
    )
    config_class = SFTRunConfig
    kind = "sft"
    recipe = "training.recipes.sft"
