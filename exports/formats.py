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

`ExportConfig.files` chooses the file kinds a snapshot holds: Parquet always, JSONL
and the `datasets` folder by default too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from exports.aggregation import POLICIES

FORMATS = ("preference", "conversational", "unpaired", "sft")
SFT_STYLES = ("messages", "prompt_completion")
SPLITS = ("train", "test")
# File kinds a snapshot can hold. Parquet is always written (the card's data files);
# JSONL and the `datasets` folder (load_from_disk) can be left out.
FILE_KINDS = ("parquet", "jsonl", "datasets")

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
BAD_MAX_TOKENS = "max_tokens must be at least 1, got {value!r}."
TOKENIZER_MISSING = "No tokenizer.json at {path}."
TOKENIZER_UNREADABLE = "{path} is not a tokenizers file: {error}"
NEGATIVES_NEED_UNPAIRED = (
    "both_bad_as_negatives applies to the unpaired format only (got format {value!r})."
)
MIN_AGREEMENT_NEEDS_POLICY = (
    "min_agreement applies to the min_agreement policy only (got policy {value!r}); "
    "leave it at 0.5 or choose that policy."
)
SFT_STYLE_NEEDS_SFT = (
    "sft_style applies to the sft format only (got format {value!r}); leave it at "
    "messages or choose that format."
)
BAD_FILES = (
    "files must be kinds among " + ", ".join(FILE_KINDS) + " including parquet, "
    "got {value!r}."
)


class SettingsError(ValueError):
    """Export settings that cannot be used, as {field: message}: every interface
    reports them on their field (form errors, API 400, `--option: message`)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors

    def __str__(self) -> str:
        return " ".join(self.errors.values())


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
    files: tuple[str, ...] = FILE_KINDS

    def __post_init__(self) -> None:
        errors = {}
        # Stored as a JSON list; kept in the canonical order, so equal sets compare.
        kinds = tuple(self.files) if not isinstance(self.files, str) else (self.files,)
        if "parquet" not in kinds or not set(kinds) <= set(FILE_KINDS):
            errors["files"] = BAD_FILES.format(value=self.files)
        else:
            object.__setattr__(
                self, "files", tuple(k for k in FILE_KINDS if k in kinds)
            )
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
        elif self.max_tokens is not None and self.max_tokens < 1:
            errors["max_tokens"] = BAD_MAX_TOKENS.format(value=self.max_tokens)
        if self.both_bad_as_negatives and self.format != "unpaired":
            errors["both_bad_as_negatives"] = NEGATIVES_NEED_UNPAIRED.format(
                value=self.format
            )
        # A setting the format or policy ignores would still be recorded on the
        # card (and change the checksum of identical rows): refused, not ignored.
        if self.min_agreement != 0.5 and self.policy != "min_agreement":
            errors.setdefault(
                "min_agreement", MIN_AGREEMENT_NEEDS_POLICY.format(value=self.policy)
            )
        if self.sft_style != "messages" and self.format != "sft":
            errors.setdefault(
                "sft_style", SFT_STYLE_NEEDS_SFT.format(value=self.format)
            )
        if errors:
            raise SettingsError(errors)

    FILTER_FIELDS = ("include_prior", "min_votes")

    def policy_dict(self) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v
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


def load_tokenizer(path: str):
    """The tokenizer.json that `tokenizer_path` names (the file or its folder): its
    absolute path and the `tokenizers.Tokenizer` read from it.

    Checked when a snapshot is asked for or previewed, so a wrong path or a file that
    is not a tokenizer is a field error and no failed snapshot, and again when it is
    built (the file may be gone by then)."""
    from tokenizers import Tokenizer  # Rust, light: no torch or transformers

    try:
        file = Path(path).expanduser().resolve()
    except RuntimeError as exc:  # "~nosuchuser/..." has no home to expand
        raise SettingsError({"tokenizer_path": str(exc)}) from exc
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise SettingsError({"tokenizer_path": TOKENIZER_MISSING.format(path=file)})
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        message = TOKENIZER_UNREADABLE.format(path=file, error=exc)
        raise SettingsError({"tokenizer_path": message}) from exc
    return file, tokenizer


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
