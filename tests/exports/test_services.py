"""End-to-end snapshots through the real import, queue and submission services."""

import hashlib
import json
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.utils import timezone

from annotation.models import Judgment, Prompt
from exports.formats import TOKENIZER_MISSING, ExportConfig, SettingsError
from exports.judgment_ids import ids_sha256
from exports.models import DatasetSnapshot, SnapshotStatus
from exports.selectors import (
    _aggregated,
    consistent_read,
    export_preview,
    read_connections,
    snapshot_judgment_ids,
)
from exports.services import (
    NO_TRAINING_ROWS,
    OUT_DIR_NOT_EMPTY,
    snapshot_build,
    snapshot_clean_stale,
    snapshot_create,
    snapshot_export,
)
from exports.signals import export_stage
from tests.exports.conftest import bad, good
from tests.exports.factories import (
    annotate,
    import_pairs,
    import_prompt_responses,
    make_annotators,
    make_project,
)
from tests.exports.reference import reference_export

User = get_user_model()


def export(project, out: Path, **settings) -> DatasetSnapshot:
    return snapshot_export(
        project=project, user=None, config=ExportConfig(**settings), out_dir=out
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_rows(out: Path) -> list[dict]:
    rows = []
    for split in ("train", "test"):
        if (out / "jsonl" / f"{split}.jsonl").exists():
            rows += read_jsonl(out / "jsonl" / f"{split}.jsonl")
    return rows


def folder_bytes(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_export_writes_datasetdict_parquet_jsonl_card_and_hygiene(
    labelled_project, tmp_path
):
    from datasets import load_from_disk

    out = tmp_path / "snap"
    snapshot = export(labelled_project, out, heldout_fraction=0.3)
    assert snapshot.status == SnapshotStatus.SUCCEEDED
    assert sum(snapshot.counts.values()) == 11
    assert snapshot.dropped == {"both_bad": 1}
    assert snapshot.judgment_count == 33
    ids = snapshot_judgment_ids(snapshot)
    assert len(ids) == 33 and ids_sha256(ids) == snapshot.judgment_ids_sha256
    on_disk = pq.read_table(out / "judgment_ids.parquet")["judgment_id"].to_pylist()
    assert on_disk == ids.tolist()
    dataset = load_from_disk(str(out))
    assert dict(dataset.num_rows) == snapshot.counts
    for split, n in snapshot.counts.items():
        table = pq.read_table(out / "parquet" / f"{split}.parquet")
        assert table.num_rows == n
        assert table.to_pylist() == read_jsonl(out / "jsonl" / f"{split}.jsonl")
        assert dataset[split].to_list() == table.to_pylist()
    rows = all_rows(out)
    assert all(r["chosen"].startswith("A careful") for r in rows)
    assert all(r["rejected"].startswith("Wrong") for r in rows)
    by_prompt = {r["prompt"]: r for r in rows}
    row0 = by_prompt["Question #0: explain topic 0."]
    assert (row0["votes_chosen"], row0["votes_rejected"], row0["n_votes"]) == (2, 1, 3)
    assert row0["agreement"] == pytest.approx(2 / 3)
    assert (out / "README.md").read_text().startswith("---\nconfigs:")
    hygiene = json.loads((out / "hygiene.json").read_text())
    assert hygiene == snapshot.hygiene
    assert hygiene["length_bias"]["chars"]["share_chosen_longer"] == 1.0
    assert set(hygiene["annotators"]) == {"a", "b", "c"}
    sums = (out / "SHA256SUMS").read_bytes()
    assert hashlib.sha256(sums).hexdigest() == snapshot.content_sha256
    for line in sums.decode().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name


def test_same_judgments_and_settings_give_byte_identical_files(
    labelled_project, tmp_path
):
    first = export(labelled_project, tmp_path / "one", heldout_fraction=0.5, seed=3)
    second = export(labelled_project, tmp_path / "two", heldout_fraction=0.5, seed=3)
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert first.content_sha256 == second.content_sha256


def test_no_prompt_in_two_splits_and_split_follows_the_seed(labelled_project, tmp_path):
    splits_by_seed = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        export(labelled_project, out, heldout_fraction=0.5, seed=seed)
        train = {r["prompt_id"] for r in read_jsonl(out / "jsonl/train.jsonl")}
        test = {r["prompt_id"] for r in read_jsonl(out / "jsonl/test.jsonl")}
        assert train and test
        assert not train & test
        splits_by_seed.append(test)
    assert splits_by_seed[0] != splits_by_seed[1]


def test_unanimous_policy_drops_disagreement_with_reasons(labelled_project, tmp_path):
    snapshot = export(labelled_project, tmp_path / "u", policy="unanimous")
    assert sum(snapshot.counts.values()) == 4
    assert snapshot.dropped == {"both_bad": 1, "not_unanimous": 7}
    assert all(r["agreement"] == 1.0 for r in all_rows(tmp_path / "u"))


def test_min_agreement_keeps_comparisons_at_or_above_ratio(labelled_project, tmp_path):
    snapshot = export(
        labelled_project, tmp_path / "m", policy="min_agreement", min_agreement=0.6
    )
    assert sum(snapshot.counts.values()) == 11
    snapshot = export(
        labelled_project, tmp_path / "n", policy="min_agreement", min_agreement=0.7
    )
    assert snapshot.dropped == {"below_min_agreement": 7, "both_bad": 1}


def test_a_tie_is_dropped_with_its_own_reason(db, tmp_path):
    project = make_project("ties", target=3)
    import_prompt_responses(
        project,
        tmp_path / "t.jsonl",
        [
            {
                "prompt": f"Q{i}",
                "responses": [
                    {"model": "a", "text": f"x{i}"},
                    {"model": "b", "text": f"y{i}"},
                ],
            }
            for i in range(2)
        ],
    )
    # Q0: two "tie" votes against one: the plurality is a tie. Q1: a plain win.
    annotate(
        project,
        make_annotators(project, ["a", "b", "c"]),
        lambda u, p, f, s: "tie" if p == "Q0" and u != "c" else f,
    )
    snapshot = export(project, tmp_path / "out", heldout_fraction=0)
    assert snapshot.dropped == {"tie": 1}
    assert [r["prompt"] for r in all_rows(tmp_path / "out")] == ["Q1"]
    assert snapshot.judgment_count == 3


def test_preview_counts_equal_the_export(labelled_project, tmp_path):
    config = ExportConfig(
        format="unpaired", heldout_fraction=0.4, both_bad_as_negatives=True
    )
    preview = export_preview(labelled_project, config)
    snapshot = snapshot_export(
        project=labelled_project, user=None, config=config, out_dir=tmp_path / "p"
    )
    assert preview["counts"] == snapshot.counts
    assert preview["dropped"] == snapshot.dropped
    assert preview["judgments"] == snapshot.judgment_count == 36


def test_unpaired_format_with_both_bad_as_negatives(labelled_project, tmp_path):
    export(
        labelled_project,
        tmp_path / "k",
        format="unpaired",
        both_bad_as_negatives=True,
        heldout_fraction=0,
    )
    rows = all_rows(tmp_path / "k")
    assert len(rows) == 24
    both_bad = [r for r in rows if r["prompt"].startswith("Question #11")]
    assert [r["label"] for r in both_bad] == [False, False]
    assert {r["completion"] for r in both_bad} == {good(11), bad(11)}
    assert sum(r["label"] for r in rows) == 11
    # Votes for this row's response, for the other one, tie, both bad: all 3 votes
    # on #11 were both bad, none for either response.
    assert [(r["votes_chosen"], r["votes_rejected"]) for r in both_bad] == [(0, 0)] * 2
    assert {r["votes_both_bad"] for r in both_bad} == {3}
    for r in rows:
        kinds = ("votes_chosen", "votes_rejected", "votes_tie", "votes_both_bad")
        assert sum(r[k] for k in kinds) == r["n_votes"]


def test_unpaired_exact_duplicates_compare_texts_and_label(db, tmp_path):
    project = make_project("kto", target=1)
    responses = ["A best", "B middle", "C worst"]
    import_prompt_responses(
        project,
        tmp_path / "p.jsonl",
        [
            {
                "prompt": "Rank us.",
                "responses": [{"model": t[0], "text": t} for t in responses],
            }
        ],
    )
    rank = {text: i for i, text in enumerate(responses)}
    annotate(
        project,
        make_annotators(project, ["a"]),
        lambda user, prompt, first, second: min(first, second, key=rank.get),
    )
    export(project, tmp_path / "k", format="unpaired", heldout_fraction=0)
    rows = all_rows(tmp_path / "k")
    assert sorted((r["completion"], r["label"]) for r in rows) == [
        ("A best", True), ("A best", True), ("B middle", False),
        ("B middle", True), ("C worst", False), ("C worst", False),
    ]  # fmt: skip
    report = json.loads((tmp_path / "k" / "hygiene.json").read_text())
    # A (true) and C (false) repeat; B is desirable once and undesirable once.
    assert report["exact_duplicates"]["count"] == 2


def test_conversational_and_sft_formats_keep_messages(labelled_project, tmp_path):
    export(
        labelled_project, tmp_path / "c", format="conversational", heldout_fraction=0
    )
    row = all_rows(tmp_path / "c")[0]
    assert row["prompt"] == [
        {"role": "user", "content": "Question #0: explain topic 0."}
    ]
    assert row["chosen"] == [{"role": "assistant", "content": good(0)}]
    export(labelled_project, tmp_path / "s", format="sft", heldout_fraction=0)
    rows = all_rows(tmp_path / "s")
    assert len(rows) == 11
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": good(0)}
    export(
        labelled_project,
        tmp_path / "pc",
        format="sft",
        sft_style="prompt_completion",
        heldout_fraction=0,
    )
    assert all_rows(tmp_path / "pc")[0]["completion"] == good(0)


def test_multi_turn_prompt_is_kept_whole(db, tmp_path):
    project = make_project("multi", target=1)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
    ]
    import_prompt_responses(
        project,
        tmp_path / "m.jsonl",
        [
            {
                "messages": messages,
                "responses": [
                    {"model": "x", "text": "Paris."},
                    {"model": "y", "text": "Lyon."},
                ],
            }
        ],
    )
    annotate(project, make_annotators(project, ["a"]), lambda u, p, f, s: "Paris.")
    export(project, tmp_path / "conv", format="conversational", heldout_fraction=0)
    assert all_rows(tmp_path / "conv")[0]["prompt"] == messages
    export(project, tmp_path / "std", heldout_fraction=0)
    prompt = all_rows(tmp_path / "std")[0]["prompt"]
    assert prompt == (
        "System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\n"
        "Human: Capital of France?\n\nAssistant:"
    )


def test_prior_labels_are_in_or_out_by_flag(db, tmp_path):

    project = make_project("priors", target=1)
    import_pairs(
        project,
        tmp_path / "pairs.jsonl",
        [
            {"prompt": f"P{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for i in range(3)
        ],
    )
    with pytest.raises(ValueError, match=r"Nothing to train on.*no_votes: 3"):
        export(project, tmp_path / "without", heldout_fraction=0)
    failed = DatasetSnapshot.objects.get()
    assert failed.status == SnapshotStatus.FAILED
    assert "(include_prior)" in failed.error
    assert not (tmp_path / "without").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]
    with_prior = export(
        project, tmp_path / "with", heldout_fraction=0, include_prior=True
    )
    assert with_prior.counts == {"train": 3}
    rows = all_rows(tmp_path / "with")
    assert {r["chosen"] for r in rows} == {"good 0", "good 1", "good 2"}
    prior_ids = set(
        Judgment.objects.filter(origin="prior").values_list("id", flat=True)
    )
    assert set(snapshot_judgment_ids(with_prior).tolist()) == prior_ids
    assert "(imported prior labels)" in with_prior.hygiene["annotators"]


def test_training_prompts_equal_to_an_evaluation_prompt_never_enter_a_split(
    labelled_project, tmp_path
):
    # An evaluation prompt equal to a training prompt up to case and spaces.
    rows = [
        {
            "prompt": "question #3:   EXPLAIN topic 3.",
            "responses": [
                {"model": "m-good", "text": good(3)},
                {"model": "m-bad", "text": "Nope."},
            ],
        }
    ]
    import_prompt_responses(
        labelled_project, tmp_path / "eval.jsonl", rows, split="heldout"
    )
    annotators = list(
        User.objects.filter(username__in=["a", "b", "c"]).order_by("username")
    )
    annotate(labelled_project, annotators, lambda u, p, f, s: f)
    config = ExportConfig(heldout_fraction=0.5)
    preview = export_preview(labelled_project, config)
    snapshot = export(labelled_project, tmp_path / "e", heldout_fraction=0.5)
    question3 = labelled_project.prompts.get(
        messages__0__content="Question #3: explain topic 3."
    )
    evaluation = labelled_project.prompts.get(split="heldout")
    exported = {r["prompt_id"] for r in all_rows(tmp_path / "e")}
    assert question3.pk not in exported and evaluation.pk not in exported
    assert snapshot.dropped == {
        "both_bad": 1,
        "evaluation_prompt": 1,
        "evaluation_prompt_text": 1,
    }
    assert preview["dropped"] == snapshot.dropped
    assert preview["counts"] == snapshot.counts
    assert snapshot.judgment_count == 30  # 10 comparisons x 3 votes
    leak = snapshot.hygiene["leakage"]
    assert leak["train_vs_evaluation"] == {"count": 0, "examples": []}
    assert leak["train_vs_test"] == {"count": 0, "examples": []}


def test_contradictory_preferences_across_comparisons_are_reported(db, tmp_path):
    project = make_project("contra", target=1)
    rows = [
        {
            "prompt": prompt,
            "responses": [
                {"model": "x", "text": "Knock knock."},
                {"model": "y", "text": "Why did the chicken?"},
            ],
        }
        for prompt in ("Tell me a joke.", "tell me a  joke.")
    ]
    import_prompt_responses(project, tmp_path / "c.jsonl", rows)
    annotate(
        project,
        make_annotators(project, ["a"]),
        lambda u, p, f, s: (
            "Knock knock." if p.startswith("T") else "Why did the chicken?"
        ),
    )
    snapshot = export(project, tmp_path / "out", heldout_fraction=0)
    assert snapshot.hygiene["contradictions"]["count"] == 1


def test_sft_counts_each_repeated_chosen_response_as_dropped(db, tmp_path):
    project = make_project("sft", target=1)
    import_prompt_responses(
        project,
        tmp_path / "s.jsonl",
        [
            {
                "prompt": "Pick the best.",
                "responses": [
                    {"model": "x", "text": "Best."},
                    {"model": "y", "text": "Good."},
                    {"model": "z", "text": "Poor."},
                ],
            }
        ],
    )
    # "Best." wins both its comparisons; "Good." wins against "Poor.".
    order = {"Best.": 0, "Good.": 1, "Poor.": 2}
    annotate(
        project,
        make_annotators(project, ["a"]),
        lambda u, p, f, s: min(f, s, key=order.get),
    )
    snapshot = export(project, tmp_path / "out", format="sft", heldout_fraction=0)
    rows = all_rows(tmp_path / "out")
    assert [r["messages"][-1]["content"] for r in rows] == ["Best.", "Good."]
    assert snapshot.dropped == {"duplicate_chosen_response": 1}
    row_comparisons = {r["comparison_id"] for r in rows}
    used = Judgment.objects.filter(pk__in=snapshot_judgment_ids(snapshot).tolist())
    assert set(used.values_list("comparison_id", flat=True)) == row_comparisons
    assert snapshot.judgment_count == 2


def test_token_lengths_come_from_a_real_tokenizer(labelled_project, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([good(i) + " " + bad(i) for i in range(12)] * 20))
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train(
        [str(corpus)],
        trainers.BpeTrainer(
            vocab_size=120, special_tokens=["[UNK]"], show_progress=False
        ),
    )
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    limit = count(good(0)) - 1
    snapshot = export(
        labelled_project,
        tmp_path / "tok",
        heldout_fraction=0,
        tokenizer_path=str(tmp_path),
        max_tokens=limit,
    )
    rows = all_rows(tmp_path / "tok")
    over = [
        (r["comparison_id"], name)
        for r in rows
        for name in ("prompt", "chosen", "rejected")
        if count(r[name]) > limit
    ]
    long = snapshot.hygiene["over_long_texts"]
    assert long["count"] == len(over) > 0
    assert [(e["row"], e["field"]) for e in long["examples"]] == over[:5]
    texts = {(r["comparison_id"], name): r[name] for r in rows for name in r}
    for example in long["examples"]:
        assert example["tokens"] == count(texts[example["row"], example["field"]])
    tokens = snapshot.hygiene["length_bias"]["tokens"]
    longer = sum(count(r["chosen"]) > count(r["rejected"]) for r in rows)
    assert tokens["chosen_longer"] == longer


REFERENCE_CONFIGS = [
    {},
    {"format": "conversational", "heldout_fraction": 0.5, "seed": 2},
    {"format": "unpaired", "both_bad_as_negatives": True, "include_prior": True},
    {"format": "sft"},
    {"format": "sft", "sft_style": "prompt_completion", "heldout_fraction": 0},
    {"policy": "gold_weighted", "min_votes": 2, "max_chars": 20},
    {"policy": "dawid_skene", "heldout_fraction": 0.3},
]


@pytest.mark.parametrize("settings", REFERENCE_CONFIGS, ids=str)
def test_export_equals_the_row_wise_reference(rich_project, tmp_path, settings):
    config = ExportConfig(**settings)
    want = reference_export(rich_project, config)
    out = tmp_path / "out"
    snapshot = snapshot_export(
        project=rich_project, user=None, config=config, out_dir=out
    )
    assert snapshot.counts == {s: len(rows) for s, rows in want.rows.items()}
    for split, rows in want.rows.items():
        if not rows:  # an empty split has no files
            assert not list(out.glob(f"**/{split}*"))
            continue
        assert (out / "jsonl" / f"{split}.jsonl").read_bytes() == want.jsonl[split]
        assert pq.read_table(out / "parquet" / f"{split}.parquet").to_pylist() == rows
    assert snapshot.dropped == want.dropped
    assert snapshot_judgment_ids(snapshot).tolist() == want.judgment_ids
    assert snapshot.hygiene == want.hygiene


def test_rich_fixture_exercises_every_drop_and_finding(rich_project):
    want = reference_export(rich_project, ExportConfig(format="sft"))
    assert set(want.dropped) == {
        "both_bad",
        "duplicate_chosen_response",
        "evaluation_prompt",
        "evaluation_prompt_text",
        "tie",
    }
    hygiene = reference_export(rich_project, ExportConfig()).hygiene
    assert hygiene["contradictions"]["count"] > 0
    assert hygiene["exact_duplicates"]["count"] > 0


def test_datasets_folder_loads_as_save_to_disk_would_write_it(rich_project, tmp_path):
    import datasets

    out = tmp_path / "out"
    snapshot = export(rich_project, out, format="conversational", heldout_fraction=0.5)
    ours = datasets.load_from_disk(str(out))
    golden = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_parquet(
                str(out / "parquet" / f"{split}.parquet"),
                cache_dir=str(tmp_path / "cache"),
            )
            for split in ("train", "test")
        }
    )
    assert set(snapshot.counts) == {"train", "test"}
    golden.save_to_disk(str(tmp_path / "golden"))
    golden = datasets.load_from_disk(str(tmp_path / "golden"))
    assert list(ours) == list(golden) == ["train", "test"]
    for split in golden:
        assert ours[split].features == golden[split].features
        assert str(ours[split].split) == split  # from_parquet calls every split "train"
        assert ours[split].data.table.equals(golden[split].data.table)
        assert ours[split].data.table.schema.equals(
            golden[split].data.table.schema, check_metadata=True
        )
        assert ours[split].to_list() == golden[split].to_list()
        state = json.loads((out / split / "state.json").read_text())
        golden_state = json.loads(
            (tmp_path / "golden" / split / "state.json").read_text()
        )
        assert set(state) == set(golden_state)


def test_files_option_writes_only_the_kinds_asked_for(labelled_project, tmp_path):
    out = tmp_path / "pq"
    snapshot = export(labelled_project, out, files=["parquet"])
    assert not (out / "jsonl").exists() and not (out / "dataset_dict.json").exists()
    assert (out / "parquet" / "train.parquet").is_file()
    assert snapshot.policy["files"] == ["parquet"]
    full = export(labelled_project, tmp_path / "all")
    assert pq.read_table(out / "parquet" / "train.parquet").equals(
        pq.read_table(tmp_path / "all" / "parquet" / "train.parquet")
    )
    assert full.counts == snapshot.counts
    with pytest.raises(ValueError, match="files must be"):
        ExportConfig(files=["jsonl"])


def test_failed_export_leaves_nothing_and_records_the_error(labelled_project, tmp_path):
    """The build fails midway (the tokenizer checked when the snapshot was asked for
    is no tokenizer by the time it is built): no files are left, and the snapshot
    row records the error."""
    from tokenizers import Tokenizer, models

    file = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(file))
    snapshot = snapshot_create(
        project=labelled_project,
        user=None,
        config=ExportConfig(tokenizer_path=str(file), max_tokens=8),
    )
    file.write_text("{not json")
    out = tmp_path / "parent" / "snap"
    with pytest.raises(ValueError, match="is not a tokenizers file"):
        snapshot_build(snapshot=snapshot, out_dir=out)
    assert not (tmp_path / "parent").exists()  # the folder made for it goes too
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.FAILED
    assert "is not a tokenizers file" in snapshot.error


def test_a_file_that_is_no_tokenizer_is_a_field_error_before_any_row(
    labelled_project, tmp_path
):
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    config = ExportConfig(tokenizer_path=str(broken), max_tokens=8)
    with pytest.raises(SettingsError) as excinfo:
        export_preview(labelled_project, config)
    assert "is not a tokenizers file" in excinfo.value.errors["tokenizer_path"]
    with pytest.raises(SettingsError, match="is not a tokenizers file"):
        snapshot_export(
            project=labelled_project, user=None, config=config, out_dir=tmp_path / "o"
        )
    assert not DatasetSnapshot.objects.exists()
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"policy": "majority", "min_agreement": 0.7}, "min_agreement"),
        ({"format": "preference", "sft_style": "prompt_completion"}, "sft_style"),
    ],
)
def test_a_setting_the_policy_or_format_ignores_is_refused(settings, field):
    """It would be recorded on the card and change the checksum of identical rows."""
    with pytest.raises(SettingsError) as excinfo:
        ExportConfig(**settings)
    assert list(excinfo.value.errors) == [field]
    assert "applies to the" in excinfo.value.errors[field]
    ExportConfig(policy="min_agreement", min_agreement=0.7)
    ExportConfig(format="sft", sft_style="prompt_completion")


def test_texts_past_arrows_2_gib_limit_fail_with_a_plain_reason(
    labelled_project, tmp_path, monkeypatch
):
    """Arrow's 32-bit string offsets overflow only with enormous batches of texts
    (not built in a test): the error a real overflow raises, injected where the
    rows are built, becomes a plain reason on the snapshot, and nothing is left."""
    import pyarrow as pa

    from exports import columns

    def overflow(*args, **kwargs):
        raise pa.ArrowInvalid("offset overflow while concatenating arrays")

    monkeypatch.setattr(columns, "build_rows", overflow)
    with pytest.raises(ValueError, match="pass Arrow's 2 GiB limit"):
        export(labelled_project, tmp_path / "snap")
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.status == SnapshotStatus.FAILED
    assert "texts of about 100 KB or more" in snapshot.error
    assert not (tmp_path / "snap").exists()


def test_a_missing_tokenizer_is_a_field_error_and_makes_no_snapshot(
    labelled_project, tmp_path
):
    out = tmp_path / "new" / "parents" / "snap"
    with pytest.raises(SettingsError) as excinfo:
        export(labelled_project, out, tokenizer_path=str(tmp_path / "x"))
    assert excinfo.value.errors == {
        "tokenizer_path": TOKENIZER_MISSING.format(path=tmp_path / "x")
    }
    assert not DatasetSnapshot.objects.exists()
    assert not (tmp_path / "new").exists()  # a refused export creates no folders


def test_a_tokenizer_gone_before_the_build_fails_the_snapshot_plainly(
    labelled_project, tmp_path
):
    from tokenizers import Tokenizer, models

    file = tmp_path / "tok" / "tokenizer.json"
    file.parent.mkdir()
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(file))
    snapshot = snapshot_create(
        project=labelled_project,
        user=None,
        config=ExportConfig(tokenizer_path=str(file.parent), max_tokens=8),
    )
    file.unlink()
    with pytest.raises(ValueError, match="No tokenizer.json"):
        snapshot_build(snapshot=snapshot, out_dir=tmp_path / "out")
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.FAILED
    assert snapshot.error == "ValueError: " + TOKENIZER_MISSING.format(path=file)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"both_bad_as_negatives": True}, "both_bad_as_negatives"),
        ({"both_bad_as_negatives": True, "format": "sft"}, "both_bad_as_negatives"),
        ({"tokenizer_path": "t", "max_tokens": 0}, "max_tokens"),
    ],
)
def test_settings_that_would_do_nothing_or_nonsense_are_refused(settings, field):
    with pytest.raises(SettingsError) as excinfo:
        ExportConfig(**settings)
    assert list(excinfo.value.errors) == [field]


def test_export_refuses_a_non_empty_destination(labelled_project, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        export(labelled_project, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert OUT_DIR_NOT_EMPTY.startswith("Output folder")


def dead_process_tag() -> str:
    from exports.services import process_tag

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host, _, start = process_tag().rsplit(":", 2)
    return f"{host}:{child.pid}:{start}"


def interrupted(project, out: Path, worker: str, *, started=None) -> DatasetSnapshot:
    """A snapshot left `running` by a killed build, with its temporary folder."""
    snapshot = DatasetSnapshot.objects.create(
        project=project,
        status=SnapshotStatus.RUNNING,
        worker=worker,
        started_at=started or timezone.now(),
        output_dir=str(out),
    )
    tmp = out.parent / f".{out.name}.tmp-{snapshot.pk}-abc"
    (tmp / "snapshot" / "parquet").mkdir(parents=True)
    (tmp / "snapshot" / "parquet" / "train.parquet").write_bytes(b"partial")
    return snapshot


def test_next_export_marks_a_killed_build_failed_and_removes_its_folder(
    labelled_project, tmp_path, settings
):
    from exports.services import process_tag

    settings.DATA_DIR = tmp_path
    dead = interrupted(labelled_project, tmp_path / "dead", dead_process_tag())
    alive = interrupted(labelled_project, tmp_path / "alive", process_tag())
    export(labelled_project, tmp_path / "next")
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == SnapshotStatus.FAILED and "Interrupted" in dead.error
    assert not list(tmp_path.glob(f".dead.tmp-{dead.pk}-*"))
    assert alive.status == SnapshotStatus.RUNNING
    assert list(tmp_path.glob(f".alive.tmp-{alive.pk}-*"))


def test_a_build_older_than_the_limit_is_stale_whatever_its_host(
    labelled_project, tmp_path, settings
):
    settings.EXPORT_STALE_AFTER_SECONDS = 60
    old = interrupted(
        labelled_project,
        tmp_path / "old",
        "another-host:1:1",
        started=timezone.now() - timedelta(minutes=5),
    )
    recent = interrupted(labelled_project, tmp_path / "recent", "another-host:1:1")
    assert [s.pk for s in snapshot_clean_stale(project=labelled_project)] == [old.pk]
    recent.refresh_from_db()
    assert recent.status == SnapshotStatus.RUNNING


def test_snapshot_create_queues_the_worker_task(
    labelled_project, researcher, tmp_path, settings, django_capture_on_commit_callbacks
):
    from django_tasks_db.models import DBTaskResult

    from exports.tasks import build_snapshot

    settings.DATA_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = snapshot_create(
            project=labelled_project, user=researcher, config=ExportConfig()
        )
    assert snapshot.status == SnapshotStatus.PENDING
    queued = DBTaskResult.objects.get()
    assert queued.args_kwargs["args"] == [snapshot.pk]
    assert build_snapshot.call(snapshot.pk) != "skipped"
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.SUCCEEDED
    assert Path(snapshot.output_dir) == tmp_path / "snapshots" / "prefs" / str(
        snapshot.pk
    )
    assert build_snapshot.call(snapshot.pk) == "skipped"


def test_a_worker_build_into_a_taken_folder_fails_and_deleting_it_keeps_the_folder(
    labelled_project, tmp_path, settings, django_capture_on_commit_callbacks
):
    """Snapshot ids restart with a new database while DATA_DIR keeps its folders:
    the folder is not the snapshot's, so the failed snapshot forgets it."""
    from exports.services import SNAPSHOT_DIR_TAKEN, snapshot_delete

    settings.DATA_DIR = tmp_path
    snapshot = snapshot_create(
        project=labelled_project, user=None, config=ExportConfig()
    )
    taken = tmp_path / "snapshots" / "prefs" / str(snapshot.pk)
    taken.mkdir(parents=True)
    (taken / "precious.txt").write_text("mine")
    with pytest.raises(ValueError) as raised:
        snapshot_build(snapshot=snapshot)
    assert str(raised.value) == SNAPSHOT_DIR_TAKEN.format(path=taken)
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.FAILED and snapshot.output_dir == ""
    with django_capture_on_commit_callbacks(execute=True):
        snapshot_delete(snapshot=snapshot)
    assert (taken / "precious.txt").read_text() == "mine"
    assert [p.name for p in taken.parent.iterdir()] == [taken.name]


def test_deleting_a_project_removes_its_worker_snapshot_folders_not_chosen_ones(
    labelled_project, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.DATA_DIR = tmp_path / "data"
    queued = snapshot_create(project=labelled_project, user=None, config=ExportConfig())
    snapshot_build(snapshot=queued)
    worker_folder = Path(DatasetSnapshot.objects.get(pk=queued.pk).output_dir)
    chosen = tmp_path / "mine"
    export(labelled_project, chosen)
    assert worker_folder.is_dir() and chosen.is_dir()
    with django_capture_on_commit_callbacks(execute=True):
        labelled_project.delete()
    assert not worker_folder.exists()
    assert not worker_folder.parent.exists()  # snapshots/<project>/, now empty
    assert (chosen / "SHA256SUMS").is_file()


def test_a_name_too_long_is_a_field_error_not_cut(labelled_project, tmp_path):
    from exports.services import NAME_TOO_LONG

    with pytest.raises(SettingsError) as excinfo:
        snapshot_export(
            project=labelled_project,
            user=None,
            config=ExportConfig(),
            out_dir=tmp_path / "o",
            name="n" * 201,
        )
    assert excinfo.value.errors == {"name": NAME_TOO_LONG.format(length=201)}
    assert not DatasetSnapshot.objects.exists()


# --- consistency while annotators submit --------------------------------------------


def file_database() -> bool:
    """PostgreSQL, or SQLite on a file (a second connection sees the same data)."""
    if connection.vendor == "postgresql":
        return True
    return connection.vendor == "sqlite" and not connection.is_in_memory_db()


needs_second_connection = pytest.mark.skipif(
    not file_database(),
    reason="needs PostgreSQL or a file SQLite database (PREFLINE_TEST_DB_NAME)",
)


def two_annotator_project(tmp_path, n: int = 40):
    project = make_project("busy", target=2)
    import_prompt_responses(
        project,
        tmp_path / "p.jsonl",
        [
            {
                "prompt": f"Q{i}",
                "responses": [
                    {"model": "a", "text": f"x{i}"},
                    {"model": "b", "text": f"y{i}"},
                ],
            }
            for i in range(n)
        ],
    )
    first, second = make_annotators(project, ["a", "b"])
    annotate(project, [first], lambda u, p, f, s: f)
    return project, second


def commit_from_another_connection(project, user, stage: str) -> dict:
    """Connect a receiver that, at `stage`, lets `user` judge everything in a thread
    (its own database connection) and waits until those judgments are committed."""
    done = {"judgments": 0}

    def submit():
        try:
            done["judgments"] = annotate(project, [user], lambda u, p, f, s: f)
        finally:
            connections.close_all()

    def receiver(sender, stage: str, project, **kwargs):
        if stage == wanted and not done["judgments"]:
            worker = threading.Thread(target=submit)
            worker.start()
            worker.join()

    wanted = stage
    export_stage.connect(receiver, weak=False, dispatch_uid="test-commit")
    done["disconnect"] = lambda: export_stage.disconnect(dispatch_uid="test-commit")
    return done


@needs_second_connection
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "stage",
    [
        # PostgreSQL: after the snapshot is exported, before the second connection
        # imports it.
        pytest.param(
            "snapshot",
            marks=pytest.mark.skipif(
                connection.vendor != "postgresql", reason="PostgreSQL only"
            ),
        ),
        "comparisons",
        "plan",
    ],
)
def test_judgments_committed_during_an_export_are_not_in_it(tmp_path, stage):
    project, late = two_annotator_project(tmp_path)
    before = export(project, tmp_path / "before", heldout_fraction=0)
    hook = commit_from_another_connection(project, late, stage)
    try:
        during = export(project, tmp_path / "during", heldout_fraction=0)
    finally:
        hook["disconnect"]()
    assert hook["judgments"] == 40  # committed while the export was reading
    assert Judgment.objects.count() == 80
    assert folder_bytes(tmp_path / "during") == folder_bytes(tmp_path / "before")
    assert during.judgment_count == before.judgment_count == 40
    after = export(project, tmp_path / "after", heldout_fraction=0)
    assert after.judgment_count == 80
    assert after.content_sha256 != before.content_sha256


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_the_second_read_connection_sees_the_snapshot_of_the_first(tmp_path):
    project, late = two_annotator_project(tmp_path)
    # Commit between the snapshot's export and its import by the second connection.
    hook = commit_from_another_connection(project, late, "snapshot")
    try:
        with consistent_read():
            raws = read_connections()
            counts = [
                raw.execute("SELECT count(*) FROM annotation_judgment").fetchone()[0]
                for raw in raws
            ]
    finally:
        hook["disconnect"]()
    assert hook["judgments"] == 40
    assert len(raws) == 2
    assert counts == [40, 40]
    assert Judgment.objects.count() == 80


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")
def test_a_text_read_over_the_value_limit_is_read_again_in_halves(labelled_project):
    ids = np.array(
        sorted(
            Prompt.objects.filter(project=labelled_project).values_list("id", flat=True)
        )
    )
    # More than two rows ask PostgreSQL for a value over its limit.
    columns = (
        "array_agg(id), repeat('x', CASE WHEN count(*) > 2 THEN 2147483647 ELSE 1 END)"
    )
    with consistent_read():
        raw = read_connections()[0]
        chunks = [
            chunk
            for chunk, _, _, _ in _aggregated(
                columns, "messages", "annotation_prompt", ids, raw
            )
        ]
        assert raw.execute("SELECT 1").fetchone() == (1,)  # still usable
    assert max(len(chunk) for chunk in chunks) <= 2
    assert np.concatenate(chunks).tolist() == ids.tolist()


@pytest.mark.parametrize("files", [("parquet", "jsonl", "datasets"), ("parquet",)])
def test_an_empty_test_split_has_no_files_and_the_folder_loads_as_the_card_says(
    labelled_project, tmp_path, files
):
    """`load_dataset` (and `trl dpo --dataset_name`) cannot read a Parquet file
    without rows; an empty split is left out, as a held-out fraction of 0 leaves
    `test` out, and the card's loading lines are the ones that work."""
    from datasets import load_dataset, load_from_disk

    out = tmp_path / "snap"
    seed = next(
        seed
        for seed in range(200)
        if export_preview(
            labelled_project, ExportConfig(heldout_fraction=0.01, seed=seed)
        )["counts"]["test"]
        == 0
    )
    snapshot = export(
        labelled_project, out, heldout_fraction=0.01, seed=seed, files=files
    )
    assert snapshot.counts == {"train": 11, "test": 0}
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not {name for name in written if "test" in name}
    assert "test" not in (out / "SHA256SUMS").read_text()
    card = (out / "README.md").read_text()
    assert "path: parquet/test.parquet" not in card
    assert "| test | 0 (no rows, so no files) |" in card
    loaded = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 11
    if "datasets" in files:
        assert 'load_from_disk("path/to/this/folder")' in card
        assert json.loads((out / "dataset_dict.json").read_text()) == {
            "splits": ["train"]
        }
        assert list(load_from_disk(str(out))) == ["train"]
    else:
        assert "load_from_disk" not in card
        assert 'dataset = load_dataset("path/to/this/folder")' in card


def test_no_training_rows_is_an_error_that_writes_nothing(labelled_project, tmp_path):
    out = tmp_path / "new" / "parents" / "snap"
    with pytest.raises(ValueError) as raised:
        export(labelled_project, out, min_votes=1000)
    assert str(raised.value).startswith(NO_TRAINING_ROWS.split("(")[0])
    assert "too_few_votes: " in str(raised.value)
    assert "heldout_fraction" not in str(raised.value)  # no row went to test either
    assert not (tmp_path / "new").exists()  # nor the parents made for it
    assert [p.name for p in tmp_path.iterdir()] == ["prompts.jsonl"]  # the fixture's
