"""Reads behind the researcher dashboard and the annotators' own progress.

The dashboard refreshes every few seconds while annotation runs, so its cost per
judgment is kept small: counts (per annotator: judgments, ties, both-bad, left
choices, gold accuracy) are aggregated by the database, and the statistics that need
every judgment (agreement with the majority, Krippendorff's alpha, pairwise Cohen's
kappa, median seconds) get one compact numeric row per judgment and run vectorised
through the pure functions in `annotation.stats`. Prior labels from imports are never
counted as anybody's judgment.
"""

import datetime as dt
import itertools
from dataclasses import dataclass, field

import numpy as np
from django.db import connection
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import TruncDate
from django.utils import timezone
from scipy import sparse

from annotation import stats
from annotation.models import Assignment, Choice, Comparison, Judgment, Project

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


_CHOICE_CODE = Case(
    *(When(choice=name, then=Value(code)) for name, code in stats.CHOICE_CODES.items()),
    output_field=IntegerField(),
)
_LEFT_PICK = Q(choice=Choice.FIRST, left_is_first=True) | Q(
    choice=Choice.SECOND, left_is_first=False
)


def _human_judgments(project: Project):
    return Judgment.objects.filter(
        comparison__project=project, origin=Judgment.Origin.HUMAN
    ).order_by()


def _judgment_arrays(project: Project) -> dict[str, np.ndarray]:
    """The project's human judgments as compact arrays: ids, choice code, seconds.

    One row of four numbers per judgment (the choice is coded in SQL), fetched as
    plain tuples (no per-row conversion in Python) into one float array: ids stay
    exact below 2**53, a missing duration becomes nan.
    """
    rows = (
        _human_judgments(project)
        .annotate(code=_CHOICE_CODE)
        .values_list("comparison_id", "annotator_id", "code", "duration_ms")
    )
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        table = np.array(cursor.fetchall(), dtype=float).reshape(-1, 4)
    return {
        "units": table[:, 0].astype(np.int64),
        "coders": table[:, 1].astype(np.int64),
        "values": table[:, 2].astype(np.int64),
        "seconds": table[:, 3] / 1000,
    }


def _annotator_counts(project: Project) -> list[dict]:
    """Per-annotator counts, aggregated by the database (ordered by username, as
    Python orders text: the database's collation may differ)."""
    decisive = Q(choice__in=[Choice.FIRST, Choice.SECOND], left_is_first__isnull=False)
    counts = (
        _human_judgments(project)
        .values("annotator_id", "annotator__username")
        .annotate(
            n=Count("id"),
            tie=Count("id", filter=Q(choice=Choice.TIE)),
            both_bad=Count("id", filter=Q(choice=Choice.BOTH_BAD)),
            decisive=Count("id", filter=decisive),
            left=Count("id", filter=decisive & _LEFT_PICK),
            gold=Count("id", filter=Q(comparison__gold_choice__isnull=False)),
            gold_correct=Count("id", filter=Q(choice=F("comparison__gold_choice"))),
        )
    )
    return sorted(counts, key=lambda row: row["annotator__username"])


def _by_coder(coders: np.ndarray, keys: np.ndarray, weights: np.ndarray) -> dict:
    """Sum `weights` per coder id; {coder id: sum} for the ids in `keys`."""
    if not coders.size:
        return {}
    index = np.searchsorted(keys, coders)
    sums = np.bincount(index, weights=weights, minlength=keys.size)
    return dict(zip(keys.tolist(), sums.tolist(), strict=True))


def _annotator_rows(
    counts: list[dict], data: dict[str, np.ndarray]
) -> list[AnnotatorRow]:
    keys, medians = stats.grouped_median(data["coders"], data["seconds"])
    median_by_coder = dict(zip(keys.tolist(), medians.tolist(), strict=True))
    agrees = stats.agreement_with_majority(data["units"], data["values"])
    defined = ~np.isnan(agrees)
    agreed = _by_coder(data["coders"], keys, np.where(defined, agrees, 0.0))
    judged = _by_coder(data["coders"], keys, defined.astype(float))
    return [
        AnnotatorRow(
            user_id=row["annotator_id"],
            username=row["annotator__username"],
            judgments=row["n"],
            median_seconds=median_by_coder.get(row["annotator_id"], float("nan")),
            gold=stats.proportion(row["gold_correct"], row["gold"]),
            majority=stats.proportion(
                int(agreed.get(row["annotator_id"], 0)),
                int(judged.get(row["annotator_id"], 0)),
            ),
            left=stats.proportion(row["left"], row["decisive"]),
            tie=stats.proportion(row["tie"], row["n"]),
            both_bad=stats.proportion(row["both_bad"], row["n"]),
        )
        for row in counts
    ]


def _pairwise_kappa(units, coders, values, min_overlap: int):
    """Cohen's kappa of every coder pair sharing `min_overlap` units or more.

    The same pairs, order and numbers as `stats.pairwise_cohen_kappa`, which walks
    every judgment in Python: here the overlaps of all pairs come from one sparse
    product, and each qualifying pair's shared labels from one sorted intersection
    handed to `stats.cohen_kappa`.
    """
    coder_keys, coder_index = np.unique(coders, return_inverse=True)
    unit_keys, unit_index = np.unique(units, return_inverse=True)
    presence = sparse.csr_matrix(
        (np.ones(units.size), (coder_index, unit_index)),
        shape=(coder_keys.size, unit_keys.size),
    )
    overlap = (presence @ presence.T).toarray()
    order = np.lexsort((unit_index, coder_index))
    starts = np.searchsorted(coder_index[order], np.arange(coder_keys.size + 1))
    mine = [
        (unit_index[order[a:b]], values[order[a:b]])
        for a, b in itertools.pairwise(starts)
    ]
    pairs = np.argwhere(np.triu(overlap >= max(min_overlap, 1), k=1))
    out = []
    for a, b in pairs.tolist():
        (units_a, labels_a), (units_b, labels_b) = mine[a], mine[b]
        _, in_a, in_b = np.intersect1d(
            units_a, units_b, assume_unique=True, return_indices=True
        )
        kappa = stats.cohen_kappa(labels_a[in_a], labels_b[in_b])
        out.append((int(coder_keys[a]), int(coder_keys[b]), int(in_a.size), kappa))
    return out


def _kappa_rows(data: dict[str, np.ndarray], usernames: dict) -> list[KappaRow]:
    pairs = _pairwise_kappa(
        data["units"], data["coders"], data["values"], KAPPA_MIN_OVERLAP
    )
    return [KappaRow(usernames[a], usernames[b], n, k) for a, b, n, k in pairs]


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
    counts = _annotator_counts(project)
    rows = _annotator_rows(counts, data)
    usernames = {row.user_id: row.username for row in rows}
    _, per_unit = np.unique(data["units"], return_counts=True)
    total = {
        key: sum(row[key] for row in counts)
        for key in ("n", "tie", "both_bad", "decisive", "left")
    }
    return Dashboard(
        comparisons=comparison_counts["total"],
        complete=comparison_counts["complete"],
        gold_comparisons=comparison_counts["gold"],
        target_per_comparison=project.target_judgments,
        judgments=total["n"],
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
        left=stats.proportion(total["left"], total["decisive"]),
        tie=stats.proportion(total["tie"], total["n"]),
        both_bad=stats.proportion(total["both_bad"], total["n"]),
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
