"""The rule the SIMULATED demo annotators follow: a seeded, noisy model ranking.

Pure functions, no Django: the loader feeds in which response is better and by how
much, and submits the answer through the real queue services.
Simulated judgments exist only so a fresh demo has dashboards and exports with data;
they are never presented as human work (the accounts are named `sim-annotator-N`).
"""

import random
from dataclasses import dataclass

FIRST, SECOND, TIE, BOTH_BAD = "first", "second", "tie", "both_bad"


@dataclass(frozen=True)
class SimulatedAnnotator:
    """A simulated annotator's habits.

    `noise`: probability of answering at random instead of by the rule.
    `left_bias`: probability that a random answer is the left response (position bias
    shows up in the dashboards). `coverage`: share of the simulated work rounds this
    annotator takes part in (below 1 leaves comparisons one judgment short of the
    target); only annotators with full coverage fill in per-aspect choices.
    `mean_seconds`: typical time spent on a task.
    """

    username: str
    noise: float
    left_bias: float
    coverage: float
    mean_seconds: float


SIMULATED_ANNOTATORS = (
    SimulatedAnnotator(
        "sim-annotator-1", noise=0.08, left_bias=0.5, coverage=1.0, mean_seconds=45
    ),
    SimulatedAnnotator(
        "sim-annotator-2", noise=0.18, left_bias=0.5, coverage=1.0, mean_seconds=30
    ),
    SimulatedAnnotator(
        "sim-annotator-3", noise=0.35, left_bias=0.75, coverage=0.65, mean_seconds=15
    ),
)


@dataclass(frozen=True)
class SimulatedAnswer:
    choice: str  # canonical: first / second / tie / both_bad
    strength: int | None


def simulated_answer(
    rng: random.Random,
    *,
    annotator: SimulatedAnnotator,
    better: str | None,
    gap: int,
    both_weak: bool,
    left_is_first: bool,
) -> SimulatedAnswer:
    """Answer one comparison by the ranking rule, with the annotator's noise.

    `better` is the canonical side of the better response (`first`/`second`), or
    None when the rule has no preference; `gap` is the rank difference (0-3);
    `both_weak` marks a pair of two low-ranked responses (a "both bad" candidate).
    A noisy answer is left/right by `left_bias`, or a tie one time in six.
    """
    left, right = (FIRST, SECOND) if left_is_first else (SECOND, FIRST)
    if rng.random() < annotator.noise:
        draw = rng.random()
        if draw < 1 / 6:
            return SimulatedAnswer(TIE, None)
        side = left if draw < 1 / 6 + (5 / 6) * annotator.left_bias else right
        return SimulatedAnswer(side, 1)
    if both_weak and rng.random() < 0.3:
        return SimulatedAnswer(BOTH_BAD, None)
    if better is None or (gap <= 1 and rng.random() < 0.15):
        return SimulatedAnswer(TIE, None)
    return SimulatedAnswer(better, min(max(gap, 1), 3))
