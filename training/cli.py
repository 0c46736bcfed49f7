"""The shared shape of the train_* commands: flags from the config dataclass,
YAML file, queued-run config and overrides resolved into one frozen config, then
one call to the stage's `main(config)`."""

from __future__ import annotations

import argparse
import os

from django.core.management.base import BaseCommand, CommandError

from training.config import (
    ConfigError,
    TrainConfig,
    add_config_arguments,
    config_resolve,
)

COMMON_EPILOG = (
    "Settings come from, in order: a queued run's stored config (--run-id), the "
    "--config YAML file, then flags. LoRA (r=16, alpha=32 on q/k/v/o projections) "
    "is the default; --full-finetune trains every weight. bf16 is on with a "
    "bf16-capable GPU and off on CPU."
)
USER_ENV = "PREFLINE_USER"


class TrainCommand(BaseCommand):
    """Subclasses set `config_class`, `kind`, `recipe` (module path) and `help`."""

    config_class: type[TrainConfig]
    kind: str
    recipe: str
    required: tuple[str, ...] = ()

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.epilog = COMMON_EPILOG
        return parser

    def add_arguments(self, parser):
        parser.add_argument(
            "--config", dest="config_file", help="YAML file of settings (TRL names)."
        )
        parser.add_argument(
            "--run-id",
            type=int,
            help="Execute this already-queued TrainingRun (its stored config is the "
            "base), or with --resume continue it.",
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="Continue the run (--run-id, or the one writing to --output-dir) "
            "from its last checkpoint: same step count, same metrics series.",
        )
        parser.add_argument(
            "--full-finetune",
            action="store_const",
            const=False,
            dest="use_peft",
            default=argparse.SUPPRESS,
            help="Train every weight instead of a LoRA adapter.",
        )
        parser.add_argument(
            "--user",
            default=os.environ.get(USER_ENV, ""),
            help=f"Username recorded as the run's creator (default ${USER_ENV}); "
            "with a snapshot it must be a researcher of the snapshot's project. A "
            "run trained on a path belongs to no project: only its creator (and "
            "superusers) see it on the web. Not used with --run-id (a queued run "
            "already has its creator).",
        )
        add_config_arguments(parser, self.config_class)

    def handle(self, *args, **options):
        from training.models import TrainingRun

        overrides = {
            name: options[name]
            for name in (f.name for f in self._fields())
            if name in options
        }
        run_id = options.get("run_id")
        if run_id is None and options["resume"] and overrides.get("output_dir"):
            run_id = self._run_writing_to(overrides["output_dir"])
        stored = None
        if run_id is not None:
            run = TrainingRun.objects.filter(pk=run_id).first()
            if run is None:
                raise CommandError(f"Training run {run_id} does not exist.")
            stored = run.config
        try:
            config = config_resolve(
                self.config_class,
                stored=stored,
                yaml_path=options.get("config_file"),
                overrides=overrides,
            )
            config.require(*self.required)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc

        import importlib

        recipe = importlib.import_module(self.recipe)
        run = recipe.main(
            config,
            run_id=run_id,
            resume=options["resume"],
            write=self._write,
            user=options["user"],
        )
        if run is not None and run.status == "cancelled":
            raise CommandError(
                f"Run {run.pk} cancelled: {run.error} Continue it with "
                f"--run-id {run.pk} --resume."
            )

    def _run_writing_to(self, output_dir: str) -> int | None:
        from pathlib import Path

        from training.models import TrainingRun

        path = str(Path(output_dir).expanduser().resolve())
        run = (
            TrainingRun.objects.filter(kind=self.kind, output_dir=path)
            .order_by("-id")
            .first()
        )
        return run.pk if run else None

    def _write(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _fields(self):
        import dataclasses

        return dataclasses.fields(self.config_class)
