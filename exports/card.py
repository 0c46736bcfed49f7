"""The dataset card (README.md, Hugging Face style) written beside a snapshot.

It holds no time stamp and no snapshot id, so the same inputs give the same bytes.
"""

from __future__ import annotations

import json

from exports.formats import ExportConfig

TRAINERS = {
    "preference": ("DPOTrainer", "RewardTrainer"),
    "conversational": ("DPOTrainer", "RewardTrainer"),
    "unpaired": ("KTOTrainer",),
    "sft": ("SFTTrainer",),
}
TAGS = {
    "preference": ["dpo", "reward-modeling", "preference"],
    "conversational": ["dpo", "reward-modeling", "preference", "conversational"],
    "unpaired": ["kto", "unpaired-preference"],
    "sft": ["sft"],
}
COLUMNS = {
    "prompt": "The prompt (a string, or a list of messages in conversational data).",
    "chosen": "The preferred response.",
    "rejected": "The response judged worse.",
    "completion": "A response (KTO: judged desirable if `label`).",
    "label": "KTO: true for a desirable completion, false for an undesirable one.",
    "messages": "The prompt's messages followed by the chosen assistant answer.",
    "prompt_id": "Prefline id of the prompt.",
    "comparison_id": "Prefline id of the comparison behind the row.",
    "chosen_response_id": "Prefline id of the chosen response.",
    "rejected_response_id": "Prefline id of the rejected response.",
    "response_id": "Prefline id of the completion's response.",
    "votes_chosen": "Votes for the chosen (or this) response.",
    "votes_rejected": "Votes for the other response.",
    "votes_tie": "Votes for a tie.",
    "votes_both_bad": "Votes for both bad.",
    "n_votes": "All votes on the comparison.",
    "agreement": "Share of the votes that match the label (filter or weight by it).",
    "confidence": "Policy confidence: vote share, weighted share or posterior.",
}


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return name
    return "100K<n<1M" if rows < 1_000_000 else "n>1M"


def render_card(
    *,
    project_name: str,
    project_slug: str,
    config: ExportConfig,
    counts: dict,
    dropped: dict,
    judgments: int,
    hygiene: dict,
    columns: list[str],
) -> str:
    """Return README.md: YAML front matter, summary, columns, loading, hygiene."""
    splits = "\n".join(
        f"    - split: {split}\n      path: parquet/{split}.parquet"
        for split, rows in counts.items()
        if rows  # a split without rows has no files (`writers.SplitWriter.close`)
    )
    tags = "\n".join(f"  - {t}" for t in ["prefline", "trl", *TAGS[config.format]])
    front = (
        "---\n"
        "configs:\n"
        "  - config_name: default\n"
        f"    data_files:\n{splits}\n"
        f"tags:\n{tags}\n"
        "task_categories:\n  - text-generation\n"
        f"size_categories:\n  - {_size_category(sum(counts.values()))}\n"
        "---\n"
    )
    trainers = ", ".join(f"`{t}`" for t in TRAINERS[config.format])
    count_rows = "\n".join(
        f"| {s} | {n} |" if n else f"| {s} | 0 (no rows, so no files) |"
        for s, n in counts.items()
    )
    dropped_rows = (
        "\n".join(f"| {r} | {n} |" for r, n in dropped.items()) or "| - | 0 |"
    )
    column_rows = "\n".join(f"| `{c}` | {COLUMNS.get(c, '')} |" for c in columns)
    bias = hygiene["length_bias"]["chars"]
    share = bias["share_chosen_longer"]
    share_text = "n/a" if share is None else f"{share:.3f}"
    leak = hygiene["leakage"]
    files_text = {
        ("parquet",): "The rows are in `parquet/`.",
        ("parquet", "jsonl"): "The same rows are in `parquet/` and `jsonl/`.",
        ("parquet", "datasets"): "The rows are in `parquet/` and the `datasets` "
        "folders.",
    }.get(
        tuple(config.files),
        "The same rows are in `parquet/`, `jsonl/` and the `datasets` folders.",
    )
    if "datasets" in config.files:
        loading = (
            "from datasets import load_from_disk\n"
            'dataset = load_from_disk("path/to/this/folder")\n'
            '# or, through the configs above: load_dataset("path/to/this/folder")'
        )
    else:  # no `datasets` folders: the configs above point at parquet/
        loading = (
            "from datasets import load_dataset\n"
            'dataset = load_dataset("path/to/this/folder")'
        )
    settings = json.dumps(
        {"format": config.format, **config.filters_dict(), **config.policy_dict()},
        indent=2,
        sort_keys=True,
    )
    return f"""{front}
# {project_name}: human preference data ({config.format})

Pairwise human judgments from the Prefline project `{project_slug}`, aggregated with
the **{config.policy}** policy into rows for TRL's {trainers}. Built from {judgments}
judgments. Prompts are split by their normalised text (seed {config.seed}, held-out
fraction {config.heldout_fraction}); evaluation prompts, and prompts whose normalised
text equals one, never enter a split.

## Splits

| split | rows |
|---|---|
{count_rows}

## Dropped comparisons

Counted in comparisons (a comparison gives one row, two in the unpaired format).

| reason | comparisons |
|---|---|
{dropped_rows}

## Columns

| column | meaning |
|---|---|
{column_rows}

## Loading

```python
{loading}
```

{files_text} `judgment_ids.parquet` lists the ids of the {judgments}
judgments behind the rows. `hygiene.json` holds the full hygiene report;
`SHA256SUMS` lists the checksum of every file.

## Hygiene summary

- exact duplicates: {hygiene["exact_duplicates"]["count"]}
- chosen equal to rejected: {hygiene["chosen_equals_rejected"]["count"]}
- empty texts: {hygiene["empty_texts"]["count"]}; over-long texts: \
{hygiene["over_long_texts"]["count"]}
- contradictions: {hygiene["contradictions"]["count"]}
- leakage: train/test {leak["train_vs_test"]["count"]}, \
train/evaluation {leak["train_vs_evaluation"]["count"]}
- length bias: chosen longer in {share_text} of pairs \
(95% CI {bias["ci95"][0]:.3f} to {bias["ci95"][1]:.3f})

## Settings

```json
{settings}
```
"""
