"""Data-hygiene checks of a preference snapshot: NumPy and pyarrow, no Django, no I/O.

`HygieneAccumulator` sees the rows a batch at a time while the export streams them,
and every check is vectorised over the batch. Memory is a few fixed-size integers
per row (a 64-bit digest of the row's texts, of each pair, and the comparison id),
never the texts. The report it returns is plain JSON data:

- exact duplicates: output rows whose every text field is identical to an earlier row;
- chosen == rejected: pairs whose two texts are equal;
- empty and over-long texts, by characters or by tokens (`count_tokens`);
- contradictions: the same two response texts for the same (normalised) prompt
  preferred one way in one comparison and the other way in another;
- leakage (`leakage`): training prompts whose normalised text equals a prompt of the
  test split or of the project's evaluation (held-out) prompts;
- length bias: the share of pairs whose chosen text is longer than the rejected one,
  with a Wilson 95% interval (reward models learn "longer is better" from such data);
- label distribution per annotator (`label_distribution`).

Digests are xxh3-64 of the exact UTF-8 bytes (for rows: every text field, each
prefixed by its length, so that field boundaries count); two different texts share a
digest with probability about 2**-64 per pair.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from annotation import stats
from exports.aggregation import LABELS

EXAMPLES = 5
_SPACE = re.compile(r"\s+")
# Text columns in the order a row's findings are listed (`text_fields` of old).
TEXT_FIELDS = ("prompt", "chosen", "rejected", "completion", "messages")
# Every character `str.isspace` accepts (a test checks the list): a text made only
# of these is empty, as `not text.strip()` says.
PY_SPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ONLY_SPACE = "^[" + "".join(f"\\x{{{ord(c):04x}}}" for c in PY_SPACE) + "]*$"


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


def hash_strings(strings) -> np.ndarray:
    """xxh3-64 digest of every string's UTF-8 bytes (uint64, one per string)."""
    import pyarrow as pa
    import xxhash

    from exports.jsonlines import utf8_bytes

    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    n = len(strings)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    data = memoryview(utf8_bytes(strings))
    lengths = _byte_lengths(strings)
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    fn = xxhash.xxh3_64_intdigest
    return np.fromiter(
        (fn(data[a:b]) for a, b in zip(starts, ends, strict=True)),
        dtype=np.uint64,
        count=n,
    )


# First UTF-8 bytes of the characters in PY_SPACE: a text starting otherwise is not
# blank, so the regular expression runs only on texts starting with one of them.
_SPACE_LEADS = np.zeros(256, dtype=bool)
_SPACE_LEADS[list({c.encode()[0] for c in PY_SPACE})] = True


def blank_texts(strings) -> np.ndarray:
    """Per string: empty or only whitespace (`not text.strip()`), as a bool array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from exports.jsonlines import utf8_bytes

    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    lengths = _byte_lengths(strings)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    data = utf8_bytes(strings)
    filled = lengths > 0
    maybe = ~filled
    maybe[filled] = _SPACE_LEADS[data[starts[filled]]]
    out = np.zeros(len(lengths), dtype=bool)
    where = np.flatnonzero(maybe)
    if len(where):
        out[where] = pc.match_substring_regex(
            strings.take(pa.array(where)), _ONLY_SPACE
        ).to_numpy(zero_copy_only=False)
    return out


def _byte_lengths(strings) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.binary_length(strings).to_numpy(zero_copy_only=False).astype(np.int64)


def hash_rows(texts: dict) -> np.ndarray:
    """One digest per row over all its text fields (length-prefixed, so exact)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for values in texts.values():
        parts += [pc.cast(pc.binary_length(values), pa.string()), ":", values]
    return hash_strings(pc.binary_join_element_wise(*parts, ""))


def mix64(*columns: np.ndarray) -> np.ndarray:
    """Combine uint64 columns into one uint64 per row (splitmix64 finaliser chain)."""
    out = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            z = out ^ column.astype(np.uint64)
            z = z + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out = z ^ (z >> np.uint64(31))
    return out


@dataclass
class _Finding:
    count: int = 0
    examples: list = field(default_factory=list)

    def add_many(self, examples: list, count: int) -> None:
        self.count += count
        self.examples.extend(examples[: EXAMPLES - len(self.examples)])

    def as_dict(self) -> dict:
        return {"count": self.count, "examples": self.examples}


def _concat(parts: list, dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


class HygieneAccumulator:
    """Collect the hygiene checks over a stream of row batches and pair batches.

    Call `add_rows` for every batch of output rows (the text fields of the format, as
    the row shows them), `add_pairs` for the labelled preference pairs behind them,
    in stream order, then `report`. `count_tokens` maps a list of strings to their
    token counts (e.g. a `tokenizers.Tokenizer`'s `encode_batch`).
    """

    def __init__(
        self,
        *,
        max_chars: int,
        max_tokens: int | None = None,
        count_tokens: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.empty = _Finding()
        self.too_long = _Finding()
        self.same_texts = _Finding()
        self._row_digests: list[np.ndarray] = []
        self._row_ids: list[np.ndarray] = []
        self._pair_keys: list[np.ndarray] = []
        self._pair_direction: list[np.ndarray] = []
        self._pair_same: list[np.ndarray] = []
        self._pair_ids: list[np.ndarray] = []
        self.length = np.zeros(3, dtype=np.int64)  # chosen longer, shorter, equal
        self.tokens = np.zeros(3, dtype=np.int64)

    def _tokens(self, values) -> np.ndarray:
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(values)
        counts = np.asarray(
            self.count_tokens(encoded.dictionary.to_pylist()), dtype=np.int64
        )
        return counts[encoded.indices.to_numpy(zero_copy_only=False)]

    def add_rows(self, *, row_ids: np.ndarray, texts: dict) -> None:
        """Check a batch of output rows; `texts` maps text columns to string arrays."""
        import pyarrow.compute as pc

        n = len(row_ids)
        if n == 0:
            return
        self._row_digests.append(hash_rows(texts))
        self._row_ids.append(np.asarray(row_ids, dtype=np.int64))
        names = [name for name in TEXT_FIELDS if name in texts]
        empty, long = [], []  # (row, field rank, example)
        for rank, name in enumerate(names):
            values = texts[name]
            blank = blank_texts(values)
            chars = pc.utf8_length(values).to_numpy(zero_copy_only=False)
            tokens = self._tokens(values) if self.count_tokens else None
            over = chars > self.max_chars
            if tokens is not None and self.max_tokens is not None:
                over |= tokens > self.max_tokens
            over &= ~blank
            empty += [(int(i), rank) for i in np.flatnonzero(blank)[:EXAMPLES]]
            self.empty.count += int(blank.sum())
            long += [
                (
                    int(i),
                    rank,
                    {
                        "row": int(row_ids[i]),
                        "field": name,
                        "chars": int(chars[i]),
                        "tokens": None if tokens is None else int(tokens[i]),
                    },
                )
                for i in np.flatnonzero(over)[:EXAMPLES]
            ]
            self.too_long.count += int(over.sum())
        empty.sort()
        long.sort(key=lambda item: item[:2])
        self.empty.add_many(
            [{"row": int(row_ids[i]), "field": names[r]} for i, r in empty], 0
        )
        self.too_long.add_many([example for _, _, example in long], 0)

    def add_pairs(
        self,
        *,
        comparison_ids: np.ndarray,
        prompt_keys: np.ndarray,
        chosen,
        rejected,
        chosen_digests: np.ndarray,
        rejected_digests: np.ndarray,
    ) -> None:
        """Check a batch of labelled pairs (chosen preferred over rejected).

        `prompt_keys` are the 16-byte normalised prompt digests (dtype S16); the
        digests are `hash_strings` of the chosen and rejected texts.
        """
        import pyarrow.compute as pc

        n = len(comparison_ids)
        if n == 0:
            return
        same = pc.equal(chosen, rejected).to_numpy(zero_copy_only=False)
        ids = np.asarray(comparison_ids, dtype=np.int64)
        self.same_texts.add_many(ids[same][:EXAMPLES].tolist(), int(same.sum()))
        key_words = np.frombuffer(
            np.ascontiguousarray(prompt_keys, dtype="S16").tobytes(), dtype=np.uint64
        ).reshape(n, 2)
        low = np.minimum(chosen_digests, rejected_digests)
        high = np.maximum(chosen_digests, rejected_digests)
        self._pair_keys.append(mix64(key_words[:, 0], key_words[:, 1], low, high))
        self._pair_direction.append(chosen_digests <= rejected_digests)
        self._pair_same.append(same)
        self._pair_ids.append(ids)
        c_chars = pc.utf8_length(chosen).to_numpy(zero_copy_only=False)
        r_chars = pc.utf8_length(rejected).to_numpy(zero_copy_only=False)
        self.length += _compare(c_chars, r_chars)
        if self.count_tokens:
            self.tokens += _compare(self._tokens(chosen), self._tokens(rejected))

    def duplicates(self) -> dict:
        digests = _concat(self._row_digests, np.uint64)
        ids = _concat(self._row_ids, np.int64)
        _, first = np.unique(digests, return_index=True)
        repeated = np.ones(len(digests), dtype=bool)
        repeated[first] = False
        return {
            "count": int(repeated.sum()),
            "examples": ids[repeated][:EXAMPLES].tolist(),
        }

    def contradictions(self) -> dict:
        """Pairs preferred the other way than the first comparison of the same pair."""
        keys = _concat(self._pair_keys, np.uint64)
        direction = _concat(self._pair_direction, bool)
        same = _concat(self._pair_same, bool)
        ids = _concat(self._pair_ids, np.int64)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        flipped = (direction != direction[first][inverse]) & ~same
        where = np.flatnonzero(flipped)[:EXAMPLES]
        return {
            "count": int(flipped.sum()),
            "examples": [[int(ids[first[inverse[i]]]), int(ids[i])] for i in where],
        }

    def report(self, *, leakage: dict, annotators: dict | None = None) -> dict:
        """Return the full report as JSON-ready data (`leakage` from `leakage()`)."""
        return {
            "exact_duplicates": self.duplicates(),
            "chosen_equals_rejected": self.same_texts.as_dict(),
            "empty_texts": self.empty.as_dict(),
            "over_long_texts": {
                "max_chars": self.max_chars,
                "max_tokens": self.max_tokens,
                **self.too_long.as_dict(),
            },
            "contradictions": self.contradictions(),
            "leakage": leakage,
            "length_bias": {
                "chars": length_bias(*self.length.tolist()),
                "tokens": (
                    length_bias(*self.tokens.tolist()) if self.count_tokens else None
                ),
            },
            "annotators": annotators or {},
        }


def _compare(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    return np.array(
        [
            (chosen > rejected).sum(),
            (chosen < rejected).sum(),
            (chosen == rejected).sum(),
        ]
    )


def leakage(
    *,
    prompt_keys: np.ndarray,
    in_test: np.ndarray,
    prompt_ids: np.ndarray,
    evaluation_keys: np.ndarray,
) -> dict:
    """Training prompts equal (normalised) to test or evaluation prompts.

    Takes one entry per exported comparison in stream order: its prompt's 16-byte key
    (dtype S16), whether it went to the test split, and its prompt id. A key is shown
    by the first prompt id it came with; examples are the smallest of those ids.
    """
    n = len(prompt_keys)
    code, first = _factorise(np.concatenate([prompt_keys, evaluation_keys]))
    groups = len(first)
    train = np.bincount(code[:n][~in_test], minlength=groups) > 0
    test = np.bincount(code[:n][in_test], minlength=groups) > 0
    evaluation = np.bincount(code[n:], minlength=groups) > 0
    prompt_ids = np.asarray(prompt_ids, dtype=np.int64)
    out = {}
    for name, other in (("train_vs_test", test), ("train_vs_evaluation", evaluation)):
        # A key shared with training came with a training row: `first` is a row.
        pids = np.sort(prompt_ids[first[np.flatnonzero(train & other)]])
        out[name] = {"count": len(pids), "examples": pids[:EXAMPLES].tolist()}
    return out


def _factorise(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct 16-byte keys: (code of each key, index of each code's
    first occurrence). Keys are sorted as two 64-bit words (stable), much faster
    than sorting them as byte strings."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    words = np.ascontiguousarray(keys, dtype="S16").view(np.uint64).reshape(n, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))
    ordered = words[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    code = np.empty(n, dtype=np.int64)
    code[order] = np.cumsum(new) - 1
    return code, order[new]


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
