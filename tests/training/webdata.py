"""Real data for the run pages, the runs API and the worker: a project with prior
preference labels, exported into a snapshot by the export service."""

from __future__ import annotations

import json
from pathlib import Path

from annotation.services.imports import import_file
from exports.formats import ExportConfig
from exports.services import snapshot_export

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Rome."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Six."),
    ("What is two plus two?", "Two plus two is four.", "Five."),
    ("Translate good morning into Spanish.", "Buenos dias.", "Bonjour."),
    ("Name a colour of the rainbow.", "Green is a colour of the rainbow.", "Grey."),
    ("When does the library open?", "It opens at nine in the morning.", "Never."),
    ("What is bread made from?", "Flour, water, salt and yeast.", "Stones."),
    ("Tell me a joke.", "Why was the scarecrow praised? He was outstanding.", "No."),
]


def make_snapshot(project, user, tmp_path: Path, *, fmt: str = "preference", copies=2):
    """Import `PAIRS` (x `copies`, numbered) as prior labels and export a snapshot."""
    rows = [
        {"prompt": f"{question} (#{k})", "chosen": good, "rejected": bad}
        for k in range(copies)
        for question, good, bad in PAIRS
    ]
    source = tmp_path / f"pairs-{project.slug}.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_file(project=project, path=source, format="trl_standard")
    config = ExportConfig(format=fmt, include_prior=True, heldout_fraction=0.25)
    return snapshot_export(
        project=project,
        user=user,
        config=config,
        out_dir=tmp_path / f"snapshot-{project.slug}-{fmt}",
    )


# A hub id the web accepts without a local directory (the worker would resolve it).
HUB_MODEL = "prefline-tests/tiny-llama"


def _good_answer_wins(first: str, second: str, good: str) -> str:
    from annotation.models import Choice

    return Choice.FIRST if first == good else Choice.SECOND


def make_judged_snapshot(
    project, tmp_path: Path, *, annotators: int = 2, copies: int = 2, user=None
):
    """Judgments made through the annotation services, exported by the export service.

    `PAIRS` (x `copies`, numbered) are imported as prompts with two responses each;
    `annotators` annotators work through the real queue and each prefers the good
    answer; the project is exported as a preference snapshot with a held-out split.
    """
    from annotation.models import Role
    from annotation.services.judgments import judgment_submit, to_positional
    from annotation.services.projects import membership_set, user_create
    from annotation.services.queue import next_assignment

    good_of = {}
    rows = []
    for k in range(copies):
        for question, good, bad in PAIRS:
            prompt = f"{question} (#{k})"
            good_of[prompt] = good
            rows.append(
                {
                    "prompt": prompt,
                    "responses": [
                        {"model": "careful", "text": good},
                        {"model": "careless", "text": bad},
                    ],
                }
            )
    source = tmp_path / f"prompts-{project.slug}.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_file(project=project, path=source, format="prompt_responses")
    for index in range(annotators):
        person = user_create(
            username=f"judge{index}-{project.slug}",
            password="correct-horse-battery-staple",
        )
        membership_set(project=project, user=person, role=Role.ANNOTATOR)
        while assignment := next_assignment(annotator=person, project=project):
            comparison = assignment.comparison
            prompt = comparison.prompt.messages[-1]["content"]
            canonical = _good_answer_wins(
                comparison.response_a.text,
                comparison.response_b.text,
                good_of[prompt],
            )
            judgment_submit(
                assignment=assignment,
                annotator=person,
                choice=to_positional(canonical, left_is_first=assignment.left_is_first),
            )
    config = ExportConfig(format="preference", heldout_fraction=0.25)
    return snapshot_export(
        project=project,
        user=user,
        config=config,
        out_dir=tmp_path / f"judged-{project.slug}",
    )
