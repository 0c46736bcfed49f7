"""`manage.py load_demo [--reset] [--no-simulated-judgments]`: the demo project."""

from django.core.management.base import BaseCommand, CommandError

from annotation.demo.loader import DemoConfig, report_lines, run_load_demo
from annotation.services.imports import ImportRejected


class Command(BaseCommand):
    help = (
        "Load the Prefline demo: project 'demo' with prompts, candidate responses of "
        "four fictional models, preference pairs and held-out prompts written for "
        "Prefline; demo logins per role; SIMULATED annotators who judge about half "
        "the comparisons; and the tiny model when the training extra is installed. "
        "Running it again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete the demo project (and all its data) and load it again.",
        )
        parser.add_argument(
            "--no-simulated-judgments",
            action="store_true",
            help="Leave every comparison unjudged (no simulated annotators).",
        )
        parser.add_argument(
            "--no-tiny-model",
            action="store_true",
            help="Do not build the tiny model into $PREFLINE_DATA_DIR/models/tiny.",
        )
        parser.add_argument("--seed", type=int, default=0, help="Random seed.")

    def handle(self, *args, **options):
        config = DemoConfig(
            reset=options["reset"],
            simulated_judgments=not options["no_simulated_judgments"],
            tiny_model=not options["no_tiny_model"],
            seed=options["seed"],
        )
        try:
            report = run_load_demo(config, progress=self.stdout.write)
        except ImportRejected as exc:
            raise CommandError(f"A demo file was rejected:\n{exc}") from exc
        for line in report_lines(report):
            self.stdout.write(line)
