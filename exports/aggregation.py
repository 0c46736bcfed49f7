"""Aggregate the votes on each comparison into one label: pure NumPy functions.

Encoding shared by every function here (no Django, no I/O):

- a vote is one row of three parallel integer arrays: `item` (comparison index,
  0..n_items-1), `worker` (annotator index, 0..n_workers-1; imported prior labels use
  one index of their own) and `label` (0 first better, 1 second better, 2 tie,
  3 both bad; see `LABELS`);
- a policy returns an `Aggregate`: per item the winning `label` (`NO_LABEL` where the
  policy abstains), a policy-specific `confidence` in [0, 1] and a `reason` code
  (index into `REASONS`; 0 where a label was given).

"Agreement", kept on every exported row, is always the plain share of votes that
match the final label (`agreement`), whatever policy produced it, so researchers can
filter or weight by margin the same way for every snapshot.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

FIRST, SECOND, TIE, BOTH_BAD = 0, 1, 2, 3
LABELS = ("first", "second", "tie", "both_bad")
N_LABELS = len(LABELS)
NO_LABEL = -1

REASONS = (
    "",
    "no_votes",
    "no_majority",
    "not_unanimous",
    "below_min_agreement",
)
OK, NO_VOTES, NO_MAJORITY, NOT_UNANIMOUS, BELOW_MIN_AGREEMENT = range(len(REASONS))

POLICIES = ("majority", "unanimous", "min_agreement", "gold_weighted", "dawid_skene")

DAWID_SKENE_NOT_CONVERGED = (
    "Dawid-Skene did not converge on these votes in {n_iter} iterations (last "
    "change in the evidence lower bound {delta:.3g} >= {tol:.3g}); use another "
    "policy, or collect more votes per annotator."
)
# EM iterations Dawid-Skene may take. Small or sparse vote sets can need a few hundred
# (about 2% of random 5-30 item sets with 3 annotators do not converge in 100, none
# in 1,000); each iteration is vectorised, and EM stops as soon as it converges.
DAWID_SKENE_ITERATIONS = 1000
BAD_RATIO = "min_agreement must be in (0, 1], got {ratio!r}."
UNKNOWN_POLICY = "Unknown policy {policy!r}; choose one of: " + ", ".join(POLICIES)


class ConvergenceError(RuntimeError):
    """An iterative estimator stopped before meeting its tolerance."""


@dataclass(frozen=True)
class Aggregate:
    label: np.ndarray  # int8 per item, NO_LABEL where the policy abstains
    confidence: np.ndarray  # float64 per item
    reason: np.ndarray  # int8 per item, index into REASONS


def vote_counts(item: np.ndarray, label: np.ndarray, n_items: int) -> np.ndarray:
    """Count votes per item and label: an (n_items, 4) int64 array."""
    flat = np.asarray(item, dtype=np.int64) * N_LABELS + np.asarray(label, np.int64)
    return np.bincount(flat, minlength=n_items * N_LABELS).reshape(n_items, N_LABELS)


def agreement(counts: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Share of each item's votes equal to `label` (0 where no label or no votes)."""
    total = counts.sum(axis=1)
    rows = np.arange(len(label))
    hits = np.where(label >= 0, counts[rows, np.clip(label, 0, None)], 0)
    return np.divide(hits, total, out=np.zeros(len(label)), where=total > 0)


def _argmax_unique(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the top column per row and whether it is strictly ahead of the rest.

    Scores within a relative 1e-9 of the top count as tied: weighted sums are
    floats, and 0.1 + 0.2 must tie with 0.3 rather than win by a rounding error."""
    best = scores.argmax(axis=1)
    top = scores.max(axis=1)
    tied = np.isclose(scores, top[:, None], rtol=1e-9, atol=0.0)
    unique = tied.sum(axis=1) == 1
    return best, unique


def majority(counts: np.ndarray) -> Aggregate:
    """Plurality vote over the four labels; a tie for the top count abstains.

    Confidence is the winner's share of the votes.
    """
    total = counts.sum(axis=1)
    best, unique = _argmax_unique(counts)
    has_votes = total > 0
    label = np.where(has_votes & unique, best, NO_LABEL).astype(np.int8)
    reason = np.where(has_votes, np.where(unique, OK, NO_MAJORITY), NO_VOTES)
    return Aggregate(label, agreement(counts, label), reason.astype(np.int8))


def unanimous(counts: np.ndarray) -> Aggregate:
    """Keep only items where every vote is the same label."""
    total = counts.sum(axis=1)
    best = counts.argmax(axis=1)
    all_same = (counts.max(axis=1) == total) & (total > 0)
    label = np.where(all_same, best, NO_LABEL).astype(np.int8)
    reason = np.where(total > 0, np.where(all_same, OK, NOT_UNANIMOUS), NO_VOTES)
    return Aggregate(label, agreement(counts, label), reason.astype(np.int8))


def min_agreement(counts: np.ndarray, ratio: float) -> Aggregate:
    """Plurality vote kept only when the winner holds at least `ratio` of the votes."""
    if not 0 < ratio <= 1:
        raise ValueError(BAD_RATIO.format(ratio=ratio))
    base = majority(counts)
    # Tolerate float rounding so that 2 votes of 3 pass ratio=2/3.
    enough = base.confidence >= ratio - 1e-12
    keep = (base.label >= 0) & enough
    label = np.where(keep, base.label, NO_LABEL).astype(np.int8)
    reason = np.where(
        base.reason != OK, base.reason, np.where(enough, OK, BELOW_MIN_AGREEMENT)
    )
    return Aggregate(label, base.confidence, reason.astype(np.int8))


def gold_accuracy(
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    gold: np.ndarray,
    n_workers: int,
) -> np.ndarray:
    """Each worker's accuracy on gold items, smoothed as (correct + 1) / (answered + 2).

    `gold` holds the known label per item (NO_LABEL for non-gold items). The Beta(1, 1)
    posterior mean gives a worker with no gold answers a neutral 0.5.
    """
    on_gold = gold[item] >= 0
    correct = (label == gold[item]) & on_gold
    answered = np.bincount(worker[on_gold], minlength=n_workers)
    right = np.bincount(worker[correct], minlength=n_workers)
    return (right + 1.0) / (answered + 2.0)


def weighted_vote(
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    weights: np.ndarray,
    n_items: int,
) -> Aggregate:
    """Plurality vote where each worker's vote counts `weights[worker]`.

    With `weights = gold_accuracy(...)` this is gold-accuracy weighting: annotators who
    agree with the known answers count for more. A tie for the top weight abstains;
    confidence is the winner's share of the total weight.
    """
    flat = np.asarray(item, np.int64) * N_LABELS + np.asarray(label, np.int64)
    scores = np.bincount(
        flat, weights=weights[worker], minlength=n_items * N_LABELS
    ).reshape(n_items, N_LABELS)
    total = scores.sum(axis=1)
    has_votes = np.bincount(item, minlength=n_items) > 0
    best, unique = _argmax_unique(scores)
    ok = has_votes & unique & (total > 0)
    out = np.where(ok, best, NO_LABEL).astype(np.int8)
    top = scores.max(axis=1)
    confidence = np.divide(top, total, out=np.zeros(n_items), where=ok)
    reason = np.where(has_votes, np.where(ok, OK, NO_MAJORITY), NO_VOTES)
    return Aggregate(out, confidence, reason.astype(np.int8))


def dawid_skene(
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    n_items: int,
    *,
    n_iter: int | None = None,
    tol: float = 1e-5,
) -> Aggregate:
    """Dawid-Skene EM (Dawid & Skene 1979) through `crowdkit.aggregation.DawidSkene`.

    Each worker gets a full confusion matrix, so a consistent annotator counts for
    more than a random one. Confidence is the posterior probability of the label.
    Raises `ConvergenceError` when EM stops at `n_iter` without meeting `tol`.
    """
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    n_iter = DAWID_SKENE_ITERATIONS if n_iter is None else n_iter
    out = np.full(n_items, NO_LABEL, dtype=np.int8)
    confidence = np.zeros(n_items)
    has_votes = np.bincount(item, minlength=n_items) > 0
    reason = np.where(has_votes, OK, NO_VOTES).astype(np.int8)
    if len(item) == 0:
        return Aggregate(out, confidence, reason)
    data = pd.DataFrame(
        {
            "task": np.asarray(item, np.int64),
            "worker": np.asarray(worker, np.int64),
            "label": np.asarray(label, np.int64),
        }
    )
    with warnings.catch_warnings():
        # crowd-kit 1.4 uses pandas arguments that pandas 3 deprecates.
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        model = DawidSkene(n_iter=n_iter, tol=tol).fit(data)
    history = model.loss_history_
    if len(history) == n_iter:
        delta = history[-1] - history[-2] if n_iter > 1 else np.inf
        if not delta < tol:
            raise ConvergenceError(
                DAWID_SKENE_NOT_CONVERGED.format(n_iter=n_iter, delta=delta, tol=tol)
            )
    probas = model.probas_.sort_index()
    tasks = probas.index.to_numpy(np.int64)
    columns = probas.columns.to_numpy(np.int64)
    values = probas.to_numpy(np.float64)
    best, unique = _argmax_unique(values)
    out[tasks] = np.where(unique, columns[best], NO_LABEL)
    confidence[tasks] = values.max(axis=1)
    reason[tasks] = np.where(unique, OK, NO_MAJORITY)
    return Aggregate(out, confidence, reason)


def aggregate(
    policy: str,
    *,
    item: np.ndarray,
    worker: np.ndarray,
    label: np.ndarray,
    n_items: int,
    n_workers: int,
    gold: np.ndarray | None = None,
    ratio: float = 0.5,
) -> Aggregate:
    """Dispatch to one policy by name (see `POLICIES`)."""
    if policy in ("majority", "unanimous", "min_agreement"):
        counts = vote_counts(item, label, n_items)
        if policy == "majority":
            return majority(counts)
        if policy == "unanimous":
            return unanimous(counts)
        return min_agreement(counts, ratio)
    if policy == "gold_weighted":
        gold = np.full(n_items, NO_LABEL) if gold is None else gold
        weights = gold_accuracy(item, worker, label, gold, n_workers)
        return weighted_vote(item, worker, label, weights, n_items)
    if policy == "dawid_skene":
        return dawid_skene(item, worker, label, n_items)
    raise ValueError(UNKNOWN_POLICY.format(policy=policy))
