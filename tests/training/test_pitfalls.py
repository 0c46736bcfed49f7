"""Pitfall detectors on crafted metric series: fire on the bad, stay quiet on the good.

The trend statistics are checked against scipy (Kendall's tau-b with its asymptotic
p-value, Theil-Sen slope) as an independent reference.
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from training import pitfalls
from training.pitfalls import PitfallThresholds

TAU_TOL = 1e-12
P_VALUE_RTOL = 1e-9
SLOPE_TOL = 1e-12


def noisy(values, *, scale, seed=0):
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    return values + rng.normal(0.0, scale, size=values.size)


def steps_for(n, every=10):
    return np.arange(1, n + 1) * every


# --- trend statistics against scipy -------------------------------------------------


@pytest.mark.parametrize("n", [5, 12, 60, 300])
@pytest.mark.parametrize("seed", [0, 1])
def test_trend_matches_scipy_kendall_tau_and_theil_sen(n, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.choice(10 * n, size=n, replace=False)).astype(float)
    # Rounded values give ties in y, which exercise the tie correction.
    y = np.round(rng.normal(size=n) + 0.01 * x, 1)
    got = pitfalls.trend(x, y)
    reference = stats.kendalltau(x, y, method="asymptotic")
    assert got.tau == pytest.approx(reference.statistic, abs=TAU_TOL)
    assert got.p_value == pytest.approx(reference.pvalue, rel=P_VALUE_RTOL)
    assert got.slope == pytest.approx(stats.theilslopes(y, x).slope, abs=SLOPE_TOL)


def test_trend_is_invariant_to_input_order_and_affine_value_changes():
    x = steps_for(30)
    y = noisy(np.linspace(0, 3, 30), scale=0.5)
    base = pitfalls.trend(x, y)
    order = np.random.default_rng(3).permutation(30)
    shuffled = pitfalls.trend(x[order], y[order])
    scaled = pitfalls.trend(x, 7.0 * y + 100.0)
    assert shuffled == base
    assert scaled.tau == pytest.approx(base.tau)
    assert scaled.p_value == pytest.approx(base.p_value)
    assert scaled.slope == pytest.approx(7.0 * base.slope)


def test_trend_of_long_series_uses_block_means_and_keeps_direction():
    x = steps_for(5000, every=1)
    y = noisy(0.001 * x, scale=0.5)
    result = pitfalls.trend(x, y)
    assert result.tau > 0.5
    assert result.slope == pytest.approx(0.001, rel=0.1)


def test_nan_values_are_dropped_not_counted():
    x = steps_for(10)
    y = np.arange(10, dtype=float)
    with_gaps = y.copy()
    with_gaps[[2, 5]] = np.nan
    kept = np.ones(10, bool)
    kept[[2, 5]] = False
    assert pitfalls.trend(x, with_gaps) == pitfalls.trend(x[kept], y[kept])


def test_mismatched_series_raise():
    with pytest.raises(ValueError, match="same length"):
        pitfalls.clean_series([1, 2, 3], [1.0, 2.0])


# --- KL to the reference ------------------------------------------------------------


def test_kl_above_ceiling_is_critical_and_names_where_it_crossed():
    steps = steps_for(20)
    kl = np.concatenate([np.linspace(0.0, 0.4, 12), np.linspace(0.8, 3.0, 8)])
    findings = pitfalls.detect_kl_explosion(steps, kl)
    assert [f.code for f in findings] == ["kl_explosion"]
    finding = findings[0]
    assert finding.severity == pitfalls.CRITICAL
    assert finding.metrics == ("kl",)
    first_above = int(steps[np.flatnonzero(kl > 1.0)[0]])
    assert finding.step_start == first_above
    assert finding.step_end == int(steps[-1])
    assert finding.values["late_mean"] == pytest.approx(kl[-5:].mean())
    assert "kl" in finding.explanation and finding.advice


def test_kl_multiplying_window_to_window_is_flagged_before_the_ceiling():
    steps = steps_for(16)
    kl = 0.001 * 2 ** (np.arange(16) / 1.5)  # doubles every 1.5 logging steps
    assert kl[-4:].mean() < PitfallThresholds().kl_max  # still under the ceiling
    findings = pitfalls.detect_kl_explosion(steps, kl)
    assert len(findings) == 1
    assert findings[0].severity == pitfalls.WARNING
    assert findings[0].values["ratio"] >= 4.0


def test_kl_rising_from_exactly_zero_reports_plain_json_numbers():
    import json

    steps = steps_for(8)
    kl = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.5])
    finding = pitfalls.detect_kl_explosion(steps, kl)[0]
    assert "from zero" in finding.explanation
    data = json.loads(json.dumps(finding.as_dict(), allow_nan=False))
    assert data["values"]["ratio"] is None


def test_kl_growing_linearly_to_a_healthy_level_is_quiet():
    steps = steps_for(40)
    kl = noisy(np.linspace(0.0, 0.08, 40), scale=0.005).clip(0)
    assert pitfalls.detect_kl_explosion(steps, kl) == []


def test_kl_not_finite_is_critical_even_with_few_points():
    findings = pitfalls.detect_kl_explosion([1, 2, 3], [0.01, np.nan, np.inf])
    assert findings[0].severity == pitfalls.CRITICAL
    assert findings[0].step_start == 2


def test_kl_ceiling_threshold_is_respected():
    steps = steps_for(20)
    kl = np.full(20, 0.6)
    assert pitfalls.detect_kl_explosion(steps, kl) == []
    strict = PitfallThresholds(kl_max=0.5)
    assert len(pitfalls.detect_kl_explosion(steps, kl, thresholds=strict)) == 1


def test_kl_too_few_points_is_quiet():
    assert pitfalls.detect_kl_explosion([1, 2, 3], [5.0, 6.0, 7.0]) == []


# --- reward hacking -----------------------------------------------------------------


def reward_hacking_series(seed=0):
    reward_steps = steps_for(60)
    reward = noisy(np.linspace(0.0, 3.0, 60), scale=0.1, seed=seed)
    eval_steps = np.array([100, 200, 300, 400, 500, 600])
    accuracy = np.array([0.60, 0.66, 0.70, 0.67, 0.63, 0.58])
    return reward_steps, reward, eval_steps, accuracy


def test_reward_rising_while_heldout_accuracy_falls_is_reward_hacking():
    findings = pitfalls.detect_reward_hacking(*reward_hacking_series())
    assert len(findings) == 1
    finding = findings[0]
    assert finding.code == "reward_hacking"
    assert finding.metrics == ("reward", "eval_rewards/accuracies")
    assert (finding.step_start, finding.step_end) == (300, 600)
    assert finding.values["best_accuracy"] == pytest.approx(0.70)
    assert finding.values["accuracy_drop"] == pytest.approx(0.12)


def test_reward_rising_with_accuracy_rising_is_quiet():
    reward_steps, reward, eval_steps, _ = reward_hacking_series()
    accuracy = np.array([0.60, 0.63, 0.66, 0.68, 0.70, 0.71])
    assert (
        pitfalls.detect_reward_hacking(reward_steps, reward, eval_steps, accuracy) == []
    )


def test_accuracy_falling_while_reward_flat_is_not_reward_hacking():
    reward_steps, _, eval_steps, accuracy = reward_hacking_series()
    flat = noisy(np.zeros(60), scale=0.1, seed=4)
    assert (
        pitfalls.detect_reward_hacking(reward_steps, flat, eval_steps, accuracy) == []
    )


def test_reward_hacking_accuracy_drop_threshold_is_respected():
    series = reward_hacking_series()
    lenient = PitfallThresholds(accuracy_drop=0.15)
    assert pitfalls.detect_reward_hacking(*series, thresholds=lenient) == []


# --- length exploitation ------------------------------------------------------------


def test_completion_length_growing_steadily_is_length_exploitation():
    steps = steps_for(50)
    lengths = noisy(np.linspace(60, 200, 50), scale=8)
    findings = pitfalls.detect_length_growth(steps, lengths)
    assert [f.code for f in findings] == ["length_growth"]
    values = findings[0].values
    assert values["ratio"] > 2
    assert values["slope_per_step"] == pytest.approx(
        stats.theilslopes(lengths, steps).slope
    )


def test_completion_length_with_mild_growth_or_noise_is_quiet():
    steps = steps_for(50)
    mild = noisy(np.linspace(100, 125, 50), scale=3)  # 1.25x: healthy
    noise = noisy(np.full(50, 120.0), scale=30, seed=2)
    assert pitfalls.detect_length_growth(steps, mild) == []
    assert pitfalls.detect_length_growth(steps, noise) == []


def test_length_one_spike_is_not_steady_growth():
    steps = steps_for(40)
    lengths = np.full(40, 100.0)
    lengths[-3:] = 400.0  # ratio is large but there is no monotone trend
    lengths = noisy(lengths, scale=5)
    result = pitfalls.detect_length_growth(
        steps, lengths, thresholds=PitfallThresholds(trend_tau=0.6)
    )
    assert result == []


def test_length_ratio_threshold_is_respected():
    steps = steps_for(50)
    lengths = noisy(np.linspace(100, 140, 50), scale=2)  # 1.4x and steady
    assert pitfalls.detect_length_growth(steps, lengths) == []
    sensitive = PitfallThresholds(length_growth_ratio=1.2)
    assert len(pitfalls.detect_length_growth(steps, lengths, thresholds=sensitive)) == 1


# --- entropy collapse ---------------------------------------------------------------


def test_entropy_falling_to_a_fraction_is_mode_collapse():
    steps = steps_for(40)
    entropy = noisy(2.0 * np.exp(-np.arange(40) / 8), scale=0.02).clip(0.001)
    findings = pitfalls.detect_entropy_collapse(steps, entropy)
    assert [f.code for f in findings] == ["entropy_collapse"]
    assert findings[0].values["ratio"] < 0.25


def test_entropy_drifting_down_a_little_is_quiet():
    steps = steps_for(40)
    entropy = noisy(np.linspace(2.0, 1.6, 40), scale=0.05)
    assert pitfalls.detect_entropy_collapse(steps, entropy) == []


def test_entropy_collapse_ratio_threshold_is_respected():
    steps = steps_for(40)
    entropy = noisy(np.linspace(2.0, 0.8, 40), scale=0.02)  # late/early ~0.51
    assert pitfalls.detect_entropy_collapse(steps, entropy) == []
    sensitive = PitfallThresholds(entropy_collapse_ratio=0.6)
    found = pitfalls.detect_entropy_collapse(steps, entropy, thresholds=sensitive)
    assert len(found) == 1


# --- overfitting --------------------------------------------------------------------


def overfitting_series():
    train_steps = steps_for(60)
    train_loss = noisy(0.7 * np.exp(-np.arange(60) / 20) + 0.05, scale=0.01)
    eval_steps = np.array([100, 200, 300, 400, 500, 600])
    eval_loss = np.array([0.65, 0.55, 0.52, 0.56, 0.61, 0.66])
    return train_steps, train_loss, eval_steps, eval_loss


def test_eval_loss_rising_while_train_loss_falls_is_overfitting():
    findings = pitfalls.detect_overfitting(*overfitting_series())
    assert len(findings) == 1
    finding = findings[0]
    assert finding.code == "overfitting"
    assert finding.metrics == ("eval_loss", "loss")
    assert (finding.step_start, finding.step_end) == (300, 600)
    assert finding.values["relative_rise"] == pytest.approx(0.66 / 0.52 - 1)


def test_both_losses_falling_is_quiet():
    train_steps, train_loss, eval_steps, _ = overfitting_series()
    eval_loss = np.array([0.65, 0.55, 0.52, 0.50, 0.49, 0.485])
    assert (
        pitfalls.detect_overfitting(train_steps, train_loss, eval_steps, eval_loss)
        == []
    )


def test_eval_loss_rising_with_train_loss_rising_is_not_overfitting():
    train_steps, _, eval_steps, eval_loss = overfitting_series()
    train_loss = noisy(np.linspace(0.3, 0.6, 60), scale=0.01)
    assert (
        pitfalls.detect_overfitting(train_steps, train_loss, eval_steps, eval_loss)
        == []
    )


def test_overfitting_rise_threshold_is_respected():
    series = overfitting_series()
    lenient = PitfallThresholds(eval_loss_rise=0.3)
    assert pitfalls.detect_overfitting(*series, thresholds=lenient) == []


def test_overfitting_needs_enough_evaluations():
    train_steps, train_loss, _, _ = overfitting_series()
    assert (
        pitfalls.detect_overfitting(train_steps, train_loss, [300, 600], [0.5, 0.7])
        == []
    )


# --- DPO chosen log-probabilities ---------------------------------------------------


def test_dpo_chosen_logps_falling_while_margins_grow_is_flagged():
    steps = steps_for(40)
    chosen = noisy(np.linspace(-80, -95, 40), scale=0.5)
    margins = noisy(np.linspace(0.0, 4.0, 40), scale=0.1)
    findings = pitfalls.detect_chosen_logp_decline(steps, chosen, margins)
    assert [f.code for f in findings] == ["chosen_logp_decline"]
    assert findings[0].metrics == ("logps/chosen", "rewards/margins")
    assert findings[0].values["drop"] > 10


def test_dpo_chosen_logps_steady_while_margins_grow_is_quiet():
    steps = steps_for(40)
    chosen = noisy(np.full(40, -80.0), scale=0.5)
    margins = noisy(np.linspace(0.0, 4.0, 40), scale=0.1)
    assert pitfalls.detect_chosen_logp_decline(steps, chosen, margins) == []


def test_dpo_chosen_logps_falling_with_flat_margins_is_quiet():
    steps = steps_for(40)
    chosen = noisy(np.linspace(-80, -95, 40), scale=0.5)
    margins = noisy(np.zeros(40), scale=0.1)
    assert pitfalls.detect_chosen_logp_decline(steps, chosen, margins) == []


def test_dpo_logp_drop_threshold_is_respected():
    steps = steps_for(40)
    chosen = noisy(np.linspace(-80, -83, 40), scale=0.1)  # ~3 nats
    margins = noisy(np.linspace(0.0, 4.0, 40), scale=0.1)
    assert len(pitfalls.detect_chosen_logp_decline(steps, chosen, margins)) == 1
    lenient = PitfallThresholds(logp_drop=5.0)
    result = pitfalls.detect_chosen_logp_decline(
        steps, chosen, margins, thresholds=lenient
    )
    assert result == []


# --- thresholds and the run-level analysis ------------------------------------------


def test_thresholds_validate_themselves():
    with pytest.raises(ValueError, match="kl_max must be a positive number"):
        PitfallThresholds(kl_max=0)
    with pytest.raises(ValueError, match="trend_p_value must be in"):
        PitfallThresholds(trend_p_value=1.5)
    with pytest.raises(ValueError, match="min_points must be an integer >= 3"):
        PitfallThresholds(min_points=2)


def test_thresholds_from_mapping_coerce_strings_and_reject_unknown_names():
    built = PitfallThresholds.from_mapping({"kl_max": "2.5", "min_points": "8"})
    assert built.kl_max == 2.5 and built.min_points == 8
    with pytest.raises(ValueError, match="Unknown pitfall threshold 'kl_maximum'"):
        PitfallThresholds.from_mapping({"kl_maximum": 1})
    with pytest.raises(ValueError, match="must be a number"):
        PitfallThresholds.from_mapping({"kl_max": "high"})


def healthy_rl_series():
    steps = steps_for(50)
    return {
        "loss": (steps, noisy(np.zeros(50), scale=0.01)),
        "kl": (steps, noisy(np.linspace(0, 0.05, 50), scale=0.002).clip(0)),
        "reward": (steps, noisy(np.linspace(0, 0.5, 50), scale=0.05)),
        "completions/mean_length": (steps, noisy(np.full(50, 40.0), scale=3)),
        "entropy": (steps, noisy(np.linspace(1.5, 1.3, 50), scale=0.03)),
        "learning_rate": (steps, np.linspace(1e-5, 0, 50)),
    }


def test_analyze_run_is_quiet_on_a_healthy_rl_run():
    assert pitfalls.analyze_run(healthy_rl_series(), kind="rl") == []


def test_analyze_run_finds_each_rl_pitfall_in_a_bad_run():
    steps = steps_for(50)
    series = healthy_rl_series()
    series["kl"] = (steps, np.linspace(0.1, 4.0, 50))
    series["completions/mean_length"] = (
        steps,
        noisy(np.linspace(30, 120, 50), scale=2),
    )
    series["entropy"] = (steps, noisy(1.5 * np.exp(-np.arange(50) / 8), scale=0.01))
    found = {f.code for f in pitfalls.analyze_run(series, kind="rl")}
    assert found == {"kl_explosion", "length_growth", "entropy_collapse"}


def test_analyze_run_judges_dpo_metrics_on_shared_steps():
    steps = steps_for(40)
    series = {
        "loss": (steps, noisy(np.linspace(0.69, 0.2, 40), scale=0.01)),
        "logps/chosen": (steps, noisy(np.linspace(-80, -95, 40), scale=0.5)),
        # margins logged at one extra step the log-probs lack
        "rewards/margins": (
            np.append(steps, 999),
            np.append(noisy(np.linspace(0, 4, 40), scale=0.1), 5.0),
        ),
        "eval_loss": (np.array([100, 200, 300, 400]), np.array([0.6, 0.5, 0.55, 0.6])),
    }
    found = {f.code for f in pitfalls.analyze_run(series, kind="dpo")}
    assert found == {"chosen_logp_decline", "overfitting"}


def test_analyze_run_leaves_entropy_of_sft_alone():
    steps = steps_for(40)
    series = {"entropy": (steps, 5.0 * np.exp(-np.arange(40) / 5))}
    assert pitfalls.analyze_run(series, kind="sft") == []
    assert [f.code for f in pitfalls.analyze_run(series, kind="rl")] == [
        "entropy_collapse"
    ]


def test_findings_serialise_to_plain_json_types():
    import json

    finding = pitfalls.detect_length_growth(
        steps_for(50), noisy(np.linspace(60, 200, 50), scale=8)
    )[0]
    data = json.loads(json.dumps(finding.as_dict()))
    assert data["metrics"] == ["completions/mean_length"]
    assert set(data) == {f.name for f in dataclasses.fields(pitfalls.Finding)}
