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
