"""manage.py export_preferences PROJECT --out DIR [...]: write a snapshot now.

Records a `DatasetSnapshot` like the web page does, but builds it in this process
instead of the worker. `--user` names the researcher recorded as its creator (by
default the account named by $PREFLINE_USER, else none: "command"). `--clean-stale`
only marks the project's interrupted builds failed and removes their temporary
folders (every build also does that first).
"""

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from annotation.permissions import command_creator
from exports.aggregation import POLICIES
from exports.formats import (
    FILE_KINDS,
    FORMATS,
    SFT_STYLES,
    ExportConfig,
    SettingsError,
)
from exports.services import snapshot_clean_stale, snapshot_export

UNKNOWN_PROJECT = "No project with slug {slug!r}; see the project list at /."
OUT_REQUIRED = "--out DIR is required (unless --clean-stale)."
CLEAN_STALE_ALONE = (
    "--clean-stale only marks interrupted builds failed and exports nothing; "
    "run it without --out."
)
USER_ENV = "PREFLINE_USER"


class Command(BaseCommand):
    help = "Export a project's judgments as a versioned preference dataset snapshot."

    def add_arguments(self, parser) -> None:
        parser.add_argument("project", help="Project slug.")
        parser.add_argument("--out", help="New (or empty) folder.")
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
        parser.add_argument(
            "--tokenizer",
            "--tokenizer-path",
            dest="tokenizer",
            default="",
            help="tokenizer.json (or its folder) for the length checks in tokens.",
        )
        parser.add_argument("--max-tokens", type=int, default=None)
        parser.add_argument(
            "--files",
            default=",".join(FILE_KINDS),
            help="File kinds to write, comma-separated among "
            f"{', '.join(FILE_KINDS)}; parquet must be among them (the card's data "
            "files). Default: all.",
        )
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--user",
            default=os.environ.get(USER_ENV, ""),
            help=f"Username recorded as the creator (default ${USER_ENV}).",
        )
        parser.add_argument(
            "--clean-stale",
            action="store_true",
            help="Only mark interrupted builds of the project failed and remove "
            "their temporary folders.",
        )

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(UNKNOWN_PROJECT.format(slug=options["project"]))
        if options["clean_stale"]:
            if options["out"]:
                raise CommandError(CLEAN_STALE_ALONE)
            cleaned = snapshot_clean_stale(project=project)
            self.stdout.write(
                f"Marked {len(cleaned)} interrupted snapshot(s) failed: "
                f"{[s.pk for s in cleaned]}"
            )
            return
        if not options["out"]:
            raise CommandError(OUT_REQUIRED)
        user = _creator(options["user"], project)
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
                files=tuple(k.strip() for k in options["files"].split(",") if k),
            )
            snapshot = snapshot_export(
                project=project,
                user=user,
                config=config,
                out_dir=Path(options["out"]),
                name=options["name"],
            )
        except SettingsError as exc:
            # The settings' field names are the options' names (`--min-votes`).
            raise CommandError(
                " ".join(
                    f"--{field.replace('_', '-')}: {message}"
                    for field, message in exc.errors.items()
                )
            ) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:  # the folder could not be written after all
            raise CommandError(f"Cannot write the snapshot: {exc}") from exc
        self.stdout.write(
            f"Snapshot {snapshot.pk}: {snapshot.counts} rows, dropped comparisons "
            f"{snapshot.dropped}, {snapshot.judgment_count} judgments, "
            f"sha256 {snapshot.content_sha256}\n"
            f"Written to {snapshot.output_dir}"
        )


def _creator(name: str, project: Project):
    """The user recorded as creator: an active researcher of the project, or None."""
    try:
        return command_creator(name, project)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
