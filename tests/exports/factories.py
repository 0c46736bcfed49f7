"""Build test data through the real services: imports, the queue and submissions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from annotation.models import Choice, Role
from annotation.services.imports import import_file
from annotation.services.judgments import judgment_submit, to_positional
from annotation.services.projects import membership_set, project_create, user_create
from annotation.services.queue import next_assignment


def make_project(slug: str = "prefs", *, target: int = 3):
    return project_create(slug=slug, name=f"Project {slug}", target_judgments=target)


def make_annotators(project, names: list[str]) -> list:
    users = []
    for name in names:
        user = user_create(username=name, password="correct-horse-battery-staple")
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        users.append(user)
    return users


def import_pairs(project, path: Path, pairs: list[dict], *, split: str = "train"):
    """Import TRL standard rows {prompt, chosen, rejected} (a prior label each)."""
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return import_file(project=project, path=path, split=split, format="trl_standard")


def import_prompt_responses(project, path: Path, rows: list[dict], *, split="train"):
    """Import {prompt, responses: [{model, text}]} rows; every pair is compared."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return import_file(
        project=project, path=path, split=split, format="prompt_responses"
    )


Decide = Callable[[str, str, str, str], str | None]


def annotate(project, annotators: list, decide: Decide) -> int:
    """Let each annotator work through the queue until it is empty.

    `decide(username, prompt, first_text, second_text)` returns the preferred text,
    "tie", "both_bad", or None to skip. Returns the number of judgments submitted.
    """
    from annotation.services.queue import assignment_skip

    submitted = 0
    for user in annotators:
        while (
            assignment := next_assignment(annotator=user, project=project)
        ) is not None:
            comparison = assignment.comparison
            prompt = comparison.prompt.messages[-1]["content"]
            first, second = comparison.response_a.text, comparison.response_b.text
            wanted = decide(user.username, prompt, first, second)
            if wanted is None:
                assignment_skip(assignment=assignment, annotator=user)
                continue
            if wanted in (Choice.TIE, Choice.BOTH_BAD):
                canonical = wanted
            else:
                canonical = Choice.FIRST if wanted == first else Choice.SECOND
            positional = to_positional(
                canonical, left_is_first=assignment.left_is_first
            )
            judgment_submit(assignment=assignment, annotator=user, choice=positional)
            submitted += 1
    return submitted
