"""A row-wise reference export: the pre-columnar implementation, kept for the tests.

Everything here is the straightforward per-row code the columnar export replaced
(one dict per row, `json.dumps` per row, Python sets for the hygiene checks), reading
the database through the ORM, with the rules the export follows now: comparisons
whose prompt equals an evaluation prompt after normalisation are dropped
(`evaluation_prompt_text`), an SFT response already used drops its later comparisons
(`duplicate_chosen_response`), and the hygiene pair checks look at the pairs behind
the rows. The tests compare the real export with it, format by format.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from annotation.models import Choice, Comparison, Judgment, Split
from exports import aggregation as agg
from exports.hygiene import EXAMPLES, digest, length_bias, normalise_text

CHOICE_CODE = {
    Choice.FIRST: agg.FIRST,
    Choice.SECOND: agg.SECOND,
    Choice.TIE: agg.TIE,
    Choice.BOTH_BAD: agg.BOTH_BAD,
}
ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def prompt_text(messages):
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def prompt_key(messages) -> bytes:
    return digest(normalise_text(prompt_text(messages)))


def in_test_split(key: bytes, *, seed: int, fraction: float) -> bool:
    if fraction <= 0:
        return False
    h = hashlib.sha256(f"{seed}:".encode() + key).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def render_prompt(messages) -> str:
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    names = {"system": "System", "user": "Human", "assistant": "Assistant"}
    turns = [
        f"{names.get(m['role'], m['role'].title())}: {m['content']}" for m in messages
    ]
    return "\n\n".join(turns) + "\n\nAssistant:"


def prompt_messages(messages):
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@dataclass
class Pair:
    prompt_id: int
    comparison_id: int
    messages: list
    first_id: int
    first_text: str
    second_id: int
    second_text: str
    label: int
    counts: list
    agreement: float
    confidence: float

    def oriented(self):
        if self.label == agg.SECOND:
            return (
                self.second_id,
                self.second_text,
                self.first_id,
                self.first_text,
                self.counts[1],
                self.counts[0],
            )
        return (
            self.first_id,
            self.first_text,
            self.second_id,
            self.second_text,
            self.counts[0],
            self.counts[1],
        )


def _votes(pair: Pair, for_chosen, for_rejected) -> dict:
    return {
        "votes_chosen": int(for_chosen),
        "votes_rejected": int(for_rejected),
        "votes_tie": int(pair.counts[2]),
        "votes_both_bad": int(pair.counts[3]),
        "n_votes": int(sum(pair.counts)),
        "agreement": float(pair.agreement),
        "confidence": float(pair.confidence),
    }


def _assistant(text):
    return [{"role": "assistant", "content": text}]


def rows_for(pair: Pair, config) -> list[dict]:
    if pair.label not in (agg.FIRST, agg.SECOND):
        if pair.label == agg.BOTH_BAD and config.format == "unpaired":
            prompt = render_prompt(pair.messages)
            ids = {"prompt_id": pair.prompt_id, "comparison_id": pair.comparison_id}
            return [
                {
                    "prompt": prompt,
                    "completion": text,
                    "label": False,
                    **ids,
                    "response_id": rid,
                    **_votes(pair, v_for, v_against),
                }
                for rid, text, v_for, v_against in (
                    (pair.first_id, pair.first_text, pair.counts[0], pair.counts[1]),
                    (pair.second_id, pair.second_text, pair.counts[1], pair.counts[0]),
                )
            ]
        return []
    chosen_id, chosen, rejected_id, rejected, v_chosen, v_rejected = pair.oriented()
    ids = {"prompt_id": pair.prompt_id, "comparison_id": pair.comparison_id}
    if config.format in ("preference", "conversational"):
        if config.format == "preference":
            texts = {
                "prompt": render_prompt(pair.messages),
                "chosen": chosen,
                "rejected": rejected,
            }
        else:
            texts = {
                "prompt": prompt_messages(pair.messages),
                "chosen": _assistant(chosen),
                "rejected": _assistant(rejected),
            }
        return [
            {
                **texts,
                **ids,
                "chosen_response_id": chosen_id,
                "rejected_response_id": rejected_id,
                **_votes(pair, v_chosen, v_rejected),
            }
        ]
    if config.format == "unpaired":
        prompt = render_prompt(pair.messages)
        return [
            {
                "prompt": prompt,
                "completion": text,
                "label": desirable,
                **ids,
                "response_id": rid,
                **_votes(pair, v_for, v_against),
            }
            for text, desirable, rid, v_for, v_against in (
                (chosen, True, chosen_id, v_chosen, v_rejected),
                (rejected, False, rejected_id, v_rejected, v_chosen),
            )
        ]
    if config.sft_style == "messages":
        texts = {"messages": prompt_messages(pair.messages) + _assistant(chosen)}
    else:
        texts = {"prompt": render_prompt(pair.messages), "completion": chosen}
    return [
        {**texts, **ids, "response_id": chosen_id, **_votes(pair, v_chosen, v_rejected)}
    ]


def text_fields(row: dict) -> dict:
    out = {}
    for name in ("prompt", "chosen", "rejected", "completion", "messages"):
        if name not in row:
            continue
        value = row[name]
        if isinstance(value, list):
            value = "\n".join(f"{m['role']}: {m['content']}" for m in value)
        out[name] = value
    if "label" in row:  # unpaired: a row is its texts and its label
        out["label"] = "true" if row["label"] else "false"
    return out


@dataclass
class _Finding:
    count: int = 0
    examples: list = field(default_factory=list)

    def add(self, example) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def as_dict(self) -> dict:
        return {"count": self.count, "examples": self.examples}


class ReferenceHygiene:
    """The row-by-row hygiene checks (Python sets and dicts)."""

    def __init__(self, *, max_chars, max_tokens=None, count_tokens=None) -> None:
        self.max_chars, self.max_tokens = max_chars, max_tokens
        self.count_tokens = count_tokens
        self._rows: set = set()
        self.duplicates, self.same_texts = _Finding(), _Finding()
        self.empty, self.too_long = _Finding(), _Finding()
        self._directions: dict = {}
        self.contradictions = _Finding()
        self._by_split: dict = {}
        self._example: dict = {}
        self.length = [0, 0, 0]
        self.tokens = [0, 0, 0]

    def _length(self, text):
        return len(text), None if self.count_tokens is None else self.count_tokens(text)

    def add_row(self, *, row_id, texts) -> None:
        key = tuple(texts.items())
        if key in self._rows:
            self.duplicates.add(row_id)
        else:
            self._rows.add(key)
        for name, value in texts.items():
            if not value.strip():
                self.empty.add({"row": row_id, "field": name})
                continue
            chars, tokens = self._length(value)
            if chars > self.max_chars or (
                self.max_tokens is not None
                and tokens is not None
                and tokens > self.max_tokens
            ):
                self.too_long.add(
                    {"row": row_id, "field": name, "chars": chars, "tokens": tokens}
                )

    def add_prompt(self, *, split, key, prompt_id) -> None:
        self._by_split.setdefault(split, set()).add(key)
        self._example.setdefault(key, prompt_id)

    def add_pair(self, *, comparison_id, key, chosen, rejected) -> None:
        if chosen == rejected:
            self.same_texts.add(comparison_id)
        low, high = sorted((chosen, rejected))
        pair_key = (key, low, high)
        direction = 1 if chosen == low else -1
        seen = self._directions.get(pair_key)
        if seen is None:
            self._directions[pair_key] = (direction, comparison_id)
        elif seen[0] != direction and chosen != rejected:
            self.contradictions.add([seen[1], comparison_id])
        (c, ct), (r, rt) = self._length(chosen), self._length(rejected)
        self.length = [
            a + b for a, b in zip(self.length, [c > r, c < r, c == r], strict=True)
        ]
        if ct is not None:
            self.tokens = [
                a + b
                for a, b in zip(self.tokens, [ct > rt, ct < rt, ct == rt], strict=True)
            ]

    def report(self, *, evaluation_keys, annotators) -> dict:
        train = self._by_split.get("train", set())
        test = self._by_split.get("test", set())
        leak = {}
        for name, other in (
            ("train_vs_test", test),
            ("train_vs_evaluation", evaluation_keys),
        ):
            shared = sorted(self._example[k] for k in train & set(other))
            leak[name] = {"count": len(shared), "examples": shared[:EXAMPLES]}
        return {
            "exact_duplicates": self.duplicates.as_dict(),
            "chosen_equals_rejected": self.same_texts.as_dict(),
            "empty_texts": self.empty.as_dict(),
            "over_long_texts": {
                "max_chars": self.max_chars,
                "max_tokens": self.max_tokens,
                **self.too_long.as_dict(),
            },
            "contradictions": self.contradictions.as_dict(),
            "leakage": leak,
            "length_bias": {
                "chars": length_bias(*self.length),
                "tokens": length_bias(*self.tokens) if self.count_tokens else None,
            },
            "annotators": annotators,
        }


@dataclass
class ReferenceExport:
    rows: dict  # split -> list of row dicts
    jsonl: dict  # split -> bytes
    dropped: dict
    judgment_ids: list
    hygiene: dict


def reference_export(project, config, *, count_tokens=None) -> ReferenceExport:
    """Export `project` row by row with the ORM (no files written)."""
    comps = list(
        Comparison.objects.filter(project=project)
        .order_by("id")
        .values_list(
            "id",
            "prompt_id",
            "response_a_id",
            "response_b_id",
            "gold_choice",
            "prompt__split",
            "prompt__messages",
            "response_a__text",
            "response_b__text",
        )
    )
    votes = Judgment.objects.filter(comparison__project=project)
    if not config.include_prior:
        votes = votes.filter(origin=Judgment.Origin.HUMAN)
    votes = list(
        votes.order_by("comparison_id", "id").values_list(
            "id", "comparison_id", "annotator_id", "choice", "left_is_first"
        )
    )
    ids = [c[0] for c in comps]
    n = len(comps)
    item = np.searchsorted(ids, [v[1] for v in votes]).astype(np.int64)
    workers = sorted({-1 if v[2] is None else v[2] for v in votes})
    worker = np.array(
        [workers.index(-1 if v[2] is None else v[2]) for v in votes], dtype=np.int64
    )
    label = np.array([CHOICE_CODE.get(v[3], agg.NO_LABEL) for v in votes], np.int64)
    gold = np.array([CHOICE_CODE.get(c[4], agg.NO_LABEL) for c in comps], np.int64)
    result = agg.aggregate(
        config.policy,
        item=item,
        worker=worker,
        label=label,
        n_items=n,
        n_workers=len(workers),
        gold=gold,
        ratio=config.min_agreement,
    )
    counts = agg.vote_counts(item, label, n)
    evaluation = _heldout_keys(project)
    negatives = config.format == "unpaired" and config.both_bad_as_negatives
    reasons, sft_seen = [], set()
    for i, c in enumerate(comps):
        lab = int(result.label[i])
        if c[5] == Split.HELDOUT:
            reason = "evaluation_prompt"
        elif result.reason[i]:
            reason = agg.REASONS[result.reason[i]]
        elif counts[i].sum() < config.min_votes:
            reason = "too_few_votes"
        elif lab == agg.TIE:
            reason = "tie"
        elif lab == agg.BOTH_BAD and not negatives:
            reason = "both_bad"
        elif prompt_key(c[6]) in evaluation:
            reason = "evaluation_prompt_text"
        elif (
            config.format == "sft" and (c[3] if lab == agg.SECOND else c[2]) in sft_seen
        ):
            reason = "duplicate_chosen_response"
        else:
            reason = ""
            if config.format == "sft":
                sft_seen.add(c[3] if lab == agg.SECOND else c[2])
        reasons.append(reason)
    kept = np.array([r == "" for r in reasons], dtype=bool)
    final = np.where(kept, result.label, agg.NO_LABEL)
    agreement = agg.agreement(counts, final)
    hygiene = ReferenceHygiene(
        max_chars=config.max_chars,
        max_tokens=config.max_tokens,
        count_tokens=count_tokens,
    )
    splits = ["train", "test"] if config.heldout_fraction > 0 else ["train"]
    rows = {s: [] for s in splits}
    for i, c in enumerate(comps):
        if not kept[i]:
            continue
        key = prompt_key(c[6])
        split = (
            "test"
            if in_test_split(key, seed=config.seed, fraction=config.heldout_fraction)
            else "train"
        )
        pair = Pair(
            prompt_id=c[1],
            comparison_id=c[0],
            messages=c[6],
            first_id=c[2],
            first_text=c[7],
            second_id=c[3],
            second_text=c[8],
            label=int(result.label[i]),
            counts=counts[i].tolist(),
            agreement=float(agreement[i]),
            confidence=float(result.confidence[i]),
        )
        hygiene.add_prompt(split=split, key=key, prompt_id=c[1])
        if pair.label in (agg.FIRST, agg.SECOND):
            _, chosen, _, rejected, _, _ = pair.oriented()
            hygiene.add_pair(
                comparison_id=c[0], key=key, chosen=chosen, rejected=rejected
            )
        for row in rows_for(pair, config):
            hygiene.add_row(row_id=c[0], texts=text_fields(row))
            rows[split].append(row)
    from exports.hygiene import label_distribution

    names = [_name(w) for w in workers]
    annotators = label_distribution(
        worker,
        label,
        np.array([-1 if v[4] is None else int(v[4]) for v in votes], np.int64),
        final,
        item,
        names,
    )
    return ReferenceExport(
        rows=rows,
        jsonl={
            s: "".join(ENCODE(r) + "\n" for r in rs).encode() for s, rs in rows.items()
        },
        dropped=dict(sorted(Counter(r for r in reasons if r).items())),
        judgment_ids=sorted(v[0] for v, k in zip(votes, kept[item], strict=True) if k),
        hygiene=hygiene.report(evaluation_keys=evaluation, annotators=annotators),
    )


def _heldout_keys(project) -> set:
    from annotation.models import Prompt

    return {
        prompt_key(m)
        for m in Prompt.objects.filter(
            project=project, split=Split.HELDOUT
        ).values_list("messages", flat=True)
    }


def _name(worker_id: int) -> str:
    from django.contrib.auth import get_user_model

    if worker_id < 0:
        return "(imported prior labels)"
    return get_user_model().objects.get(pk=worker_id).username
