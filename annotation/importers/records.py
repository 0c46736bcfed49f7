"""Turn one imported record (a dict) into a validated prompt, responses and label.

Pure functions: no Django, no I/O. Every problem is reported as (field, reason) with
the field written as a path into the record (`responses[2].text`,
`messages[0].role`), so the service can tell the user exactly what to fix.

Record formats (the README's "Importing data" shows an example of each):

- ``prompts``: ``{"prompt": str}`` or ``{"messages": [...]}``;
- ``prompt_responses``: the same plus ``"responses": [{"model", "text"}, ...]``;
- ``trl_standard``: ``prompt`` / ``chosen`` / ``rejected`` strings;
- ``trl_conversational``: ``prompt`` message list, ``chosen`` / ``rejected`` lists
  holding one assistant message each (a file may mix standard and conversational
  rows);
- ``trl_implicit``: only ``chosen`` / ``rejected`` conversations; the shared prefix
  is the prompt and the final assistant messages are the responses;
- ``hh_rlhf``: Anthropic HH-RLHF ``chosen`` / ``rejected`` transcripts of
  ``\\n\\nHuman: ...\\n\\nAssistant: ...`` turns.

All formats take an optional ``id`` (or ``external_id``) and ``metadata`` object;
fields a format does not use are kept in the prompt's metadata.
"""

import json
import re
from dataclasses import dataclass, field

PROMPTS = "prompts"
PROMPT_RESPONSES = "prompt_responses"
TRL_STANDARD = "trl_standard"
TRL_CONVERSATIONAL = "trl_conversational"
TRL_IMPLICIT = "trl_implicit"
HH_RLHF = "hh_rlhf"
FORMATS = (
    PROMPTS,
    PROMPT_RESPONSES,
    TRL_STANDARD,
    TRL_CONVERSATIONAL,
    TRL_IMPLICIT,
    HH_RLHF,
)
PREFERENCE_FORMATS = (TRL_STANDARD, TRL_CONVERSATIONAL, TRL_IMPLICIT, HH_RLHF)

ROLES = ("system", "user", "assistant")
RESERVED_FIELDS = ("prompt", "messages", "responses", "chosen", "rejected")
MAX_RESPONSES_PER_PROMPT = 32
MAX_ID_CHARS = 200
MAX_MODEL_NAME_CHARS = 200

UNKNOWN_FORMAT = (
    "cannot tell the record's format: expected 'prompt' or 'messages' (prompts, "
    "optionally with 'responses'), or 'chosen' and 'rejected' (preference pairs)"
)
CHOSEN_WITHOUT_REJECTED = "'chosen' and 'rejected' must both be present"
FIELD_NOT_IN_FORMAT = "field is not used by the {format} format (the file's format)"
NOT_AN_OBJECT = "record must be a JSON object"
MISSING = "required field is missing"
PROMPT_MISSING = "required: give 'prompt' (a string or a message list) or 'messages'"
PROMPT_AND_MESSAGES = "give either 'prompt' or 'messages', not both"
ID_AND_EXTERNAL_ID = "give either 'id' or 'external_id', not both"
NOT_TEXT = "must be a non-empty string"
TEXT_TOO_LONG = "text has {n} characters; the limit is {limit}"
NOT_MESSAGE_LIST = "must be a non-empty list of {role, content} messages"
TOO_MANY_MESSAGES = "has {n} messages; the limit is {limit}"
NOT_MESSAGE = "must be an object with 'role' and 'content'"
UNKNOWN_MESSAGE_KEYS = "unknown keys {keys}; a message has only 'role' and 'content'"
BAD_ROLE = "must be one of system, user, assistant (got {role!r})"
PROMPT_MUST_END_WITH_USER = "the conversation must end with a user message"
NOT_ID = "must be a string or an integer of at most 200 characters"
NOT_METADATA = "must be a JSON object"
NOT_RESPONSE_LIST = "must be a non-empty list of {model, text} objects"
TOO_MANY_RESPONSES = "has {n} responses; the limit is {limit}"
NOT_RESPONSE = "must be an object with 'model' and 'text'"
UNKNOWN_RESPONSE_KEYS = "unknown keys {keys}; a response has model, text, params, id"
NOT_MODEL_NAME = "must be a non-empty string of at most 200 characters"
NOT_PARAMS = "must be a JSON object of generation parameters"
REPEATED_RESPONSE = "repeats responses[{other}] (same model and text)"
HAS_NUL = (
    "contains a NUL character (\\u0000), which the database cannot store; remove it"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
HAS_SURROGATE = (
    "contains a lone surrogate (\\ud800-\\udfff, half of a UTF-16 pair), which is "
    "not valid Unicode; fix the text's encoding"
)
NOT_FINITE = (
    "holds NaN or Infinity, which JSON cannot store; use null for a missing value"
)
NOT_SINGLE_ASSISTANT = (
    "must hold exactly one assistant message (the response), got {detail}"
)
NO_SHARED_PREFIX = (
    "chosen and rejected share no leading messages, so there is no prompt; "
    "use the explicit-prompt format with a 'prompt' field"
)
IMPLICIT_TAIL = (
    "after the prompt shared with {other}, must continue with exactly one "
    "assistant message, got {detail}"
)
HH_NOT_TRANSCRIPT = (
    "must be a transcript of '\\n\\nHuman: ...' and '\\n\\nAssistant: ...' turns"
)
HH_NO_FINAL_ASSISTANT = "the transcript must end with an Assistant turn"
HH_NO_PROMPT = "the transcript has no Human turn before the final Assistant turn"
HH_PROMPTS_DIFFER = (
    "chosen and rejected transcripts differ before their final Assistant turn "
    "(first difference at turn {turn})"
)

_HH_MARKER = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 100_000
    max_messages: int = 64


@dataclass(frozen=True)
class ParsedResponse:
    text: str
    model_name: str = ""
    params: dict = field(default_factory=dict)
    external_id: str = ""


@dataclass(frozen=True)
class ParsedRecord:
    """A validated record; for preference formats responses are [chosen, rejected]."""

    format: str
    messages: list[dict]
    responses: list[ParsedResponse] = field(default_factory=list)
    external_id: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def is_preference(self) -> bool:
        return self.format in PREFERENCE_FORMATS


class RecordInvalid(Exception):
    """The record cannot be imported; `problems` is a list of (field, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))
        self.problems = problems


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field_name: str, reason: str) -> None:
        self.items.append((field_name, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise RecordInvalid(self.items)


def present(record: dict) -> dict:
    """Drop absent values (None: JSON null, an empty CSV cell, a Parquet null)."""
    return {key: value for key, value in record.items() if value is not None}


def detect_format(record) -> str:
    """Name the record format from which fields are present."""
    if not isinstance(record, dict):
        raise RecordInvalid([("", NOT_AN_OBJECT)])
    record = present(record)
    if "chosen" in record or "rejected" in record:
        missing = "rejected" if "chosen" in record else "chosen"
        if missing not in record:
            raise RecordInvalid([(missing, CHOSEN_WITHOUT_REJECTED)])
        if "prompt" in record:
            if isinstance(record["prompt"], list):
                return TRL_CONVERSATIONAL
            return TRL_STANDARD
        if isinstance(record["chosen"], list):
            return TRL_IMPLICIT
        return HH_RLHF
    if "responses" in record:
        return PROMPT_RESPONSES
    if "prompt" in record or "messages" in record:
        return PROMPTS
    raise RecordInvalid([("", UNKNOWN_FORMAT)])


_FORMAT_FIELDS = {
    PROMPTS: {"prompt", "messages"},
    PROMPT_RESPONSES: {"prompt", "messages", "responses"},
    TRL_STANDARD: {"prompt", "chosen", "rejected"},
    TRL_CONVERSATIONAL: {"prompt", "chosen", "rejected"},
    TRL_IMPLICIT: {"chosen", "rejected"},
    HH_RLHF: {"chosen", "rejected"},
}


_REQUIRED = {
    PROMPTS: (),
    PROMPT_RESPONSES: ("responses",),
    TRL_STANDARD: ("prompt", "chosen", "rejected"),
    TRL_CONVERSATIONAL: ("prompt", "chosen", "rejected"),
    TRL_IMPLICIT: ("chosen", "rejected"),
    HH_RLHF: ("chosen", "rejected"),
}


def parse_record(record, record_format: str, limits: Limits) -> ParsedRecord:
    """Validate `record` as `record_format`; raise RecordInvalid listing problems."""
    if not isinstance(record, dict):
        raise RecordInvalid([("", NOT_AN_OBJECT)])
    record = present(record)
    problems = _Problems()
    for where, problem in _unstorable_paths(record, ""):
        problems.add(where, problem)
    problems.raise_if_any()
    for name in RESERVED_FIELDS:
        if name in record and name not in _FORMAT_FIELDS[record_format]:
            problems.add(name, FIELD_NOT_IN_FORMAT.format(format=record_format))
    external_id = _external_id(record, problems)
    metadata = _metadata(record, problems)
    missing = [name for name in _REQUIRED[record_format] if name not in record]
    for name in missing:
        problems.add(name, MISSING)
    if missing:
        problems.raise_if_any()
    parse = _PARSERS[record_format]
    messages, responses = parse(record, limits, problems)
    problems.raise_if_any()
    return ParsedRecord(
        format=record_format,
        messages=messages,
        responses=responses,
        external_id=external_id,
        metadata=metadata,
    )


def _external_id(record: dict, problems: _Problems) -> str:
    if "id" in record and "external_id" in record:
        problems.add("external_id", ID_AND_EXTERNAL_ID)
        return ""
    name = "external_id" if "external_id" in record else "id"
    return _id_value(record.get(name), name, problems)


def _id_value(value, field_name: str, problems: _Problems) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.add(field_name, NOT_ID)
        return ""
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        problems.add(field_name, NOT_ID)
        return ""
    return text


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return HAS_NUL
    if _SURROGATE.search(text):
        return HAS_SURROGATE
    return None


def _escaped(key: str) -> str:
    """`key` with NUL and lone surrogates written as `\\uXXXX`, so the field path
    in the error report can itself be stored."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)


def _unstorable_paths(value, where: str) -> list[tuple[str, str]]:
    """(field path, problem) of every string (key or value) the database cannot
    store: a NUL character, or a lone surrogate (a JSON `\\udc80` escape decodes to
    one, and no UTF-8 encoder takes it).

    PostgreSQL's text and jsonb types refuse both, and SQLite's driver cannot
    encode a surrogate, so such a record is reported here, with its field, instead
    of failing the whole insert later.
    """
    if isinstance(value, str):
        problem = _text_problem(value)
        return [(where or "(record)", problem)] if problem else []
    if isinstance(value, dict):
        paths = []
        for key, item in value.items():
            name = _escaped(key) if isinstance(key, str) else str(key)
            path = f"{where}.{name}" if where else name
            problem = _text_problem(key) if isinstance(key, str) else None
            if problem:
                paths.append((path, problem))
            paths += _unstorable_paths(item, path)
        return paths
    if isinstance(value, list | tuple):
        return [
            found
            for index, item in enumerate(value)
            for found in _unstorable_paths(item, f"{where}[{index}]")
        ]
    return []


def _metadata(record: dict, problems: _Problems) -> dict:
    """Merge the `metadata` object with the record's other (unused) fields."""
    known = {*RESERVED_FIELDS, "id", "external_id", "metadata"}
    extra = {
        key: _json_safe(value, key, problems)
        for key, value in record.items()
        if key not in known
    }
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.add("metadata", NOT_METADATA)
        return extra
    return {**extra, **(_json_safe(metadata, "metadata", problems) or {})}


def _json_safe(value, field_name: str, problems: _Problems):
    """Make values read from Parquet (dates, bytes, numpy scalars) JSON-storable.

    NaN and Infinity are refused rather than stored: JSON has no such values and
    PostgreSQL's jsonb rejects them.
    """
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except ValueError:
        problems.add(field_name, NOT_FINITE)
        return None


def _text(value, field_name: str, limits: Limits, problems: _Problems) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.add(field_name, NOT_TEXT)
        return None
    if len(value) > limits.max_text_chars:
        problems.add(
            field_name, TEXT_TOO_LONG.format(n=len(value), limit=limits.max_text_chars)
        )
        return None
    return value


def _messages(
    value, field_name: str, limits: Limits, problems: _Problems
) -> list[dict] | None:
    """Validate a list of {role, content} messages; return a clean copy or None."""
    if not isinstance(value, list) or not value:
        problems.add(field_name, NOT_MESSAGE_LIST)
        return None
    if len(value) > limits.max_messages:
        problems.add(
            field_name,
            TOO_MANY_MESSAGES.format(n=len(value), limit=limits.max_messages),
        )
        return None
    before = len(problems.items)
    clean = []
    for index, message in enumerate(value):
        where = f"{field_name}[{index}]"
        if not isinstance(message, dict):
            problems.add(where, NOT_MESSAGE)
            continue
        message = present(message)
        unknown = sorted(set(message) - {"role", "content"})
        if unknown:
            problems.add(where, UNKNOWN_MESSAGE_KEYS.format(keys=", ".join(unknown)))
        role = message.get("role")
        if role not in ROLES:
            problems.add(f"{where}.role", BAD_ROLE.format(role=role))
        content = _text(message.get("content"), f"{where}.content", limits, problems)
        clean.append({"role": role, "content": content})
    return clean if len(problems.items) == before else None


def _prompt_messages(
    record: dict, limits: Limits, problems: _Problems, *, allow_messages: bool
) -> list[dict] | None:
    """Read the prompt from `prompt` (string or list) or `messages`."""
    if allow_messages and "prompt" in record and "messages" in record:
        problems.add("messages", PROMPT_AND_MESSAGES)
        return None
    if allow_messages and "messages" in record:
        name, value = "messages", record["messages"]
    elif "prompt" in record:
        name, value = "prompt", record["prompt"]
    else:
        problems.add("prompt", PROMPT_MISSING if allow_messages else MISSING)
        return None
    if isinstance(value, str) and name == "prompt":
        text = _text(value, name, limits, problems)
        return None if text is None else [{"role": "user", "content": text}]
    messages = _messages(value, name, limits, problems)
    if messages is not None and messages[-1]["role"] != "user":
        problems.add(name, PROMPT_MUST_END_WITH_USER)
        return None
    return messages


def _parse_prompts(record, limits, problems):
    return _prompt_messages(record, limits, problems, allow_messages=True), []


def _parse_prompt_responses(record, limits, problems):
    messages = _prompt_messages(record, limits, problems, allow_messages=True)
    value = record.get("responses")
    if not isinstance(value, list) or not value:
        problems.add("responses", NOT_RESPONSE_LIST)
        return messages, []
    if len(value) > MAX_RESPONSES_PER_PROMPT:
        problems.add(
            "responses",
            TOO_MANY_RESPONSES.format(n=len(value), limit=MAX_RESPONSES_PER_PROMPT),
        )
        return messages, []
    responses: list[ParsedResponse] = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(value):
        response = _response(item, f"responses[{index}]", limits, problems)
        if response is None:
            continue
        key = (response.model_name, response.text)
        if key in seen:
            problems.add(
                f"responses[{index}]", REPEATED_RESPONSE.format(other=seen[key])
            )
            continue
        seen[key] = index
        responses.append(response)
    return messages, responses


def _response(item, where: str, limits: Limits, problems: _Problems):
    if not isinstance(item, dict):
        problems.add(where, NOT_RESPONSE)
        return None
    item = present(item)
    before = len(problems.items)
    unknown = sorted(set(item) - {"model", "text", "params", "id"})
    if unknown:
        problems.add(where, UNKNOWN_RESPONSE_KEYS.format(keys=", ".join(unknown)))
    model = item.get("model")
    if (
        not isinstance(model, str)
        or not model.strip()
        or len(model) > MAX_MODEL_NAME_CHARS
    ):
        problems.add(f"{where}.model", NOT_MODEL_NAME)
    text = _text(item.get("text"), f"{where}.text", limits, problems)
    params = item.get("params", {})
    if not isinstance(params, dict):
        problems.add(f"{where}.params", NOT_PARAMS)
    else:
        params = _json_safe(params, f"{where}.params", problems)
    external_id = _id_value(item.get("id"), f"{where}.id", problems)
    if len(problems.items) != before:
        return None
    return ParsedResponse(
        text=text,
        model_name=model,
        params=params,
        external_id=external_id,
    )


def _parse_trl_explicit(record, limits, problems):
    """Standard and conversational TRL rows (a file may mix the two)."""
    messages = _prompt_messages(record, limits, problems, allow_messages=False)
    return messages, _pair(
        _single_assistant(record["chosen"], "chosen", limits, problems),
        _single_assistant(record["rejected"], "rejected", limits, problems),
    )


def _single_assistant(value, field_name, limits, problems) -> str | None:
    """Read a response given as one assistant message (a plain string is accepted)."""
    if not isinstance(value, list):
        return _text(value, field_name, limits, problems)
    messages = _messages(value, field_name, limits, problems)
    if messages is None:
        return None
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        problems.add(
            field_name, NOT_SINGLE_ASSISTANT.format(detail=_describe(messages))
        )
        return None
    return messages[0]["content"]


def _describe(messages: list[dict]) -> str:
    if not messages:
        return "nothing"
    roles = ", ".join(m["role"] for m in messages)
    return f"{len(messages)} message(s): {roles}"


def _parse_trl_implicit(record, limits, problems):
    chosen = _messages(record["chosen"], "chosen", limits, problems)
    rejected = _messages(record["rejected"], "rejected", limits, problems)
    if chosen is None or rejected is None:
        return None, []
    shared = 0
    while (
        shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]
    ):
        shared += 1
    if shared == 0:
        problems.add("chosen", NO_SHARED_PREFIX)
        return None, []
    prompt = chosen[:shared]
    texts = []
    for name, other, messages in (
        ("chosen", "rejected", chosen),
        ("rejected", "chosen", rejected),
    ):
        tail = messages[shared:]
        if len(tail) != 1 or tail[0]["role"] != "assistant":
            detail = _describe(tail)
            problems.add(name, IMPLICIT_TAIL.format(other=other, detail=detail))
            texts.append(None)
        else:
            texts.append(tail[0]["content"])
    if prompt[-1]["role"] != "user":
        problems.add("chosen", PROMPT_MUST_END_WITH_USER)
        return None, []
    return prompt, _pair(*texts)


def _parse_hh_rlhf(record, limits, problems):
    chosen = _hh_transcript(record["chosen"], "chosen", limits, problems)
    rejected = _hh_transcript(record["rejected"], "rejected", limits, problems)
    if chosen is None or rejected is None:
        return None, []
    prompt, rejected_prompt = chosen[:-1], rejected[:-1]
    if prompt != rejected_prompt:
        turn = next(
            (
                i
                for i, (a, b) in enumerate(zip(prompt, rejected_prompt, strict=False))
                if a != b
            ),
            min(len(prompt), len(rejected_prompt)),
        )
        problems.add("rejected", HH_PROMPTS_DIFFER.format(turn=turn + 1))
        return None, []
    return prompt, _pair(chosen[-1]["content"], rejected[-1]["content"])


def _hh_transcript(value, field_name, limits, problems) -> list[dict] | None:
    """Split an HH-RLHF transcript into messages; the last one is the response."""
    if not isinstance(value, str) or not value.strip():
        problems.add(field_name, NOT_TEXT)
        return None
    if value.startswith(("Human:", "Assistant:")):
        value = "\n\n" + value
    parts = _HH_MARKER.split(value)
    if parts[0].strip() or len(parts) < 3:
        problems.add(field_name, HH_NOT_TRANSCRIPT)
        return None
    turns = [
        {"role": _HH_ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if len(turns) > limits.max_messages:
        problems.add(
            field_name,
            TOO_MANY_MESSAGES.format(n=len(turns), limit=limits.max_messages),
        )
        return None
    if turns[-1]["role"] != "assistant":
        problems.add(field_name, HH_NO_FINAL_ASSISTANT)
        return None
    if len(turns) < 2 or turns[-2]["role"] != "user":
        problems.add(field_name, HH_NO_PROMPT)
        return None
    before = len(problems.items)
    for index, turn in enumerate(turns):
        _text(turn["content"], f"{field_name} turn {index + 1}", limits, problems)
    return turns if len(problems.items) == before else None


def _pair(chosen: str | None, rejected: str | None) -> list[ParsedResponse]:
    if chosen is None or rejected is None:
        return []
    return [ParsedResponse(text=chosen), ParsedResponse(text=rejected)]


_PARSERS = {
    PROMPTS: _parse_prompts,
    PROMPT_RESPONSES: _parse_prompt_responses,
    TRL_STANDARD: _parse_trl_explicit,
    TRL_CONVERSATIONAL: _parse_trl_explicit,
    TRL_IMPLICIT: _parse_trl_implicit,
    HH_RLHF: _parse_hh_rlhf,
}
