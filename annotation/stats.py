"""Agreement and quality statistics of pairwise judgments: pure NumPy, no Django.

Arrays are in "long" format, one entry per judgment:

- ``units``: integer (or any hashable-as-NumPy) id of the judged comparison;
- ``coders``: id of the annotator;
- ``values``: the canonical choice coded as an integer, see ``CHOICE_CODES``
  (``0`` first better, ``1`` second better, ``2`` tie, ``3`` both bad);
- ``left_is_first``: bool, True when the comparison's first response was shown on
  the left.

Every function is a pure function of its arguments. Where a statistic is undefined
(no data, a single category) it returns ``nan`` rather than a made-up number.
"""

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.special import betaincinv

CHOICE_CODES = {"first": 0, "second": 1, "tie": 2, "both_bad": 3}
FIRST, SECOND, TIE, BOTH_BAD = 0, 1, 2, 3


@dataclass(frozen=True)
class Proportion:
    """A proportion ``successes / n`` with a two-sided confidence interval."""

    successes: int
    n: int
    rate: float
    low: float
    high: float


def encode_choices(choices) -> np.ndarray:
    """Map canonical choice strings (``"first"``, ...) to the integer codes."""
    return np.array([CHOICE_CODES[c] for c in choices], dtype=np.int64)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes, n, confidence: float = 0.95):
    """Wilson score interval for a binomial proportion.

    Wilson (1927), "Probable inference, the law of succession, and statistical
    inference"; no continuity correction. Good coverage at small ``n`` and near 0 or
    1, unlike the Wald interval.

    Parameters
    ----------
    successes, n : array_like of int
        Counts; broadcast against each other.
    confidence : float
        Two-sided confidence level.

    Returns
    -------
    low, high : ndarray of float
        The bounds; ``nan`` where ``n == 0``.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _z(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def clopper_pearson_interval(successes, n, confidence: float = 0.95):
    """Clopper-Pearson "exact" interval from beta quantiles.

    Clopper & Pearson (1934). Conservative: coverage is at least ``confidence``.

    Parameters
    ----------
    successes, n : array_like of int
    confidence : float

    Returns
    -------
    low, high : ndarray of float
        ``nan`` where ``n == 0``.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = 1 - confidence
    if not 0 < alpha < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, betaincinv(k, n - k + 1, alpha / 2), 0.0)
        high = np.where(k < n, betaincinv(k + 1, n - k, 1 - alpha / 2), 1.0)
    low = np.where(n > 0, low, np.nan)
    high = np.where(n > 0, high, np.nan)
    return low, high


def proportion(successes: int, n: int, confidence: float = 0.95) -> Proportion:
    """Return ``successes / n`` with its Wilson interval (all ``nan`` when n is 0)."""
    low, high = wilson_interval(successes, n, confidence)
    rate = successes / n if n else float("nan")
    return Proportion(int(successes), int(n), rate, float(low), float(high))


def krippendorff_alpha_nominal(units, values) -> float:
    """Krippendorff's alpha for nominal data, any number of coders, missing allowed.

    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": build the
    coincidence matrix ``o[c, k] = sum_u n_uc * (n_uk - [c == k]) / (m_u - 1)`` over
    units with at least two values (``m_u`` values in unit ``u``), then
    ``alpha = 1 - (n - 1) * sum_{c != k} o[c, k] / sum_{c != k} n_c * n_k``.

    Parameters
    ----------
    units : array_like, shape (n_judgments,)
        Unit (comparison) of each value.
    values : array_like of int, shape (n_judgments,)
        Category of each value (e.g. a canonical choice code).

    Returns
    -------
    float
        Alpha in ``[-1, 1]``; ``nan`` when no unit has two values or when only one
        category occurs among the pairable values (agreement is then undefined).
    """
    units = np.asarray(units)
    values = np.asarray(values)
    if units.shape != values.shape:
        raise ValueError("units and values must have the same shape")
    if units.size == 0:
        return float("nan")
    _, unit_index = np.unique(units, return_inverse=True)
    _, value_index = np.unique(values, return_inverse=True)
    counts = np.zeros((unit_index.max() + 1, value_index.max() + 1))
    np.add.at(counts, (unit_index, value_index), 1)
    per_unit = counts.sum(axis=1)
    counts = counts[per_unit >= 2]
    per_unit = per_unit[per_unit >= 2]
    if counts.shape[0] == 0:
        return float("nan")
    weighted = counts / (per_unit - 1)[:, None]
    coincidence = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    n_c = coincidence.sum(axis=0)
    n = n_c.sum()
    disagreement = coincidence.sum() - np.trace(coincidence)
    expected = n**2 - (n_c**2).sum()
    if expected == 0:
        return float("nan")
    return float(1 - (n - 1) * disagreement / expected)


def cohen_kappa(labels_a, labels_b) -> float:
    """Cohen's kappa of two coders who labelled the same items.

    Cohen (1960): ``(p_o - p_e) / (1 - p_e)`` with the observed agreement ``p_o`` and
    the chance agreement ``p_e`` from each coder's own marginal distribution.

    Parameters
    ----------
    labels_a, labels_b : array_like, shape (n_items,)
        Paired labels.

    Returns
    -------
    float
        ``nan`` when there are no items or chance agreement is 1 (both coders used
        one and the same label throughout).
    """
    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.shape != b.shape:
        raise ValueError("labels_a and labels_b must have the same shape")
    if a.size == 0:
        return float("nan")
    categories, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = index[: a.size], index[a.size :]
    p_o = np.mean(ia == ib)
    freq_a = np.bincount(ia, minlength=categories.size) / a.size
    freq_b = np.bincount(ib, minlength=categories.size) / b.size
    p_e = float(freq_a @ freq_b)
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_o - p_e) / (1 - p_e))


@dataclass(frozen=True)
class PairwiseKappa:
    """Cohen's kappa per coder pair: ``coder_a[i]``, ``coder_b[i]`` share ``n[i]``."""

    coder_a: np.ndarray
    coder_b: np.ndarray
    n: np.ndarray
    kappa: np.ndarray


def pairwise_cohen_kappa(units, coders, values, min_overlap: int = 10) -> PairwiseKappa:
    """Cohen's kappa for every coder pair that labelled at least ``min_overlap`` units.

    Parameters
    ----------
    units, coders, values : array_like, shape (n_judgments,)
        One value per (unit, coder); a coder labels a unit at most once.
    min_overlap : int
        Pairs sharing fewer units are left out (kappa on a handful of items is noise).

    Returns
    -------
    PairwiseKappa
        Pairs ordered by coder id, ``coder_a < coder_b``.
    """
    units = np.asarray(units)
    coders = np.asarray(coders)
    values = np.asarray(values)
    labels: dict = {}
    for unit, coder, value in zip(
        units.tolist(), coders.tolist(), values.tolist(), strict=True
    ):
        labels.setdefault(coder, {})[unit] = value
    ordered = sorted(labels)
    out_a, out_b, out_n, out_k = [], [], [], []
    for i, coder_a in enumerate(ordered):
        for coder_b in ordered[i + 1 :]:
            shared = sorted(labels[coder_a].keys() & labels[coder_b].keys())
            if len(shared) < max(min_overlap, 1):
                continue
            out_a.append(coder_a)
            out_b.append(coder_b)
            out_n.append(len(shared))
            out_k.append(
                cohen_kappa(
                    [labels[coder_a][u] for u in shared],
                    [labels[coder_b][u] for u in shared],
                )
            )
    return PairwiseKappa(
        np.array(out_a, dtype=coders.dtype),
        np.array(out_b, dtype=coders.dtype),
        np.array(out_n, dtype=np.int64),
        np.array(out_k, dtype=float),
    )


def agreement_with_majority(units, values) -> np.ndarray:
    """Whether each value agrees with the majority of the OTHER values of its unit.

    Leave-one-out majority, as in crowdsourcing quality control: a judgment is
    compared with the strict plurality of the other judgments of the same comparison,
    so an annotator is never compared with themselves.

    Parameters
    ----------
    units, values : array_like, shape (n_judgments,)

    Returns
    -------
    ndarray of float, shape (n_judgments,)
        ``1.0`` agrees, ``0.0`` disagrees, ``nan`` when the unit has no other value or
        the other values have no single most frequent category.
    """
    units = np.asarray(units)
    values = np.asarray(values)
    if units.size == 0:
        return np.zeros(0)
    _, unit_index = np.unique(units, return_inverse=True)
    _, value_index = np.unique(values, return_inverse=True)
    counts = np.zeros((unit_index.max() + 1, value_index.max() + 1))
    np.add.at(counts, (unit_index, value_index), 1)
    others = counts[unit_index]
    others[np.arange(units.size), value_index] -= 1
    top = others.max(axis=1)
    unique_top = (others == top[:, None]).sum(axis=1) == 1
    defined = (others.sum(axis=1) > 0) & unique_top
    agrees = (others.argmax(axis=1) == value_index).astype(float)
    return np.where(defined, agrees, np.nan)


def chose_left(values, left_is_first) -> np.ndarray:
    """Turn canonical choices back into positions: +1 left, 0 right, nan undecided.

    ``first`` shown on the left is a left choice; ``second`` shown on the left (i.e.
    ``left_is_first`` False) is also a left choice. Ties and both-bad are ``nan``.
    """
    values = np.asarray(values)
    left_is_first = np.asarray(left_is_first, dtype=bool)
    left = np.where(left_is_first, values == FIRST, values == SECOND).astype(float)
    return np.where((values == FIRST) | (values == SECOND), left, np.nan)


def left_choice_rate(values, left_is_first, confidence: float = 0.95) -> Proportion:
    """Share of decisive judgments (first or second) that picked the LEFT response.

    Position bias check: with positions randomised, an unbiased annotator's rate is
    0.5 within its Wilson interval.
    """
    left = chose_left(values, left_is_first)
    decided = left[~np.isnan(left)]
    return proportion(int(decided.sum()), int(decided.size), confidence)


def choice_rate(values, choice: int, confidence: float = 0.95) -> Proportion:
    """Share of judgments equal to ``choice`` (e.g. ``TIE``), Wilson interval."""
    values = np.asarray(values)
    return proportion(int((values == choice).sum()), int(values.size), confidence)


def gold_accuracy(values, gold_values, confidence: float = 0.95) -> Proportion:
    """Share of judgments on gold comparisons that match the known answer.

    Parameters
    ----------
    values, gold_values : array_like of int, shape (n_gold_judgments,)
        The judgment's canonical choice and the comparison's gold choice.
    """
    values = np.asarray(values)
    gold_values = np.asarray(gold_values)
    return proportion(int((values == gold_values).sum()), int(values.size), confidence)


def grouped_median(groups, values):
    """Median of ``values`` within each group, ignoring ``nan``.

    Returns
    -------
    keys : ndarray
        The distinct groups, sorted.
    medians : ndarray of float
        ``nan`` for a group whose values are all ``nan``.
    """
    groups = np.asarray(groups)
    values = np.asarray(values, dtype=float)
    keys = np.unique(groups)
    medians = np.full(keys.size, np.nan)
    for i, key in enumerate(keys):
        chosen = values[(groups == key) & ~np.isnan(values)]
        if chosen.size:
            medians[i] = np.median(chosen)
    return keys, medians
