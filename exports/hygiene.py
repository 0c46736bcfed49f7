"""Data-hygiene checks of a preference snapshot: pure Python and NumPy, no I/O.

`HygieneAccumulator` sees the rows one at a time while the export streams them, so
the checks cost one pass and memory proportional to the number of rows (one
hash per row), never to the texts. The report it returns is plain JSON data:

- exact duplicates: output rows whose every text field is identical to an earlier row;
- chosen == rejected: pairs whose two texts are equal;
- empty and over-long texts, by characters or by tokens (`count_tokens`);
- contradictions: the same two response texts for the same (normalised) prompt
  preferred one way in one comparison and the other way in another;
- leakage: training prompts whose normalised text equals a prompt of the test split
  or of the project's evaluation (held-out) prompts;
- length bias: the share of pairs whose chosen text is longer than the rejected one,
  with a Wilson 95% interval (reward models learn "longer is better" from such data);
- label distribution per annotator (`label_distribution`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from annotation import stats
from exports.aggregation import LABELS

EXAMPLES = 5
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the key for leakage checks."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def digest(*parts: str) -> bytes:
    """A 16-byte digest of the parts (separated so that ("ab", "c") != ("a", "bc"))."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.digest()


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval as plain floats for JSON; (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    low, high = stats.wilson_interval(successes, n)
    return (float(low), float(high))


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


class HygieneAccumulator:
    """Collect the hygiene checks over a stream of rows and pairs.

    Call `add_row` for every output row (all text fields of the format), `add_pair`
    for every labelled preference pair behind the rows, then `report`.
    """

    def __init__(
        self,
        *,
        max_chars: int,
        max_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self._row_digests: set[int] = set()
        self.duplicates = _Finding()
        self.same_texts = _Finding()
        self.empty = _Finding()
        self.too_long = _Finding()
        self._directions: dict[int, tuple[int, int]] = {}
        self.contradictions = _Finding()
        self._prompts_by_split: dict[str, set[bytes]] = {}
        self._prompt_example: dict[bytes, int] = {}
        self.length_longer = 0
        self.length_shorter = 0
        self.length_equal = 0
        self.token_longer = 0
        self.token_shorter = 0
        self.token_equal = 0

    def _length(self, text: str) -> tuple[int, int | None]:
        if self.count_tokens is None:
            return len(text), None
        return len(text), self.count_tokens(text)

    def add_row(self, *, row_id: int, texts: dict[str, str]) -> None:
        """Check one output row; `texts` maps each text column to its text."""
        # Python's hash is stable within the process, which is all a set needs here.
        key = hash(tuple(texts.items()))
        if key in self._row_digests:
            self.duplicates.add(row_id)
        else:
            self._row_digests.add(key)
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

    def add_prompt(self, *, split: str, prompt_key: bytes, prompt_id: int) -> None:
        """Record which split a normalised prompt went to (for the leakage check)."""
        self._prompts_by_split.setdefault(split, set()).add(prompt_key)
        self._prompt_example.setdefault(prompt_key, prompt_id)

    def add_pair(
        self,
        *,
        comparison_id: int,
        prompt_key: bytes,
        chosen: str,
        rejected: str,
    ) -> None:
        """Check one labelled pair (chosen preferred over rejected)."""
        if chosen == rejected:
            self.same_texts.add(comparison_id)
        low, high = (chosen, rejected) if chosen <= rejected else (rejected, chosen)
        pair_key = hash((prompt_key, low, high))
        direction = 1 if chosen == low else -1
        seen = self._directions.get(pair_key)
        if seen is None:
            self._directions[pair_key] = (direction, comparison_id)
        elif seen[0] != direction and chosen != rejected:
            self.contradictions.add([seen[1], comparison_id])
        (c_chars, c_tokens), (r_chars, r_tokens) = (
            self._length(chosen),
            self._length(rejected),
        )
        self.length_longer += c_chars > r_chars
        self.length_shorter += c_chars < r_chars
        self.length_equal += c_chars == r_chars
        if c_tokens is not None and r_tokens is not None:
            self.token_longer += c_tokens > r_tokens
            self.token_shorter += c_tokens < r_tokens
            self.token_equal += c_tokens == r_tokens

    def leakage(self, evaluation_keys: Iterable[bytes]) -> dict:
        """Training prompts equal (normalised) to test or evaluation prompts."""
        train = self._prompts_by_split.get("train", set())
        test = self._prompts_by_split.get("test", set())
        evaluation = set(evaluation_keys)
        out = {}
        for name, other in (
            ("train_vs_test", test),
            ("train_vs_evaluation", evaluation),
        ):
            shared = sorted(self._prompt_example[k] for k in train & other)
            out[name] = {"count": len(shared), "examples": shared[:EXAMPLES]}
        return out

    def report(
        self, *, evaluation_keys: Iterable[bytes], annotators: dict | None = None
    ) -> dict:
        """Return the full report as JSON-ready data."""
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
            "leakage": self.leakage(evaluation_keys),
            "length_bias": {
                "chars": length_bias(
                    self.length_longer, self.length_shorter, self.length_equal
                ),
                "tokens": (
                    length_bias(self.token_longer, self.token_shorter, self.token_equal)
                    if self.count_tokens
                    else None
                ),
            },
            "annotators": annotators or {},
        }


def length_bias(longer: int, shorter: int, equal: int) -> dict:
    """Share of unequal-length pairs whose chosen text is longer, with a 95% CI.

    0.5 means no length preference; an interval entirely above 0.5 means annotators
    (or the policy) favour longer answers.
    """
    n = longer + shorter
    low, high = wilson_interval(longer, n)
    return {
        "chosen_longer": longer,
        "chosen_shorter": shorter,
        "equal_length": equal,
        "share_chosen_longer": (longer / n) if n else None,
        "ci95": [low, high],
    }


def label_distribution(
    worker: np.ndarray,
    label: np.ndarray,
    left_is_first: np.ndarray,
    final_label: np.ndarray,
    item: np.ndarray,
    names: list[str],
) -> dict:
    """Per annotator: votes per label, share of "left" picks, agreement with the result.

    `left_is_first` is 1/0 per vote, or -1 where the position is unknown (prior labels).
    A share of left picks far from 0.5 is position bias; a low agreement with the
    aggregated label flags a careless or adversarial annotator.
    """
    n = len(names)
    k = len(LABELS)
    counts = np.bincount(worker * k + label, minlength=n * k).reshape(n, k)
    decided = (label <= 1) & (left_is_first >= 0)
    picked_left = ((label == 0) & (left_is_first == 1)) | (
        (label == 1) & (left_is_first == 0)
    )
    n_decided = np.bincount(worker[decided], minlength=n)
    n_left = np.bincount(worker[decided & picked_left], minlength=n)
    final = final_label[item]
    labelled = final >= 0
    n_labelled = np.bincount(worker[labelled], minlength=n)
    n_agree = np.bincount(worker[labelled & (label == final)], minlength=n)
    out = {}
    for index, name in enumerate(names):
        votes = int(counts[index].sum())
        if votes == 0:
            continue
        out[name] = {
            "votes": votes,
            **{LABELS[i]: int(counts[index, i]) for i in range(k)},
            "share_left": (
                float(n_left[index] / n_decided[index]) if n_decided[index] else None
            ),
            "agreement_with_result": (
                float(n_agree[index] / n_labelled[index]) if n_labelled[index] else None
            ),
        }
    return out
