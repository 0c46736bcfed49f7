from training.cli import TrainCommand
from training.config import DPORunConfig


class Command(TrainCommand):
    help = (
        "Direct preference optimization with TRL's DPOTrainer on a preference "
        "snapshot (--loss-type, --beta). With LoRA the adapter-disabled base is the "
        "reference model; with --full-finetune it is --ref-model or a frozen copy "
        "of --model. Records a TrainingRun with its metrics and checkpoints."
    )
    config_class = DPORunConfig
    kind = "dpo"
    recipe = "training.recipes.dpo"
