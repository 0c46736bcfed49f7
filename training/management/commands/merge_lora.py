"""`manage.py merge_lora ADAPTER_DIR OUT_DIR`: merge a LoRA adapter for serving."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

NOT_AN_ADAPTER = "{path}: no adapter_config.json here: not a LoRA adapter directory."


class Command(BaseCommand):
    help = (
        "Merge a LoRA adapter (a run's output directory or checkpoint) into its base "
        "model and save a standalone model with its tokenizer. When the adapter is "
        "a registered checkpoint, the merged model is registered on the same run."
    )

    def add_arguments(self, parser):
        parser.add_argument("adapter_dir", help="Directory holding the adapter.")
        parser.add_argument("out_dir", help="Where to write the merged model.")

    def handle(self, *args, **options):
        from training import services
        from training.models import ModelCheckpoint, RunKind
        from training.recipes.common import merge_adapter

        adapter = Path(options["adapter_dir"]).expanduser().resolve()
        if not (adapter / "adapter_config.json").exists():
            raise CommandError(NOT_AN_ADAPTER.format(path=adapter))
        checkpoint = (
            ModelCheckpoint.objects.select_related("run")
            .filter(path=str(adapter))
            .order_by("-id")
            .first()
        )
        is_reward = checkpoint is not None and checkpoint.run.kind == RunKind.REWARD
        out = merge_adapter(
            str(adapter),
            Path(options["out_dir"]).expanduser().resolve(),
            sequence_classification=is_reward,
        )
        if checkpoint is not None:
            services.checkpoint_register(
                run=checkpoint.run,
                path=str(out),
                step=checkpoint.step,
                is_adapter=False,
                is_merged=True,
                base_model=checkpoint.base_model,
                eval_metrics=checkpoint.eval_metrics,
            )
        self.stdout.write(f"Merged model written to {out}")
