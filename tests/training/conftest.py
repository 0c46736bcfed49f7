"""Training fixtures: the tiny model (built once per session) and small datasets in
TRL's formats, written with `save_to_disk` like a snapshot's files."""

import pytest

QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Rome."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Six, I think."),
    ("What is two plus two?", "Two plus two is four.", "Five."),
    ("Translate good morning into Spanish.", "Buenos dias.", "Bonjour."),
    ("Name a colour of the rainbow.", "Green is a colour of the rainbow.", "Grey."),
    ("When does the library open?", "It opens at nine in the morning.", "Never."),
    ("What is bread made from?", "Flour, water, salt and yeast.", "Stones."),
    (
        "Tell me a joke.",
        "Why did the scarecrow win an award? He was outstanding.",
        "No.",
    ),
]


def preference_rows(repeat: int = 1) -> list[dict]:
    rows = []
    for _ in range(repeat):
        for question, good, bad in QUESTIONS:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": question}],
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}],
                }
            )
    return rows


def write_preference_dataset(path, *, repeat: int = 2, with_test: bool = True):
    from datasets import Dataset, DatasetDict

    splits = {"train": Dataset.from_list(preference_rows(repeat))}
    if with_test:
        splits["test"] = Dataset.from_list(preference_rows(1)[:4])
    DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A real (untrained) reward model: the tiny model with a one-label score head,
    saved as a reward run saves it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-reward")
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture
def scorer_config_dir(tmp_path):
    """What the web queue reads of a reward-model directory: a config.json naming a
    sequence-classification architecture (no weights: the worker loads those)."""
    folder = tmp_path / "scorer"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"architectures": ["LlamaForSequenceClassification"], "num_labels": 1}'
    )
    return folder


@pytest.fixture(scope="session")
def preference_dir(tmp_path_factory):
    return write_preference_dataset(tmp_path_factory.mktemp("data") / "preference")


def import_pairs(project, tmp_path) -> None:
    """Import QUESTIONS (twice, numbered) as prior preference labels."""
    import json

    from annotation.services.imports import import_file

    rows = [
        {"prompt": f"{question} (#{copy})", "chosen": good, "rejected": bad}
        for copy in range(2)
        for question, good, bad in QUESTIONS
    ]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_file(project=project, path=source, format="trl_standard")


def export_snapshot(project, out_dir, *, fmt: str = "preference"):
    """Export the project's labels through the export service: a real
    DatasetSnapshot with its files."""
    from exports.formats import ExportConfig
    from exports.services import snapshot_export

    config = ExportConfig(format=fmt, include_prior=True, heldout_fraction=0.25)
    return snapshot_export(project=project, user=None, config=config, out_dir=out_dir)


@pytest.fixture
def snapshot(project, researcher, tmp_path):
    """A succeeded preference snapshot of the `project` fixture, files on disk."""
    from tests.training.webdata import make_snapshot

    return make_snapshot(project, researcher, tmp_path)
