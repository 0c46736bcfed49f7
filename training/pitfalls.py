"""Pitfall detectors over a run's metric series: pure functions, no Django, no I/O.

Each detector takes one or two series (`steps`, `values`: 1-D NumPy arrays, one entry
per logging step; NaN entries are dropped, except in KL where a NaN or infinite
value (the registry stores both as null) is itself a finding) and
returns a list of `Finding`: which metric(s) triggered it, over which step range, the
numbers that crossed which threshold, what it means and what to do. Every threshold
lives in `PitfallThresholds`, so a deployment or a single request can tune them.

Trends are judged with the Mann-Kendall test (Kendall's tau between step and value,
normal approximation with the tie correction; Mann 1945, Kendall 1975) and their size
with the Theil-Sen slope (median of pairwise slopes; Sen 1968), both robust to the
noise of per-batch metrics. Windows ("early", "late") are the first and last
`window_fraction` of the points.

Detectors (TRL metric names in brackets):
- `detect_kl_explosion`: KL to the reference [kl] above a ceiling, non-finite, or
  multiplying from one window to the next.
- `detect_reward_hacking`: reward [reward, rewards/margins, margin] rising while the
  held-out preference accuracy [eval_heldout_accuracy (RL, see training.heldout),
  eval_rewards/accuracies, eval_accuracy] falls.
- `detect_length_growth`: completion length [completions/mean_length] growing
  steadily (significant positive trend and a large late/early ratio).
- `detect_entropy_collapse`: token entropy [entropy] falling to a fraction of its
  early level (mode collapse).
- `detect_overfitting`: eval loss [eval_loss] rising from its best while the train
  loss [loss] keeps falling.
- `detect_chosen_logp_decline`: DPO log-probability of chosen answers [logps/chosen]
  falling while the margins [rewards/margins] grow (likelihood displacement).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

WARNING = "warning"
CRITICAL = "critical"

THRESHOLD_NOT_POSITIVE = "{name} must be a positive number, got {value!r}."
THRESHOLD_NOT_FRACTION = "{name} must be in (0, 1), got {value!r}."
THRESHOLD_TOO_FEW_POINTS = "{name} must be an integer >= 3, got {value!r}."
THRESHOLD_UNKNOWN = "Unknown pitfall threshold {name!r}; known: {known}."
SERIES_SHAPE_MISMATCH = "steps and values must be 1-D arrays of the same length."

# Above this many points, trends are computed on block means (the tests are O(n^2)).
MAX_TREND_POINTS = 1000


@dataclass(frozen=True)
class PitfallThresholds:
    """Every knob of the detectors; defaults suit TRL's per-token metrics."""

    min_points: int = field(
        default=6,
        metadata={"help": "Points a per-step series needs before any trend is judged."},
    )
    min_eval_points: int = field(
        default=3,
        metadata={"help": "Evaluations needed before held-out metrics are judged."},
    )
    window_fraction: float = field(
        default=0.25,
        metadata={"help": "Share of the points in the early and late windows."},
    )
    trend_p_value: float = field(
        default=0.01,
        metadata={"help": "Mann-Kendall p-value below which a trend is significant."},
    )
    trend_tau: float = field(
        default=0.5,
        metadata={"help": "|Kendall tau| a trend needs to count as steady."},
    )
    kl_max: float = field(
        default=1.0,
        metadata={
            "help": "Mean per-token KL (nats) of the late window that is too far."
        },
    )
    kl_floor: float = field(
        default=0.1,
        metadata={"help": "KL below which growth is not alarming however fast."},
    )
    kl_growth_factor: float = field(
        default=4.0,
        metadata={
            "help": "Late-window KL over the window before it that is explosive."
        },
    )
    accuracy_drop: float = field(
        default=0.05,
        metadata={"help": "Fall of held-out accuracy from its best (absolute, 0-1)."},
    )
    length_growth_ratio: float = field(
        default=1.5,
        metadata={"help": "Late/early mean completion length that is exploitation."},
    )
    entropy_collapse_ratio: float = field(
        default=0.25,
        metadata={"help": "Late/early mean entropy at or below which it collapsed."},
    )
    eval_loss_rise: float = field(
        default=0.05,
        metadata={"help": "Relative rise of eval loss above its best (0.05 = 5%)."},
    )
    logp_drop: float = field(
        default=2.0,
        metadata={"help": "Fall (nats) of mean chosen log-probability, early to late."},
    )

    def __post_init__(self) -> None:
        for name in ("min_points", "min_eval_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 3:
                raise ValueError(
                    THRESHOLD_TOO_FEW_POINTS.format(name=name, value=value)
                )
        for name in ("window_fraction", "trend_p_value", "trend_tau", "accuracy_drop"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < 1:
                raise ValueError(THRESHOLD_NOT_FRACTION.format(name=name, value=value))
        for name in (
            "kl_max",
            "kl_floor",
            "kl_growth_factor",
            "length_growth_ratio",
            "entropy_collapse_ratio",
            "eval_loss_rise",
            "logp_drop",
        ):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ValueError(THRESHOLD_NOT_POSITIVE.format(name=name, value=value))

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> PitfallThresholds:
        """Build thresholds from `overrides` (unknown names and bad values raise)."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, raw in overrides.items():
            if name not in known:
                raise ValueError(
                    THRESHOLD_UNKNOWN.format(name=name, known=", ".join(sorted(known)))
                )
            values[name] = _coerce(name, raw, integer=name.startswith("min_"))
        return cls(**values)


@dataclass(frozen=True)
class Finding:
    """One pitfall: what triggered it, where, and what to do about it."""

    code: str
    title: str
    severity: str
    metrics: tuple[str, ...]
    step_start: int
    step_end: int
    values: dict[str, float]
    explanation: str
    advice: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types; a non-finite number (a ratio over zero) becomes None."""
        data = asdict(self)
        data["metrics"] = list(self.metrics)
        data["values"] = {
            key: value if math.isfinite(value) else None
            for key, value in self.values.items()
        }
        return data


@dataclass(frozen=True)
class Trend:
    """Mann-Kendall tau (tau-b) and two-sided p-value, Theil-Sen slope per step."""

    tau: float
    p_value: float
    slope: float


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _coerce(name: str, raw: Any, *, integer: bool) -> int | float:
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {raw!r}.") from None
    if integer:
        if not number.is_integer():
            raise ValueError(THRESHOLD_TOO_FEW_POINTS.format(name=name, value=raw))
        return int(number)
    return number


def clean_series(steps: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (steps, values) as float arrays sorted by step, NaN values dropped."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    if steps.ndim != 1 or steps.shape != values.shape:
        raise ValueError(SERIES_SHAPE_MISMATCH)
    keep = ~np.isnan(values)
    order = np.argsort(steps[keep], kind="stable")
    return steps[keep][order], values[keep][order]


def _block_means(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive blocks so that at most MAX_TREND_POINTS remain."""
    if x.size <= MAX_TREND_POINTS:
        return x, y
    blocks = np.array_split(np.arange(x.size), MAX_TREND_POINTS)
    return (
        np.array([x[b].mean() for b in blocks]),
        np.array([y[b].mean() for b in blocks]),
    )


def trend(steps: np.ndarray, values: np.ndarray) -> Trend:
    """Mann-Kendall trend test and Theil-Sen slope of `values` against `steps`.

    tau is Kendall's tau-b; the p-value is two-sided from the normal approximation
    of S with the tie correction of its variance (no continuity correction), which
    is what `scipy.stats.kendalltau(method="asymptotic")` computes when the steps
    are distinct. The slope is the median of pairwise slopes (Sen 1968).
    """
    x, y = _block_means(*clean_series(steps, values))
    n = x.size
    if n < 3:
        return Trend(tau=0.0, p_value=1.0, slope=0.0)
    i, j = np.triu_indices(n, k=1)
    dx = np.sign(x[j] - x[i])
    dy = np.sign(y[j] - y[i])
    s = float(np.sum(dx * dy))
    n0 = n * (n - 1) / 2
    _, x_ties = np.unique(x, return_counts=True)
    _, y_ties = np.unique(y, return_counts=True)
    n1 = float(np.sum(x_ties * (x_ties - 1)) / 2)
    n2 = float(np.sum(y_ties * (y_ties - 1)) / 2)
    denominator = math.sqrt((n0 - n1) * (n0 - n2))
    tau = s / denominator if denominator > 0 else 0.0
    variance = (
        n * (n - 1) * (2 * n + 5)
        - float(np.sum(x_ties * (x_ties - 1) * (2 * x_ties + 5)))
        - float(np.sum(y_ties * (y_ties - 1) * (2 * y_ties + 5)))
    ) / 18 + (
        float(np.sum(x_ties * (x_ties - 1) * (x_ties - 2)))
        * float(np.sum(y_ties * (y_ties - 1) * (y_ties - 2)))
        / (9 * n * (n - 1) * (n - 2))
        + float(np.sum(x_ties * (x_ties - 1)))
        * float(np.sum(y_ties * (y_ties - 1)))
        / (2 * n * (n - 1))
    )
    p_value = math.erfc(abs(s) / math.sqrt(2 * variance)) if variance > 0 else 1.0
    distinct = x[j] != x[i]
    slopes = (y[j] - y[i])[distinct] / (x[j] - x[i])[distinct]
    slope = float(np.median(slopes)) if slopes.size else 0.0
    return Trend(tau=tau, p_value=p_value, slope=slope)


def _windows(values: np.ndarray, fraction: float) -> tuple[slice, slice]:
    size = max(1, int(round(values.size * fraction)))
    return slice(0, size), slice(values.size - size, values.size)


def _steady(t: Trend, thresholds: PitfallThresholds, sign: int) -> bool:
    return sign * t.tau >= thresholds.trend_tau and t.p_value < thresholds.trend_p_value


def _times(ratio: float) -> str:
    return f"{ratio:.3g}x" if math.isfinite(ratio) else "from zero"


def _step(value: float) -> int:
    return int(round(value))


def detect_kl_explosion(
    steps: Any,
    kl: Any,
    *,
    metric: str = "kl",
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Flag KL to the reference that is non-finite, above a ceiling, or multiplying.

    Three triggers, most severe first: a NaN or infinite KL (the policy diverged;
    the registry stores non-finite numbers as null, read back as NaN); a late
    window whose mean exceeds `kl_max`; a late window whose mean is at least
    `kl_growth_factor` times the window before it while above `kl_floor`
    (accelerating growth, the start of an explosion).
    """
    raw_steps = np.asarray(steps, dtype=float)
    raw_values = np.asarray(kl, dtype=float)
    if raw_steps.shape != raw_values.shape or raw_steps.ndim != 1:
        raise ValueError(SERIES_SHAPE_MISMATCH)
    advice = (
        "Raise the KL coefficient (beta), lower the learning rate, or stop at the "
        "last checkpoint before the rise; check generations for degenerate text."
    )
    infinite = ~np.isfinite(raw_values)
    if infinite.any():
        first = float(np.min(raw_steps[infinite]))
        return [
            Finding(
                code="kl_explosion",
                title="KL to the reference exploded",
                severity=CRITICAL,
                metrics=(metric,),
                step_start=_step(first),
                step_end=_step(float(np.max(raw_steps))),
                values={"first_non_finite_step": first},
                explanation=(
                    f"{metric} became NaN or infinite at step {_step(first)}: the "
                    "policy diverged from the reference model."
                ),
                advice=advice,
            )
        ]
    x, y = clean_series(raw_steps, raw_values)
    if x.size < thresholds.min_points:
        return []
    _, late = _windows(y, thresholds.window_fraction)
    late_mean = float(y[late].mean())
    if late_mean > thresholds.kl_max:
        above = np.flatnonzero(y > thresholds.kl_max)
        return [
            Finding(
                code="kl_explosion",
                title="KL to the reference exploded",
                severity=CRITICAL,
                metrics=(metric,),
                step_start=_step(x[above[0]]),
                step_end=_step(x[-1]),
                values={
                    "late_mean": late_mean,
                    "max": float(y.max()),
                    "kl_max": thresholds.kl_max,
                },
                explanation=(
                    f"{metric} averaged {late_mean:.3g} nats over the last "
                    f"{late.stop - late.start} logged steps, above the ceiling of "
                    f"{thresholds.kl_max:g}: the policy has moved far from the "
                    "reference, where the reward model is no longer trustworthy."
                ),
                advice=advice,
            )
        ]
    size = late.stop - late.start
    if y.size < 2 * size:
        return []
    before = slice(late.start - size, late.start)
    before_mean = float(y[before].mean())
    ratio = late_mean / before_mean if before_mean > 0 else math.inf
    if late_mean >= thresholds.kl_floor and ratio >= thresholds.kl_growth_factor:
        return [
            Finding(
                code="kl_explosion",
                title="KL to the reference is exploding",
                severity=WARNING,
                metrics=(metric,),
                step_start=_step(x[before.start]),
                step_end=_step(x[-1]),
                values={
                    "previous_window_mean": before_mean,
                    "late_mean": late_mean,
                    "ratio": ratio,
                    "kl_growth_factor": thresholds.kl_growth_factor,
                },
                explanation=(
                    f"{metric} grew {_times(ratio)} from one window of {size} logged "
                    f"steps to the next ({before_mean:.3g} -> {late_mean:.3g} nats), "
                    f"faster than the {thresholds.kl_growth_factor:g}x alarm: growth "
                    "is accelerating."
                ),
                advice=advice,
            )
        ]
    return []


def detect_reward_hacking(
    reward_steps: Any,
    reward: Any,
    accuracy_steps: Any,
    accuracy: Any,
    *,
    reward_metric: str = "reward",
    accuracy_metric: str = "eval_rewards/accuracies",
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Flag a reward that keeps rising after the held-out preference accuracy peaked.

    The held-out accuracy must fall at least `accuracy_drop` below its best, and
    the reward over the steps from that best to the last evaluation must show a
    steady rise (Mann-Kendall: tau >= `trend_tau`, p < `trend_p_value`).
    """
    rx, ry = clean_series(reward_steps, reward)
    ax, ay = clean_series(accuracy_steps, accuracy)
    if ax.size < thresholds.min_eval_points:
        return []
    best = int(np.argmax(ay))
    drop = float(ay[best] - ay[-1])
    if best == ay.size - 1 or drop < thresholds.accuracy_drop:
        return []
    inside = (rx >= ax[best]) & (rx <= ax[-1])
    if int(inside.sum()) < thresholds.min_points:
        return []
    rising = trend(rx[inside], ry[inside])
    if not _steady(rising, thresholds, +1):
        return []
    return [
        Finding(
            code="reward_hacking",
            title="Reward rising while held-out accuracy falls (reward hacking)",
            severity=CRITICAL,
            metrics=(reward_metric, accuracy_metric),
            step_start=_step(ax[best]),
            step_end=_step(ax[-1]),
            values={
                "best_accuracy": float(ay[best]),
                "last_accuracy": float(ay[-1]),
                "accuracy_drop": drop,
                "reward_start": float(ry[inside][0]),
                "reward_end": float(ry[inside][-1]),
                "reward_tau": rising.tau,
                "reward_p_value": rising.p_value,
            },
            explanation=(
                f"{accuracy_metric} fell from {ay[best]:.3f} (step {_step(ax[best])}) "
                f"to {ay[-1]:.3f} (step {_step(ax[-1])}), {drop:.3f} below its best, "
                f"while {reward_metric} kept rising (Kendall tau {rising.tau:.2f}, "
                f"p={rising.p_value:.2g}): the model is exploiting the reward, not "
                "getting better at what people prefer."
            ),
            advice=(
                "Use the checkpoint from the accuracy peak; raise the KL coefficient, "
                "retrain the reward model on fresh comparisons of the policy's own "
                "outputs, and read a sample of generations."
            ),
        )
    ]


def detect_length_growth(
    steps: Any,
    lengths: Any,
    *,
    metric: str = "completions/mean_length",
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Flag completion length growing steadily (length exploitation).

    Both must hold: a significant positive Mann-Kendall trend (tau >= `trend_tau`,
    p < `trend_p_value`) and a late-window mean at least `length_growth_ratio`
    times the early-window mean.
    """
    x, y = clean_series(steps, lengths)
    if x.size < thresholds.min_points:
        return []
    early, late = _windows(y, thresholds.window_fraction)
    early_mean, late_mean = float(y[early].mean()), float(y[late].mean())
    ratio = late_mean / early_mean if early_mean > 0 else math.inf
    growing = trend(x, y)
    if ratio < thresholds.length_growth_ratio or not _steady(growing, thresholds, +1):
        return []
    return [
        Finding(
            code="length_growth",
            title="Completion length growing steadily (length exploitation)",
            severity=WARNING,
            metrics=(metric,),
            step_start=_step(x[0]),
            step_end=_step(x[-1]),
            values={
                "early_mean": early_mean,
                "late_mean": late_mean,
                "ratio": ratio,
                "slope_per_step": growing.slope,
                "tau": growing.tau,
                "p_value": growing.p_value,
            },
            explanation=(
                f"{metric} grew from {early_mean:.1f} to {late_mean:.1f} tokens "
                f"({_times(ratio)}; +{growing.slope:.3g} per step, Kendall tau "
                f"{growing.tau:.2f}, p={growing.p_value:.2g}): the policy may be "
                "earning reward for length rather than quality."
            ),
            advice=(
                "Compare rewards at equal length; add a length penalty or "
                "length-normalised reward, cap max_completion_length, and check the "
                "preference data for a length bias in the chosen answers."
            ),
        )
    ]


def detect_entropy_collapse(
    steps: Any,
    entropy: Any,
    *,
    metric: str = "entropy",
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Flag token entropy falling to `entropy_collapse_ratio` of its early level.

    The fall must also be a steady downward trend (Mann-Kendall), so one noisy low
    batch does not count as a collapse.
    """
    x, y = clean_series(steps, entropy)
    if x.size < thresholds.min_points:
        return []
    early, late = _windows(y, thresholds.window_fraction)
    early_mean, late_mean = float(y[early].mean()), float(y[late].mean())
    if early_mean <= 0:
        return []
    ratio = late_mean / early_mean
    falling = trend(x, y)
    if ratio > thresholds.entropy_collapse_ratio or not _steady(
        falling, thresholds, -1
    ):
        return []
    return [
        Finding(
            code="entropy_collapse",
            title="Entropy collapsing (mode collapse)",
            severity=WARNING,
            metrics=(metric,),
            step_start=_step(x[0]),
            step_end=_step(x[-1]),
            values={
                "early_mean": early_mean,
                "late_mean": late_mean,
                "ratio": ratio,
                "tau": falling.tau,
                "p_value": falling.p_value,
            },
            explanation=(
                f"{metric} fell from {early_mean:.3g} to {late_mean:.3g} nats per "
                f"token ({ratio:.0%} of its early level, Kendall tau "
                f"{falling.tau:.2f}): the policy is becoming near-deterministic and "
                "may give the same answer to everything."
            ),
            advice=(
                "Raise the KL coefficient or the sampling temperature, lower the "
                "learning rate, and check the diversity of generations."
            ),
        )
    ]


def detect_overfitting(
    train_steps: Any,
    train_loss: Any,
    eval_steps: Any,
    eval_loss: Any,
    *,
    train_metric: str = "loss",
    eval_metric: str = "eval_loss",
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Flag eval loss rising `eval_loss_rise` above its best while train loss falls.

    The train loss over the steps from the best evaluation to the last one must
    show a steady fall (Mann-Kendall: tau <= -`trend_tau`, p < `trend_p_value`).
    """
    tx, ty = clean_series(train_steps, train_loss)
    ex, ey = clean_series(eval_steps, eval_loss)
    if ex.size < thresholds.min_eval_points:
        return []
    best = int(np.argmin(ey))
    if best == ey.size - 1:
        return []
    rise = (ey[-1] - ey[best]) / abs(ey[best]) if ey[best] != 0 else math.inf
    if rise < thresholds.eval_loss_rise:
        return []
    inside = (tx >= ex[best]) & (tx <= ex[-1])
    if int(inside.sum()) < thresholds.min_points:
        return []
    falling = trend(tx[inside], ty[inside])
    if not _steady(falling, thresholds, -1):
        return []
    return [
        Finding(
            code="overfitting",
            title="Eval loss rising while train loss falls (overfitting)",
            severity=WARNING,
            metrics=(eval_metric, train_metric),
            step_start=_step(ex[best]),
            step_end=_step(ex[-1]),
            values={
                "best_eval_loss": float(ey[best]),
                "last_eval_loss": float(ey[-1]),
                "relative_rise": float(rise),
                "train_loss_start": float(ty[inside][0]),
                "train_loss_end": float(ty[inside][-1]),
                "train_tau": falling.tau,
            },
            explanation=(
                f"{eval_metric} rose from its best {ey[best]:.4g} (step "
                f"{_step(ex[best])}) to {ey[-1]:.4g} (step {_step(ex[-1])}, "
                f"+{rise:.1%}) while {train_metric} kept falling (Kendall tau "
                f"{falling.tau:.2f}): the model is memorising the training pairs."
            ),
            advice=(
                "Use the checkpoint at the best eval loss (load_best_model_at_end), "
                "train fewer epochs or with a lower learning rate, add data, or "
                "regularise (LoRA rank, dropout, weight decay)."
            ),
        )
    ]


def detect_chosen_logp_decline(
    steps: Any,
    chosen_logps: Any,
    margins: Any,
    *,
    logp_metric: str = "logps/chosen",
    margin_metric: str = "rewards/margins",
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Flag DPO lowering the likelihood of chosen answers while margins grow.

    The chosen log-probability must fall steadily (Mann-Kendall) by at least
    `logp_drop` nats from the early to the late window, and the margins must rise
    steadily: DPO is widening the gap by pushing both answers down (likelihood
    displacement; Pal et al. 2024, Razin et al. 2024). `chosen_logps` and
    `margins` share `steps`.
    """
    x, logp = clean_series(steps, chosen_logps)
    mx, margin = clean_series(steps, margins)
    if x.size < thresholds.min_points or mx.size < thresholds.min_points:
        return []
    early, late = _windows(logp, thresholds.window_fraction)
    drop = float(logp[early].mean() - logp[late].mean())
    falling, growing = trend(x, logp), trend(mx, margin)
    if (
        drop < thresholds.logp_drop
        or not _steady(falling, thresholds, -1)
        or not _steady(growing, thresholds, +1)
    ):
        return []
    return [
        Finding(
            code="chosen_logp_decline",
            title="Chosen log-probabilities falling while margins grow",
            severity=WARNING,
            metrics=(logp_metric, margin_metric),
            step_start=_step(x[0]),
            step_end=_step(x[-1]),
            values={
                "chosen_logp_early": float(logp[early].mean()),
                "chosen_logp_late": float(logp[late].mean()),
                "drop": drop,
                "margin_start": float(margin[0]),
                "margin_end": float(margin[-1]),
                "logp_tau": falling.tau,
                "margin_tau": growing.tau,
            },
            explanation=(
                f"{logp_metric} fell by {drop:.3g} nats (Kendall tau "
                f"{falling.tau:.2f}) while {margin_metric} grew from "
                f"{margin[0]:.3g} to {margin[-1]:.3g}: DPO is widening the gap by "
                "making the preferred answers less likely too, which often "
                "degrades generations."
            ),
            advice=(
                "Raise beta or lower the learning rate, try the IPO loss, add an SFT "
                "term on the chosen answers (TRL's loss_type ['sigmoid', 'sft']), or "
                "start from a better SFT model."
            ),
        )
    ]


Series = tuple[Any, Any]

KL_METRICS = ("kl", "objective/kl")
RL_REWARD_METRICS = ("reward", "rewards/mean", "objective/scores")
# eval_heldout_accuracy: an RL policy's implicit preference accuracy on held-out
# pairs (training.heldout); DPO and reward models log their own.
HELDOUT_ACCURACY_METRICS = (
    "eval_heldout_accuracy",
    "eval_rewards/accuracies",
    "eval_accuracy",
)
LENGTH_METRICS = ("completions/mean_length", "completion_length")
REWARD_BY_KIND = {
    "rl": RL_REWARD_METRICS,
    "dpo": ("rewards/margins",),
    "reward": ("margin", "mean_reward"),
}
ENTROPY_KINDS = ("rl", "dpo")


def _first(series: Mapping[str, Series], names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in series), None)


def analyze_run(
    series: Mapping[str, Series],
    *,
    kind: str,
    thresholds: PitfallThresholds = PitfallThresholds(),  # noqa: B008
) -> list[Finding]:
    """Run every detector that applies to a run of `kind` on its metric `series`.

    `series` maps a metric name as the trainer logs it (eval metrics keep their
    `eval_` prefix) to its `(steps, values)`. Entropy collapse is judged for RL and
    DPO only: SFT and reward training lower entropy by design.
    """
    findings: list[Finding] = []
    if name := _first(series, KL_METRICS):
        findings += detect_kl_explosion(
            *series[name], metric=name, thresholds=thresholds
        )
    reward = _first(series, REWARD_BY_KIND.get(kind, ()))
    accuracy = _first(series, HELDOUT_ACCURACY_METRICS)
    if reward and accuracy:
        findings += detect_reward_hacking(
            *series[reward],
            *series[accuracy],
            reward_metric=reward,
            accuracy_metric=accuracy,
            thresholds=thresholds,
        )
    if name := _first(series, LENGTH_METRICS):
        findings += detect_length_growth(
            *series[name], metric=name, thresholds=thresholds
        )
    if kind in ENTROPY_KINDS and "entropy" in series:
        findings += detect_entropy_collapse(
            *series["entropy"], metric="entropy", thresholds=thresholds
        )
    if "loss" in series and "eval_loss" in series:
        findings += detect_overfitting(
            *series["loss"], *series["eval_loss"], thresholds=thresholds
        )
    if kind == "dpo" and "logps/chosen" in series and "rewards/margins" in series:
        findings += _chosen_logp_on_shared_steps(series, thresholds)
    return findings


def _chosen_logp_on_shared_steps(
    series: Mapping[str, Series], thresholds: PitfallThresholds
) -> list[Finding]:
    lx, ly = clean_series(*series["logps/chosen"])
    mx, my = clean_series(*series["rewards/margins"])
    shared, li, mi = np.intersect1d(lx, mx, return_indices=True)
    return detect_chosen_logp_decline(shared, ly[li], my[mi], thresholds=thresholds)
