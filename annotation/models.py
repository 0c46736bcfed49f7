"""Data model of the annotation loop: projects, prompts, responses, judgments.

Rules that must hold whatever code path writes a row (uniqueness, value ranges, the
canonical order of a comparison's two responses) are database constraints, so a bug or
a race in a service cannot store an inconsistent row. Services in `services/` are the
only writers.
"""

import random
import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q


def random_key_default() -> float:
    """Return a fresh uniform key so queue order is random among equal candidates."""
    return random.random()


class Role(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    RESEARCHER = "researcher", "Researcher"
    ADMIN = "admin", "Admin"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    HELDOUT = "heldout", "Held-out"


class Choice(models.TextChoices):
    """A judgment stored canonically against `Comparison.response_a` / `response_b`."""

    FIRST = "first", "First better"
    SECOND = "second", "Second better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class Project(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    guidelines = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    aspects = models.JSONField(
        default=list,
        blank=True,
        help_text='Names of per-aspect choices, e.g. ["helpfulness", "harmlessness"].',
    )
    target_judgments = models.PositiveSmallIntegerField(
        default=3, help_text="Judgments wanted per comparison (overlap)."
    )
    lease_seconds = models.PositiveIntegerField(
        default=600, help_text="How long an annotator holds a task before it is freed."
    )
    allow_tie = models.BooleanField(default=True)
    allow_both_bad = models.BooleanField(default=True)
    gold_rate = models.FloatField(
        default=0.0, help_text="Share of tasks drawn from gold comparisons (0 to 1)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(target_judgments__gte=1), name="project_target_at_least_one"
            ),
            models.CheckConstraint(
                condition=Q(lease_seconds__gte=10), name="project_lease_at_least_10s"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1),
                name="project_gold_rate_in_unit_interval",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "project"], name="membership_one_role_per_project"
            ),
            models.CheckConstraint(
                condition=Q(role__in=Role.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.project} ({self.role})"


class ImportBatchStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ImportBatch(models.Model):
    Status = ImportBatchStatus

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="import_batches"
    )
    file_name = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    format = models.CharField(max_length=32)
    split = models.CharField(max_length=16, choices=Split.choices, default=Split.TRAIN)
    status = models.CharField(max_length=16, choices=Status.choices)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "sha256"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ImportBatchStatus.values),
                name="import_batch_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(split__in=Split.values), name="import_batch_split_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status})"


class Prompt(models.Model):
    """A conversation to respond to: `messages` is a list of {role, content}."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="prompts"
    )
    messages = models.JSONField()
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    split = models.CharField(max_length=16, choices=Split.choices, default=Split.TRAIN)
    content_hash = models.CharField(max_length=64)
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "content_hash"], name="prompt_unique_per_project"
            ),
            models.CheckConstraint(
                condition=Q(split__in=Split.values), name="prompt_split_valid"
            ),
        ]
        indexes = [models.Index(fields=["project", "split"])]

    def __str__(self) -> str:
        return f"Prompt {self.pk}"


class Response(models.Model):
    """An answer; `model_name` and `generation_params` never reach annotators."""

    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="responses"
    )
    text = models.TextField()
    model_name = models.CharField(max_length=200, blank=True)
    generation_params = models.JSONField(default=dict, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "content_hash"], name="response_unique_per_prompt"
            ),
        ]

    def __str__(self) -> str:
        return f"Response {self.pk}"


class ComparisonOrigin(models.TextChoices):
    IMPORT = "import", "Import"
    GENERATION = "generation", "Generation"
    EVALUATION = "evaluation", "Evaluation round"


class Comparison(models.Model):
    """An unordered pair of responses to one prompt, stored as (lower id, higher id).

    `judgment_count` and `lease_count` are maintained by the queue services so that
    picking the next task reads one index instead of counting judgments;
    `a_left_count` / `b_left_count` count the leases that showed response_a /
    response_b on the left, so the next lease can balance the sides without counting
    assignments.
    """

    Origin = ComparisonOrigin

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="comparisons"
    )
    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="comparisons"
    )
    response_a = models.ForeignKey(
        Response, on_delete=models.CASCADE, related_name="comparisons_as_a"
    )
    response_b = models.ForeignKey(
        Response, on_delete=models.CASCADE, related_name="comparisons_as_b"
    )
    priority = models.IntegerField(default=0, help_text="Higher is served first.")
    origin = models.CharField(
        max_length=16, choices=Origin.choices, default=Origin.IMPORT
    )
    gold_choice = models.CharField(
        max_length=16,
        choices=Choice.choices,
        null=True,
        blank=True,
        help_text="Known answer; set on gold comparisons only.",
    )
    judgment_count = models.PositiveIntegerField(default=0)
    lease_count = models.PositiveIntegerField(default=0)
    a_left_count = models.PositiveIntegerField(
        default=0, help_text="Leases that showed response_a on the left."
    )
    b_left_count = models.PositiveIntegerField(
        default=0, help_text="Leases that showed response_b on the left."
    )
    random_key = models.FloatField(
        default=random_key_default, help_text="Random tie-breaker for queue order."
    )
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "response_a", "response_b"],
                name="comparison_unique_pair_per_project",
            ),
            models.CheckConstraint(
                condition=Q(response_a__lt=F("response_b")),
                name="comparison_pair_canonical_order",
            ),
            models.CheckConstraint(
                condition=Q(gold_choice__isnull=True)
                | Q(gold_choice__in=Choice.values),
                name="comparison_gold_choice_valid",
            ),
            models.CheckConstraint(
                condition=Q(origin__in=ComparisonOrigin.values),
                name="comparison_origin_valid",
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "judgment_count", "-priority", "random_key"],
                name="comparison_queue_order",
            ),
            # Gold comparisons are served to every annotator (no target), so they are
            # looked up apart from the open queue; this keeps that lookup off the
            # (possibly million-row) main index.
            models.Index(
                fields=["project", "judgment_count", "random_key"],
                condition=Q(gold_choice__isnull=False),
                name="comparison_gold_queue",
            ),
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk}"

    @property
    def is_gold(self) -> bool:
        return self.gold_choice is not None


class AssignmentStatus(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    """A lease of a comparison to one annotator; one row per (comparison, annotator)."""

    Status = AssignmentStatus

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="assignments"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.LEASED
    )
    left_is_first = models.BooleanField(
        help_text="True when response_a is shown on the left."
    )
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"],
                name="assignment_one_per_comparison_annotator",
            ),
            models.CheckConstraint(
                condition=Q(status__in=AssignmentStatus.values),
                name="assignment_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"]),
            models.Index(fields=["annotator", "status"]),
        ]

    def __str__(self) -> str:
        return f"Assignment {self.pk} ({self.status})"


class Judgment(models.Model):
    """A preference between a comparison's two responses.

    Human judgments have an annotator; a label that came with an imported preference
    pair is stored with origin `prior` and no annotator, so exports can include or
    exclude it and it never counts towards the annotation target.
    """

    class Origin(models.TextChoices):
        HUMAN = "human", "Human"
        PRIOR = "prior", "Imported prior label"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="judgments"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="judgments",
    )
    assignment = models.OneToOneField(
        Assignment,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="judgment",
    )
    origin = models.CharField(
        max_length=16, choices=Origin.choices, default=Origin.HUMAN
    )
    choice = models.CharField(max_length=16, choices=Choice.choices)
    strength = models.PositiveSmallIntegerField(null=True, blank=True)
    aspect_choices = models.JSONField(
        default=dict, blank=True, help_text="Aspect name -> canonical choice."
    )
    rationale = models.TextField(blank=True)
    left_is_first = models.BooleanField(
        null=True, blank=True, help_text="Position shown; null for prior labels."
    )
    is_gold = models.BooleanField(default=False)
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL
    )
    started_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"],
                condition=Q(annotator__isnull=False),
                name="judgment_one_per_comparison_annotator",
            ),
            models.UniqueConstraint(
                fields=["comparison"],
                condition=Q(origin="prior"),
                name="judgment_one_prior_per_comparison",
            ),
            models.CheckConstraint(
                condition=Q(choice__in=Choice.values), name="judgment_choice_valid"
            ),
            models.CheckConstraint(
                condition=Q(strength__isnull=True)
                | (Q(strength__gte=1) & Q(strength__lte=3)),
                name="judgment_strength_1_to_3",
            ),
            models.CheckConstraint(
                condition=(Q(origin="human") & Q(annotator__isnull=False))
                | (Q(origin="prior") & Q(annotator__isnull=True)),
                name="judgment_origin_matches_annotator",
            ),
        ]
        indexes = [
            models.Index(fields=["comparison", "origin"]),
            models.Index(fields=["annotator", "submitted_at"]),
        ]

    def __str__(self) -> str:
        return f"Judgment {self.pk} ({self.choice})"
