"""The agreement statistics against independent references, plus invariances.

References: `krippendorff.alpha(level_of_measurement="nominal")`,
`sklearn.metrics.cohen_kappa_score`, `scipy.stats.binomtest(...).proportion_ci`
(Wilson and Clopper-Pearson), and a brute-force loop for the leave-one-out majority.
"""

import math

import krippendorff
import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from annotation import stats

ALPHA_TOL = 1e-9
KAPPA_TOL = 1e-9
INTERVAL_TOL = 1e-7
SEEDS = range(8)


def random_judgments(rng, n_units=40, n_coders=6, n_categories=4, p_missing=0.5):
    """Long-format judgments with a latent truth so agreement is above chance."""
    truth = rng.integers(0, n_categories, n_units)
    units, coders, values = [], [], []
    for u in range(n_units):
        for c in range(n_coders):
            if rng.random() < p_missing:
                continue
            value = truth[u] if rng.random() < 0.6 else rng.integers(0, n_categories)
            units.append(u)
            coders.append(c)
            values.append(int(value))
    return np.array(units), np.array(coders), np.array(values)


def reliability_matrix(units, coders, values):
    matrix = np.full((coders.max() + 1, units.max() + 1), np.nan)
    matrix[coders, units] = values
    return matrix


@pytest.mark.parametrize("seed", SEEDS)
def test_alpha_matches_krippendorff_package(seed):
    units, coders, values = random_judgments(np.random.default_rng(seed))
    expected = krippendorff.alpha(
        reliability_data=reliability_matrix(units, coders, values),
        level_of_measurement="nominal",
    )
    assert stats.krippendorff_alpha_nominal(units, values) == pytest.approx(
        expected, abs=ALPHA_TOL
    )


def test_alpha_textbook_example():
    # Krippendorff (2011), nominal example: 4 coders, 12 units, alpha = 0.743.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units, values = [], []
    for row in data:
        for unit, value in enumerate(row):
            if value is not None:
                units.append(unit)
                values.append(value)
    assert stats.krippendorff_alpha_nominal(units, values) == pytest.approx(
        0.743, abs=1e-3
    )


def test_alpha_is_nan_when_undefined():
    assert math.isnan(stats.krippendorff_alpha_nominal([], []))
    assert math.isnan(stats.krippendorff_alpha_nominal([1, 2, 3], [0, 1, 0]))
    assert math.isnan(stats.krippendorff_alpha_nominal([1, 1, 2, 2], [0, 0, 0, 0]))


@pytest.mark.parametrize("seed", SEEDS)
def test_alpha_invariant_to_relabelling_categories_and_units(seed):
    rng = np.random.default_rng(seed)
    units, _, values = random_judgments(rng)
    relabel = rng.permutation(4) + 10
    unit_ids = rng.permutation(1000)[: units.max() + 1]
    assert stats.krippendorff_alpha_nominal(
        unit_ids[units], relabel[values]
    ) == pytest.approx(stats.krippendorff_alpha_nominal(units, values), abs=ALPHA_TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_alpha_with_duplicated_units_matches_reference(seed):
    units, coders, values = random_judgments(np.random.default_rng(seed))
    offset = units.max() + 1
    units2 = np.concatenate([units, units + offset])
    coders2 = np.concatenate([coders, coders])
    values2 = np.concatenate([values, values])
    expected = krippendorff.alpha(
        reliability_data=reliability_matrix(units2, coders2, values2),
        level_of_measurement="nominal",
    )
    got = stats.krippendorff_alpha_nominal(units2, values2)
    assert got == pytest.approx(expected, abs=ALPHA_TOL)
    # Doubling the data changes only the small-sample correction (n - 1).
    single = stats.krippendorff_alpha_nominal(units, values)
    assert abs(got - single) < 2 / len(values)


@pytest.mark.parametrize("seed", SEEDS)
def test_kappa_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 50)
    b = np.where(rng.random(50) < 0.7, a, rng.integers(0, 4, 50))
    assert stats.cohen_kappa(a, b) == pytest.approx(
        cohen_kappa_score(a, b), abs=KAPPA_TOL
    )


def test_kappa_invariances():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 60)
    b = np.where(rng.random(60) < 0.6, a, rng.integers(0, 4, 60))
    base = stats.cohen_kappa(a, b)
    relabel = np.array([3, 0, 2, 1])
    assert stats.cohen_kappa(relabel[a], relabel[b]) == pytest.approx(base)
    assert stats.cohen_kappa(b, a) == pytest.approx(base)
    assert stats.cohen_kappa(np.tile(a, 3), np.tile(b, 3)) == pytest.approx(base)


def test_kappa_nan_when_undefined():
    assert math.isnan(stats.cohen_kappa([], []))
    assert math.isnan(stats.cohen_kappa([1, 1, 1], [1, 1, 1]))


def test_pairwise_kappa_matches_sklearn_per_pair_and_respects_min_overlap():
    units, coders, values = random_judgments(
        np.random.default_rng(3), n_units=60, n_coders=4, p_missing=0.3
    )
    result = stats.pairwise_cohen_kappa(units, coders, values, min_overlap=5)
    assert len(result.kappa) == 6
    for a, b, n, kappa in zip(
        result.coder_a, result.coder_b, result.n, result.kappa, strict=True
    ):
        la = dict(zip(units[coders == a], values[coders == a], strict=True))
        lb = dict(zip(units[coders == b], values[coders == b], strict=True))
        shared = sorted(la.keys() & lb.keys())
        assert n == len(shared)
        expected = cohen_kappa_score([la[u] for u in shared], [lb[u] for u in shared])
        assert kappa == pytest.approx(expected, abs=KAPPA_TOL)
    few = stats.pairwise_cohen_kappa(units, coders, values, min_overlap=1000)
    assert len(few.kappa) == 0


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (57, 80)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson_interval(k, n)
    assert float(low) == pytest.approx(expected.low, abs=INTERVAL_TOL)
    assert float(high) == pytest.approx(expected.high, abs=INTERVAL_TOL)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (57, 80)])
def test_clopper_pearson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
    low, high = stats.clopper_pearson_interval(k, n, confidence=0.9)
    assert float(low) == pytest.approx(expected.low, abs=INTERVAL_TOL)
    assert float(high) == pytest.approx(expected.high, abs=INTERVAL_TOL)


def test_intervals_vectorised_and_nan_for_empty():
    low, high = stats.wilson_interval(np.array([0, 5, 2]), np.array([0, 10, 2]))
    assert math.isnan(low[0]) and math.isnan(high[0])
    assert low[1] < 0.5 < high[1]
    assert high[2] == pytest.approx(1.0)
    assert math.isnan(stats.proportion(0, 0).rate)


def test_wilson_interval_symmetric_under_complement():
    low, high = stats.wilson_interval(7, 30)
    low_c, high_c = stats.wilson_interval(23, 30)
    assert float(low) == pytest.approx(1 - float(high_c))
    assert float(high) == pytest.approx(1 - float(low_c))


def brute_force_majority(units, values):
    out = []
    for i, (u, v) in enumerate(zip(units, values, strict=True)):
        others = [values[j] for j in range(len(units)) if units[j] == u and j != i]
        if not others:
            out.append(math.nan)
            continue
        tally = {c: others.count(c) for c in set(others)}
        top = max(tally.values())
        winners = [c for c, t in tally.items() if t == top]
        out.append(math.nan if len(winners) > 1 else float(winners[0] == v))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_agreement_with_majority_matches_brute_force(seed):
    units, _, values = random_judgments(np.random.default_rng(seed), n_units=20)
    got = stats.agreement_with_majority(units, values)
    expected = brute_force_majority(list(units), list(values))
    np.testing.assert_array_equal(got, np.array(expected))


def test_left_choice_rate_decodes_positions():
    values = np.array([stats.FIRST, stats.FIRST, stats.SECOND, stats.SECOND, stats.TIE])
    left_is_first = np.array([True, False, False, True, True])
    # first on left -> left; first on right -> right; second on left -> left; ...
    np.testing.assert_array_equal(
        stats.chose_left(values, left_is_first), [1, 0, 1, 0, np.nan]
    )
    rate = stats.left_choice_rate(values, left_is_first)
    assert (rate.successes, rate.n, rate.rate) == (2, 4, 0.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_left_rate_swapping_sides_mirrors_and_duplicating_keeps_rate(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, 200)
    left_is_first = rng.random(200) < 0.5
    rate = stats.left_choice_rate(values, left_is_first)
    swapped = stats.left_choice_rate(values, ~left_is_first)
    assert swapped.rate == pytest.approx(1 - rate.rate)
    assert swapped.low == pytest.approx(1 - rate.high)
    doubled = stats.left_choice_rate(np.tile(values, 2), np.tile(left_is_first, 2))
    assert doubled.rate == pytest.approx(rate.rate)
    assert doubled.high - doubled.low < rate.high - rate.low
    # Relabelling first <-> second together with swapping sides is the same data.
    relabel = np.array([stats.SECOND, stats.FIRST, stats.TIE, stats.BOTH_BAD])
    mirrored = stats.left_choice_rate(relabel[values], ~left_is_first)
    assert mirrored.rate == pytest.approx(rate.rate)


def test_gold_accuracy_and_choice_rates():
    acc = stats.gold_accuracy([0, 1, 2, 0], [0, 1, 0, 0])
    assert (acc.successes, acc.n, acc.rate) == (3, 4, 0.75)
    expected = binomtest(3, 4).proportion_ci(method="wilson")
    assert acc.low == pytest.approx(expected.low, abs=INTERVAL_TOL)
    ties = stats.choice_rate([0, 2, 2, 3], stats.TIE)
    assert ties.rate == 0.5
    assert stats.choice_rate([0, 2, 2, 3], stats.BOTH_BAD).rate == 0.25


def test_grouped_median_ignores_nan():
    keys, medians = stats.grouped_median(
        [2, 1, 1, 1, 2, 3], [10.0, 1.0, 3.0, 2.0, np.nan, np.nan]
    )
    np.testing.assert_array_equal(keys, [1, 2, 3])
    np.testing.assert_array_equal(medians, [2.0, 10.0, np.nan])


def test_encode_choices():
    np.testing.assert_array_equal(
        stats.encode_choices(["first", "second", "tie", "both_bad"]), [0, 1, 2, 3]
    )
