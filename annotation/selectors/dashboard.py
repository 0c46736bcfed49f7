"""Reads behind the researcher dashboard and the annotators' own progress.

The numbers come from one pass over the project's human judgments (a `values_list`,
no model instances) handed to the pure functions in `annotation.stats`; prior labels
from imports are never counted as anybody's judgment.
"""

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from annotation import stats
from annotation.models import Assignment, Comparison, Judgment, Project

KAPPA_MIN_OVERLAP = 10
PER_DAY_WINDOW_DAYS = 14


@dataclass(frozen=True)
class AnnotatorRow:
    user_id: int
    username: str
    judgments: int
    median_seconds: float
    gold: stats.Proportion
    majority: stats.Proportion
    left: stats.Proportion
    tie: stats.Proportion
    both_bad: stats.Proportion


@dataclass(frozen=True)
class KappaRow:
    annotator_a: str
    annotator_b: str
    overlap: int
    kappa: float


@dataclass(frozen=True)
class Dashboard:
    """Progress counts cover regular comparisons (gold ones have no target); the
    statistics cover every human judgment, gold included."""

    comparisons: int
    complete: int
    gold_comparisons: int
    target_per_comparison: int
    judgments: int
    judgments_toward_target: int
    judgments_target: int
    leased_now: int
    per_day: list[tuple[dt.date, int]]
    annotators: list[AnnotatorRow]
    alpha: float
    alpha_units: int
    kappas: list[KappaRow]
    kappa_min_overlap: int
    left: stats.Proportion
    tie: stats.Proportion
    both_bad: stats.Proportion
    generated_at: dt.datetime
    prior_labels: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def complete_share(self) -> float:
        return self.complete / self.comparisons if self.comparisons else 0.0

    @property
    def per_day_max(self) -> int:
        return max((n for _, n in self.per_day), default=0) or 1

    @property
    def judgments_share(self) -> float:
        if not self.judgments_target:
            return 0.0
        return self.judgments_toward_target / self.judgments_target


def _judgment_arrays(project: Project) -> dict[str, np.ndarray]:
    rows = list(
        Judgment.objects.filter(
            comparison__project=project, origin=Judgment.Origin.HUMAN
        ).values_list(
            "comparison_id",
            "annotator_id",
            "choice",
            "left_is_first",
            "duration_ms",
            "comparison__gold_choice",
        )
    )
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return {
            "units": empty,
            "coders": empty,
            "values": empty,
            "left_is_first": np.zeros(0, dtype=bool),
            "has_position": np.zeros(0, dtype=bool),
            "seconds": np.zeros(0),
            "gold": empty,
        }
    units, coders, choices, left_is_first, duration_ms, gold = zip(*rows, strict=True)
    return {
        "units": np.array(units, dtype=np.int64),
        "coders": np.array(coders, dtype=np.int64),
        "values": stats.encode_choices(choices),
        # A judgment without a recorded position is left out of the left rate.
        "left_is_first": np.array([bool(v) for v in left_is_first]),
        "has_position": np.array([v is not None for v in left_is_first]),
        "seconds": np.array(
            [np.nan if d is None else d / 1000 for d in duration_ms], dtype=float
        ),
        # -1 marks "not a gold comparison".
        "gold": np.array(
            [-1 if g is None else stats.CHOICE_CODES[g] for g in gold], dtype=np.int64
        ),
    }


def _left_rate(data: dict[str, np.ndarray], mask: np.ndarray) -> stats.Proportion:
    mask = mask & data["has_position"]
    return stats.left_choice_rate(data["values"][mask], data["left_is_first"][mask])


def _annotator_rows(data: dict[str, np.ndarray]) -> list[AnnotatorRow]:
    usernames = dict(
        get_user_model()
        .objects.filter(pk__in=set(data["coders"].tolist()))
        .values_list("pk", "username")
    )
    agrees = stats.agreement_with_majority(data["units"], data["values"])
    keys, medians = stats.grouped_median(data["coders"], data["seconds"])
    median_by_coder = dict(zip(keys.tolist(), medians.tolist(), strict=True))
    rows = []
    for coder in sorted(usernames, key=lambda pk: usernames[pk]):
        mine = data["coders"] == coder
        gold_mask = mine & (data["gold"] >= 0)
        defined = mine & ~np.isnan(agrees)
        rows.append(
            AnnotatorRow(
                user_id=coder,
                username=usernames[coder],
                judgments=int(mine.sum()),
                median_seconds=median_by_coder.get(coder, float("nan")),
                gold=stats.gold_accuracy(
                    data["values"][gold_mask], data["gold"][gold_mask]
                ),
                majority=stats.proportion(
                    int(agrees[defined].sum()), int(defined.sum())
                ),
                left=_left_rate(data, mine),
                tie=stats.choice_rate(data["values"][mine], stats.TIE),
                both_bad=stats.choice_rate(data["values"][mine], stats.BOTH_BAD),
            )
        )
    return rows


def _kappa_rows(data: dict[str, np.ndarray], usernames: dict) -> list[KappaRow]:
    pairs = stats.pairwise_cohen_kappa(
        data["units"], data["coders"], data["values"], min_overlap=KAPPA_MIN_OVERLAP
    )
    return [
        KappaRow(usernames[a], usernames[b], int(n), float(k))
        for a, b, n, k in zip(
            pairs.coder_a.tolist(),
            pairs.coder_b.tolist(),
            pairs.n.tolist(),
            pairs.kappa.tolist(),
            strict=True,
        )
    ]


def judgments_per_day(
    *, project: Project, days: int = PER_DAY_WINDOW_DAYS, now=None
) -> list[tuple[dt.date, int]]:
    """Human judgments per UTC day over the last `days` days, zero days included."""
    today = timezone.localdate(now or timezone.now())
    first = today - dt.timedelta(days=days - 1)
    counts = dict(
        Judgment.objects.filter(
            comparison__project=project,
            origin=Judgment.Origin.HUMAN,
            submitted_at__date__gte=first,
        )
        .annotate(day=TruncDate("submitted_at"))
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    return [
        (first + dt.timedelta(days=i), counts.get(first + dt.timedelta(days=i), 0))
        for i in range(days)
    ]


def project_dashboard(*, project: Project, now=None) -> Dashboard:
    """Everything the researcher dashboard shows, computed now."""
    now = now or timezone.now()
    regular = Q(gold_choice__isnull=True)
    comparison_counts = Comparison.objects.filter(project=project).aggregate(
        total=Count("id", filter=regular),
        complete=Count(
            "id", filter=regular & Q(judgment_count__gte=project.target_judgments)
        ),
        judged=Sum("judgment_count", filter=regular, default=0),
        gold=Count("id", filter=~regular),
    )
    data = _judgment_arrays(project)
    rows = _annotator_rows(data)
    usernames = {row.user_id: row.username for row in rows}
    everyone = np.ones(data["values"].size, dtype=bool)
    _, per_unit = np.unique(data["units"], return_counts=True)
    return Dashboard(
        comparisons=comparison_counts["total"],
        complete=comparison_counts["complete"],
        gold_comparisons=comparison_counts["gold"],
        target_per_comparison=project.target_judgments,
        judgments=int(data["values"].size),
        judgments_toward_target=comparison_counts["judged"],
        judgments_target=comparison_counts["total"] * project.target_judgments,
        leased_now=Assignment.objects.filter(
            comparison__project=project,
            status=Assignment.Status.LEASED,
            expires_at__gt=now,
        ).count(),
        per_day=judgments_per_day(project=project, now=now),
        annotators=rows,
        alpha=stats.krippendorff_alpha_nominal(data["units"], data["values"]),
        alpha_units=int((per_unit >= 2).sum()),
        kappas=_kappa_rows(data, usernames),
        kappa_min_overlap=KAPPA_MIN_OVERLAP,
        left=_left_rate(data, everyone),
        tie=stats.choice_rate(data["values"], stats.TIE),
        both_bad=stats.choice_rate(data["values"], stats.BOTH_BAD),
        generated_at=now,
        prior_labels=Judgment.objects.filter(
            comparison__project=project, origin=Judgment.Origin.PRIOR
        ).count(),
    )


@dataclass(frozen=True)
class OwnProgress:
    judged: int
    skipped: int
    remaining: int | None


def own_progress(*, project: Project, user, with_remaining: bool = True) -> OwnProgress:
    """An annotator's own counts in a project: judged, skipped, still available.

    `remaining` counts regular (non-gold) comparisons this annotator has not touched
    whose judgments have not reached the target yet: an upper bound on the tasks
    still to come (leases held by others may fill some of them first). Counting it
    scans the project's open comparisons, so the per-task counter leaves it out
    (`with_remaining=False`, `remaining` is then None).
    """
    counts = Assignment.objects.filter(
        comparison__project=project, annotator=user
    ).aggregate(
        skipped=Count("id", filter=Q(status=Assignment.Status.SKIPPED)),
    )
    judged = Judgment.objects.filter(
        comparison__project=project, annotator=user
    ).count()
    if not with_remaining:
        return OwnProgress(judged=judged, skipped=counts["skipped"], remaining=None)
    remaining = (
        Comparison.objects.filter(
            project=project,
            gold_choice__isnull=True,
            judgment_count__lt=F("project__target_judgments"),
        )
        .exclude(assignments__annotator=user)
        .count()
    )
    return OwnProgress(judged=judged, skipped=counts["skipped"], remaining=remaining)
