"""Export settings and the four row formats TRL trainers take as they are.

Every format keeps, beside the columns a trainer reads, the provenance of the row
(`prompt_id`, `comparison_id`, response ids) and its votes (`votes_chosen`,
`votes_rejected`, `votes_tie`, `votes_both_bad`, `n_votes`), `agreement` (share of the
votes that match the label) and `confidence` (policy-specific: vote share, weighted
share or Dawid-Skene posterior). TRL's trainers ignore columns they do not know.

- `preference`     (DPOTrainer, RewardTrainer): prompt, chosen, rejected (strings)
- `conversational` (DPOTrainer, RewardTrainer): prompt (messages), chosen and
  rejected (one assistant message each); multi-turn prompts are kept whole
- `unpaired`       (KTOTrainer): prompt, completion (strings), label (bool)
- `sft`            (SFTTrainer): messages, or prompt/completion strings
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from exports.aggregation import BOTH_BAD, FIRST, POLICIES, SECOND

FORMATS = ("preference", "conversational", "unpaired", "sft")
SFT_STYLES = ("messages", "prompt_completion")
SPLITS = ("train", "test")

BAD_FORMAT = "Unknown format {value!r}; choose one of: " + ", ".join(FORMATS)
BAD_POLICY = "Unknown policy {value!r}; choose one of: " + ", ".join(POLICIES)
BAD_SFT_STYLE = "Unknown SFT style {value!r}; choose one of: " + ", ".join(SFT_STYLES)
BAD_FRACTION = "heldout_fraction must be in [0, 1), got {value!r}."
BAD_MIN_AGREEMENT = "min_agreement must be in (0, 1], got {value!r}."
BAD_MIN_VOTES = "min_votes must be at least 1, got {value!r}."
BAD_MAX_CHARS = "max_chars must be at least 1, got {value!r}."
TOKENS_NEED_TOKENIZER = (
    "max_tokens needs tokenizer_path (a tokenizer.json or its folder)."
)


@dataclass(frozen=True)
class ExportConfig:
    """What goes into a snapshot and how; stored on `DatasetSnapshot.policy/filters`."""

    format: str = "preference"
    policy: str = "majority"
    min_agreement: float = 0.5
    include_prior: bool = False
    min_votes: int = 1
    heldout_fraction: float = 0.1
    seed: int = 0
    both_bad_as_negatives: bool = False
    sft_style: str = "messages"
    max_chars: int = 20_000
    tokenizer_path: str = ""
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        errors = {}
        if self.format not in FORMATS:
            errors["format"] = BAD_FORMAT.format(value=self.format)
        if self.policy not in POLICIES:
            errors["policy"] = BAD_POLICY.format(value=self.policy)
        if self.sft_style not in SFT_STYLES:
            errors["sft_style"] = BAD_SFT_STYLE.format(value=self.sft_style)
        if not 0 <= self.heldout_fraction < 1:
            errors["heldout_fraction"] = BAD_FRACTION.format(
                value=self.heldout_fraction
            )
        if not 0 < self.min_agreement <= 1:
            errors["min_agreement"] = BAD_MIN_AGREEMENT.format(value=self.min_agreement)
        if self.min_votes < 1:
            errors["min_votes"] = BAD_MIN_VOTES.format(value=self.min_votes)
        if self.max_chars < 1:
            errors["max_chars"] = BAD_MAX_CHARS.format(value=self.max_chars)
        if self.max_tokens is not None and not self.tokenizer_path:
            errors["max_tokens"] = TOKENS_NEED_TOKENIZER
        if errors:
            raise ValueError(errors)

    FILTER_FIELDS = ("include_prior", "min_votes")

    def policy_dict(self) -> dict:
        return {
            k: v
            for k, v in asdict(self).items()
            if k not in self.FILTER_FIELDS and k != "format"
        }

    def filters_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.FILTER_FIELDS}

    @classmethod
    def from_parts(cls, *, format: str, policy: dict, filters: dict) -> ExportConfig:
        known = {f.name for f in fields(cls)}
        merged = {**policy, **filters, "format": format}
        return cls(**{k: v for k, v in merged.items() if k in known})


def render_prompt(messages: list[dict]) -> str:
    """Flatten a conversation into the plain-text prompt of the standard formats.

    A single user turn is its text as it is. Anything longer (a system message,
    earlier turns) is written as a transcript ending in an open assistant turn, in the
    "Human/Assistant" style of the Anthropic HH data, so no turn is lost.
    """
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    names = {"system": "System", "user": "Human", "assistant": "Assistant"}
    turns = [
        f"{names.get(m['role'], m['role'].title())}: {m['content']}" for m in messages
    ]
    return "\n\n".join(turns) + "\n\nAssistant:"


def prompt_messages(messages: list[dict]) -> list[dict]:
    """Keep only role and content, in that key order (stable bytes)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@dataclass(slots=True)
class LabelledPair:
    """One aggregated comparison with its texts, as the row builders need it."""

    prompt_id: int
    comparison_id: int
    messages: list
    first_id: int
    first_text: str
    second_id: int
    second_text: str
    label: int
    counts: list  # votes for first, second, tie, both_bad
    agreement: float
    confidence: float

    def oriented(self) -> tuple[int, str, int, str, int, int]:
        """Return (chosen id, text, rejected id, text, votes chosen, votes rejected)."""
        if self.label == SECOND:
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


def _votes(pair: LabelledPair, for_chosen: int, for_rejected: int) -> dict:
    return {
        "votes_chosen": int(for_chosen),
        "votes_rejected": int(for_rejected),
        "votes_tie": int(pair.counts[2]),
        "votes_both_bad": int(pair.counts[3]),
        "n_votes": int(sum(pair.counts)),
        "agreement": float(pair.agreement),
        "confidence": float(pair.confidence),
    }


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def rows_for(
    pair: LabelledPair, config: ExportConfig, sft_seen: set[int] | None = None
) -> list[dict]:
    """Build the output rows of one labelled pair in the configured format."""
    if pair.label not in (FIRST, SECOND):
        if pair.label == BOTH_BAD and config.format == "unpaired":
            return _both_bad_negatives(pair)
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
                "response_id": response_id,
                **_votes(pair, v_for, v_against),
            }
            for text, desirable, response_id, v_for, v_against in (
                (chosen, True, chosen_id, v_chosen, v_rejected),
                (rejected, False, rejected_id, v_rejected, v_chosen),
            )
        ]
    # SFT: each chosen response once, with the votes of the first comparison it won.
    if sft_seen is not None:
        if chosen_id in sft_seen:
            return []
        sft_seen.add(chosen_id)
    if config.sft_style == "messages":
        texts = {"messages": prompt_messages(pair.messages) + _assistant(chosen)}
    else:
        texts = {"prompt": render_prompt(pair.messages), "completion": chosen}
    return [
        {**texts, **ids, "response_id": chosen_id, **_votes(pair, v_chosen, v_rejected)}
    ]


def _both_bad_negatives(pair: LabelledPair) -> list[dict]:
    """Both responses judged bad become two undesirable KTO examples."""
    prompt = render_prompt(pair.messages)
    ids = {"prompt_id": pair.prompt_id, "comparison_id": pair.comparison_id}
    return [
        {
            "prompt": prompt,
            "completion": text,
            "label": False,
            **ids,
            "response_id": response_id,
            **_votes(pair, pair.counts[3], 0),
        }
        for response_id, text in (
            (pair.first_id, pair.first_text),
            (pair.second_id, pair.second_text),
        )
    ]


def text_fields(row: dict) -> dict[str, str]:
    """The texts of a row as strings (message lists joined), for the hygiene checks."""
    out = {}
    for name in ("prompt", "chosen", "rejected", "completion", "messages"):
        if name not in row:
            continue
        value = row[name]
        if isinstance(value, list):
            value = "\n".join(f"{m['role']}: {m['content']}" for m in value)
        out[name] = value
    return out


def arrow_schema(config: ExportConfig):
    """The fixed Arrow schema of a format (so empty splits have the same columns)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    messages = pa.list_(message)
    votes = [
        ("votes_chosen", pa.int32()),
        ("votes_rejected", pa.int32()),
        ("votes_tie", pa.int32()),
        ("votes_both_bad", pa.int32()),
        ("n_votes", pa.int32()),
        ("agreement", pa.float64()),
        ("confidence", pa.float64()),
    ]
    ids = [("prompt_id", pa.int64()), ("comparison_id", pa.int64())]
    pair_ids = [
        ("chosen_response_id", pa.int64()),
        ("rejected_response_id", pa.int64()),
    ]
    if config.format == "preference":
        head = [("prompt", pa.string()), ("chosen", pa.string())]
        head.append(("rejected", pa.string()))
        return pa.schema(head + ids + pair_ids + votes)
    if config.format == "conversational":
        head = [("prompt", messages), ("chosen", messages), ("rejected", messages)]
        return pa.schema(head + ids + pair_ids + votes)
    response = [("response_id", pa.int64())]
    if config.format == "unpaired":
        head = [("prompt", pa.string()), ("completion", pa.string())]
        head.append(("label", pa.bool_()))
        return pa.schema(head + ids + response + votes)
    if config.sft_style == "messages":
        return pa.schema([("messages", messages)] + ids + response + votes)
    head = [("prompt", pa.string()), ("completion", pa.string())]
    return pa.schema(head + ids + response + votes)
