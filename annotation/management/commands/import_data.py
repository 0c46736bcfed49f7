"""manage.py import_data PROJECT PATH: import prompts, responses or preference pairs."""

from dataclasses import dataclass, field
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.importers.records import FORMATS
from annotation.models import ImportBatch, Project, Split
from annotation.services.imports import ImportRejected, batch_summary, import_file

UNKNOWN_PROJECT = "No project with slug {slug!r}. Existing projects: {slugs}."


@dataclass(frozen=True)
class ImportConfig:
    project: str = field(metadata={"help": "Slug of the project to import into."})
    path: Path = field(
        metadata={
            "help": "A .jsonl, .json, .csv or .parquet file, or a directory "
            "written by datasets' save_to_disk."
        }
    )
    format: str | None = field(
        default=None,
        metadata={"help": "Record format; detected from the first record when unset."},
    )
    split: str = field(
        default=Split.TRAIN, metadata={"help": "train or heldout (evaluation only)."}
    )
    pairs_per_prompt: int | None = field(
        default=None,
        metadata={"help": "Comparisons sampled per prompt (all pairs when unset)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the pair sampling."})
    max_errors: int | None = field(
        default=None,
        metadata={"help": "Errors listed before the rest are only counted."},
    )

    def __post_init__(self):
        if self.format is not None and self.format not in FORMATS:
            raise CommandError(f"--format must be one of: {', '.join(FORMATS)}.")
        if self.split not in Split.values:
            raise CommandError("--split must be train or heldout.")
        if self.pairs_per_prompt is not None and self.pairs_per_prompt < 1:
            raise CommandError("--pairs-per-prompt must be at least 1.")
        if self.max_errors is not None and self.max_errors < 1:
            raise CommandError("--max-errors must be at least 1.")


def run_import(config: ImportConfig) -> ImportBatch:
    """Import the file; a rejected file becomes a CommandError listing its errors."""
    project = Project.objects.filter(slug=config.project).first()
    if project is None:
        slugs = ", ".join(Project.objects.values_list("slug", flat=True)) or "none"
        raise CommandError(UNKNOWN_PROJECT.format(slug=config.project, slugs=slugs))
    try:
        return import_file(
            project=project,
            path=config.path,
            format=config.format,
            split=config.split,
            pairs_per_prompt=config.pairs_per_prompt,
            seed=config.seed,
            max_errors=config.max_errors,
        )
    except ImportRejected as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Import prompts, prompts with candidate responses, TRL preference pairs or "
        "HH-RLHF transcripts (JSONL, JSON array, CSV, Parquet or a datasets "
        "save_to_disk directory). A file with any bad row is rejected whole."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project slug.")
        parser.add_argument("path", type=Path, help="File or directory to import.")
        parser.add_argument("--format", choices=FORMATS, default=None)
        parser.add_argument("--split", choices=Split.values, default=Split.TRAIN)
        parser.add_argument("--pairs-per-prompt", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-errors", type=int, default=None)

    def handle(self, *args, **options):
        config = ImportConfig(
            project=options["project"],
            path=options["path"],
            format=options["format"],
            split=options["split"],
            pairs_per_prompt=options["pairs_per_prompt"],
            seed=options["seed"],
            max_errors=options["max_errors"],
        )
        batch = run_import(config)
        style = self.style.WARNING if batch.already_imported else self.style.SUCCESS
        self.stdout.write(style(batch_summary(batch)))
