"""manage.py export_preferences PROJECT --out DIR [...]: write a snapshot now.

Records a `DatasetSnapshot` like the web page does, but builds it in this process
instead of the worker.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from exports.aggregation import POLICIES
from exports.formats import FORMATS, SFT_STYLES, ExportConfig
from exports.services import snapshot_export

UNKNOWN_PROJECT = "No project with slug {slug!r}; see the project list at /."


class Command(BaseCommand):
    help = "Export a project's judgments as a versioned preference dataset snapshot."

    def add_arguments(self, parser) -> None:
        parser.add_argument("project", help="Project slug.")
        parser.add_argument("--out", required=True, help="New (or empty) folder.")
        parser.add_argument("--format", choices=FORMATS, default="preference")
        parser.add_argument("--policy", choices=POLICIES, default="majority")
        parser.add_argument("--min-agreement", type=float, default=0.5)
        parser.add_argument("--min-votes", type=int, default=1)
        parser.add_argument(
            "--include-prior", action="store_true", help="Count imported labels."
        )
        parser.add_argument(
            "--both-bad-as-negatives",
            action="store_true",
            help="Unpaired format: both-bad comparisons give two undesirable rows.",
        )
        parser.add_argument("--sft-style", choices=SFT_STYLES, default="messages")
        parser.add_argument("--heldout-fraction", type=float, default=0.1)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-chars", type=int, default=20_000)
        parser.add_argument("--tokenizer", default="", help="Tokenizer path.")
        parser.add_argument("--max-tokens", type=int, default=None)
        parser.add_argument("--name", default="")

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(UNKNOWN_PROJECT.format(slug=options["project"]))
        try:
            config = ExportConfig(
                format=options["format"],
                policy=options["policy"],
                min_agreement=options["min_agreement"],
                include_prior=options["include_prior"],
                min_votes=options["min_votes"],
                heldout_fraction=options["heldout_fraction"],
                seed=options["seed"],
                both_bad_as_negatives=options["both_bad_as_negatives"],
                sft_style=options["sft_style"],
                max_chars=options["max_chars"],
                tokenizer_path=options["tokenizer"],
                max_tokens=options["max_tokens"],
            )
            snapshot = snapshot_export(
                project=project,
                user=None,
                config=config,
                out_dir=Path(options["out"]),
                name=options["name"],
            )
        except ValueError as exc:
            detail = exc.args[0] if exc.args else str(exc)
            if isinstance(detail, dict):
                detail = "; ".join(str(message) for message in detail.values())
            raise CommandError(str(detail)) from exc
        self.stdout.write(
            f"Snapshot {snapshot.pk}: {snapshot.counts} rows, dropped "
            f"{snapshot.dropped}, sha256 {snapshot.content_sha256}\n"
            f"Written to {snapshot.output_dir}"
        )
