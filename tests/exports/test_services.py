"""End-to-end snapshots through the real import, queue and submission services."""

import hashlib
import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections

from annotation.models import Judgment
from exports.formats import ExportConfig
from exports.models import DatasetSnapshot, SnapshotStatus
from exports.selectors import consistent_read, export_preview
from exports.services import (
    OUT_DIR_NOT_EMPTY,
    TOKENIZER_MISSING,
    snapshot_create,
    snapshot_export,
)
from tests.exports.conftest import bad, good
from tests.exports.factories import (
    annotate,
    import_pairs,
    import_prompt_responses,
    make_annotators,
    make_project,
)

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


def test_export_writes_datasetdict_parquet_jsonl_card_and_hygiene(
    labelled_project, tmp_path
):
    from datasets import load_from_disk

    out = tmp_path / "snap"
    snapshot = export(labelled_project, out, heldout_fraction=0.3)
    assert snapshot.status == SnapshotStatus.SUCCEEDED
    assert sum(snapshot.counts.values()) == 11
    assert snapshot.dropped == {"both_bad": 1}
    assert len(snapshot.judgment_ids) == 33
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


def test_same_judgments_and_settings_give_byte_identical_files(
    labelled_project, tmp_path
):
    first = export(labelled_project, tmp_path / "one", heldout_fraction=0.5, seed=3)
    second = export(labelled_project, tmp_path / "two", heldout_fraction=0.5, seed=3)
    files_one = sorted(
        p.relative_to(tmp_path / "one")
        for p in (tmp_path / "one").rglob("*")
        if p.is_file()
    )
    files_two = sorted(
        p.relative_to(tmp_path / "two")
        for p in (tmp_path / "two").rglob("*")
        if p.is_file()
    )
    assert files_one == files_two
    for rel in files_one:
        assert (tmp_path / "one" / rel).read_bytes() == (
            tmp_path / "two" / rel
        ).read_bytes(), rel
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
    assert preview["judgments"] == len(snapshot.judgment_ids) == 36


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
    without = export(project, tmp_path / "without", heldout_fraction=0)
    assert without.counts == {"train": 0}
    assert without.dropped == {"no_votes": 3}
    with_prior = export(
        project, tmp_path / "with", heldout_fraction=0, include_prior=True
    )
    assert with_prior.counts == {"train": 3}
    rows = all_rows(tmp_path / "with")
    assert {r["chosen"] for r in rows} == {"good 0", "good 1", "good 2"}
    prior_ids = set(
        Judgment.objects.filter(origin="prior").values_list("id", flat=True)
    )
    assert set(with_prior.judgment_ids) == prior_ids
    assert "(imported prior labels)" in with_prior.hygiene["annotators"]


def test_evaluation_prompts_never_enter_training_and_leak_is_reported(
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
    snapshot = export(labelled_project, tmp_path / "e", heldout_fraction=0)
    evaluation = labelled_project.prompts.get(split="heldout")
    assert evaluation.pk not in {r["prompt_id"] for r in all_rows(tmp_path / "e")}
    assert snapshot.dropped == {"both_bad": 1, "evaluation_prompt": 1}
    leak = snapshot.hygiene["leakage"]["train_vs_evaluation"]
    question3 = labelled_project.prompts.get(
        messages__0__content="Question #3: explain topic 3."
    )
    assert leak == {"count": 1, "examples": [question3.pk]}


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


def test_failed_export_leaves_nothing_and_records_the_error(labelled_project, tmp_path):
    out = tmp_path / "parent" / "snap"
    with pytest.raises(ValueError, match="No tokenizer.json"):
        export(labelled_project, out, tokenizer_path=str(tmp_path / "missing"))
    assert not out.exists()
    assert list((tmp_path / "parent").iterdir()) == []
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.status == SnapshotStatus.FAILED
    assert TOKENIZER_MISSING.split("{")[0] in snapshot.error


def test_export_refuses_a_non_empty_destination(labelled_project, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        export(labelled_project, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert OUT_DIR_NOT_EMPTY.startswith("Output folder")


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


# --- consistency while annotators submit (PostgreSQL) -------------------------------

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (threads, MVCC)"
)


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_consistent_read_does_not_see_judgments_committed_meanwhile(tmp_path):
    project = make_project("mvcc", target=2)
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
            for i in range(4)
        ],
    )
    [a, b] = make_annotators(project, ["a", "b"])
    annotate(project, [a], lambda u, p, f, s: f)

    def submit_other():
        annotate(project, [b], lambda u, p, f, s: s)
        connections.close_all()

    with consistent_read():
        before = Judgment.objects.count()
        worker = threading.Thread(target=submit_other)
        worker.start()
        worker.join()
        during = Judgment.objects.count()
    after = Judgment.objects.count()
    assert before == during == 4
    assert after == 8


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_export_during_concurrent_submissions_is_consistent(tmp_path):
    project = make_project("busy", target=3)
    n = 150
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
    annotators = make_annotators(project, ["a", "b", "c"])
    annotate(project, annotators[:1], lambda u, p, f, s: f)
    errors = []

    def submit(user):
        try:
            annotate(project, [user], lambda u, p, f, s: f if u == "b" else s)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(u,)) for u in annotators[1:]]
    for t in threads:
        t.start()
    snapshot = export(project, tmp_path / "out", heldout_fraction=0, policy="unanimous")
    for t in threads:
        t.join()
    assert not errors
    used = set(snapshot.judgment_ids)
    votes = {}
    for cid in Judgment.objects.filter(pk__in=used).values_list(
        "comparison_id", flat=True
    ):
        votes[cid] = votes.get(cid, 0) + 1
    rows = all_rows(tmp_path / "out")
    # Every row's vote count is exactly the judgments recorded for its comparison,
    # and every recorded judgment belongs to an exported row.
    assert {r["comparison_id"]: r["n_votes"] for r in rows} == votes
    assert sum(snapshot.dropped.values()) + len(rows) == n
    assert Judgment.objects.count() == 3 * n
