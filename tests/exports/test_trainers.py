"""Snapshots feed TRL's trainers as written: no column renaming, two steps each."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exports.formats import ExportConfig
from exports.services import snapshot_export

pytestmark = pytest.mark.training

STEPS = 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def snapshot_dir(project, out, **settings):
    snapshot_export(
        project=project, user=None, config=ExportConfig(**settings), out_dir=out
    )
    from datasets import load_from_disk

    return load_from_disk(str(out))


def common_args(tmp_path):
    return {
        "output_dir": str(tmp_path / "run"),
        "max_steps": STEPS,
        "per_device_train_batch_size": 2,
        "bf16": False,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_steps": 1,
    }


def assert_trained(trainer):
    result = trainer.train()
    assert trainer.state.global_step == STEPS
    assert result.training_loss == result.training_loss  # not NaN


@pytest.mark.parametrize("format", ["preference", "conversational"])
def test_dpo_trainer_takes_the_snapshot(labelled_project, tmp_path, tiny_model, format):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = snapshot_dir(labelled_project, tmp_path / "d", format=format)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=DPOConfig(**common_args(tmp_path), max_length=128),
        train_dataset=dataset["train"],
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    assert_trained(trainer)


def test_reward_trainer_takes_the_snapshot(labelled_project, tmp_path, tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    dataset = snapshot_dir(labelled_project, tmp_path / "r")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(**common_args(tmp_path), max_length=128),
        train_dataset=dataset["train"],
        processing_class=tokenizer,
    )
    assert_trained(trainer)


def test_kto_trainer_takes_the_unpaired_snapshot(
    labelled_project, tmp_path, tiny_model
):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    dataset = snapshot_dir(
        labelled_project,
        tmp_path / "k",
        format="unpaired",
        both_bad_as_negatives=True,
        heldout_fraction=0,
    )
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=KTOConfig(**common_args(tmp_path), max_length=128),
        train_dataset=dataset["train"],
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    assert_trained(trainer)


def test_trl_dpo_command_trains_on_the_snapshot_folder(
    labelled_project, tmp_path, tiny_model
):
    """`trl dpo --dataset_name FOLDER`, TRL's own script, unchanged: it calls
    `load_dataset(FOLDER)`, which finds the splits through the card's `configs`
    (the Parquet files), and trains on them."""
    out = tmp_path / "snapshot"
    dataset = snapshot_dir(labelled_project, out)
    from datasets import load_dataset

    loaded = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == sorted(dataset) == ["test", "train"]
    for split in dataset:
        assert loaded[split].to_list() == dataset[split].to_list()

    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    run = tmp_path / "run"
    command = [
        str(Path(sys.executable).with_name("trl")), "dpo",
        "--model_name_or_path", str(tiny_model), "--dataset_name", str(out),
        "--output_dir", str(run), "--max_steps", str(STEPS),
        "--per_device_train_batch_size", "2", "--max_length", "128",
        "--bf16", "False", "--use_cpu", "--report_to", "none",
        "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", str(STEPS),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    state = json.loads((run / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == STEPS and all(loss == loss for loss in losses)
    assert (run / "model.safetensors").is_file()
