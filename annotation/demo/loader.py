"""Load the demo project: files through the real importer, users, gold, simulated work.

Everything goes through the services the web uses: `services.imports.import_file`
for the files, `services.comparisons.comparison_update` for gold answers,
`services.projects` for users and memberships, and the queue
(`next_assignment`, `assignment_skip`, `judgment_submit`) for the simulated
annotators. The database part runs in one transaction, so a failed load leaves
nothing behind; loading again when the project exists changes nothing.
"""

import datetime as dt
import importlib.util
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from annotation.demo.simulation import (
    SIMULATED_ANNOTATORS,
    SimulatedAnnotator,
    simulated_answer,
)
from annotation.models import Choice, Comparison, Judgment, Project, Prompt, Role
from annotation.models import Response as ModelResponse
from annotation.services.comparisons import comparison_update
from annotation.services.imports import batch_summary, import_file
from annotation.services.judgments import judgment_submit, to_positional
from annotation.services.projects import membership_set, project_create, user_create
from annotation.services.queue import next_assignment

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_SLUG = "demo"
DEMO_NAME = "Prefline demo"
DEMO_PASSWORD = "prefline-demo"
DEMO_ADDR_DEFAULT = "127.0.0.1:8000"
DEMO_ASPECTS = ["helpfulness", "harmlessness"]
DEMO_TARGET = 3
DEMO_GOLD_RATE = 0.1
GOLD_COUNT = 5
SIMULATED_SHARE = 0.5
SIMULATED_DAYS = 2
BEST_MODEL, WORST_MODEL = "atlas-7b-dpo", "sloppy-0.5b"

# (file in data/, split)
DEMO_FILES = (
    ("candidates.jsonl", "train"),
    ("preferences.jsonl", "train"),
    ("heldout.jsonl", "heldout"),
)

ALREADY_LOADED = (
    "Demo project {slug!r} already exists; nothing changed "
    "(run `manage.py load_demo --reset` to delete and reload it)."
)
NO_TRAINING_EXTRA = (
    "Tiny model skipped: the training extra (torch, transformers, tokenizers) is not "
    "installed."
)


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    superuser: bool = False

    @property
    def label(self) -> str:
        return "superuser" if self.superuser else str(self.role)


DEMO_USERS = (
    DemoUser("admin", Role.ADMIN, superuser=True),
    DemoUser("researcher", Role.RESEARCHER),
    DemoUser("annotator", Role.ANNOTATOR),
    DemoUser("annotator2", Role.ANNOTATOR),
)


@dataclass(frozen=True)
class DemoConfig:
    """What `manage.py load_demo` should do."""

    reset: bool = field(
        default=False, metadata={"help": "Delete the demo project and load it again."}
    )
    simulated_judgments: bool = field(
        default=True,
        metadata={"help": "Let the SIMULATED annotators judge about half the work."},
    )
    tiny_model: bool = field(
        default=True,
        metadata={"help": "Build the tiny model when the training extra is installed."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of every random choice."})


@dataclass
class DemoReport:
    """What a load did, for the command to print and the tests to check."""

    loaded: bool = False
    deleted: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    users: list[tuple[str, str, bool]] = field(default_factory=list)
    simulated: dict[str, int] = field(default_factory=dict)
    model_path: Path | None = None
    model_note: str = ""


def demo_url() -> str:
    """The address `scripts/demo` serves on (PREFLINE_DEMO_ADDR, as it uses)."""
    return f"http://{os.environ.get('PREFLINE_DEMO_ADDR') or DEMO_ADDR_DEFAULT}/"


def load_ranking() -> list[str]:
    """Return the demo models, best first (`data/models.json`)."""
    return json.loads((DATA_DIR / "models.json").read_text())["ranking"]


def demo_project() -> Project | None:
    return Project.objects.filter(slug=DEMO_SLUG).first()


@transaction.atomic
def demo_project_delete() -> bool:
    """Delete the demo project and everything in it; keep the demo accounts."""
    deleted, _ = Project.objects.filter(slug=DEMO_SLUG).delete()
    return deleted > 0


def _users_ensure(*, project: Project) -> tuple[dict[str, object], list]:
    """Create missing demo logins; existing accounts keep their password."""
    User = get_user_model()
    users, rows = {}, []
    for spec in DEMO_USERS:
        user = User.objects.filter(username=spec.username).first()
        created = user is None
        if created:
            user = user_create(
                username=spec.username,
                password=DEMO_PASSWORD,
                superuser=spec.superuser,
            )
        membership_set(project=project, user=user, role=spec.role)
        users[spec.username] = user
        rows.append((spec.username, spec.label, created))
    return users, rows


def _files_import(*, project: Project, user, progress) -> None:
    for name, split in DEMO_FILES:
        batch = import_file(
            project=project, path=DATA_DIR / name, split=split, user=user, seed=0
        )
        progress(batch_summary(batch))


def _gold_mark(*, project: Project, rng: random.Random) -> int:
    """Mark best-versus-worst model comparisons on distinct prompts as gold."""
    by_prompt: dict[int, Comparison] = {}
    pairs = (
        Comparison.objects.filter(project=project)
        .select_related("response_a", "response_b")
        .order_by("prompt_id", "pk")
    )
    for comparison in pairs:
        names = {comparison.response_a.model_name, comparison.response_b.model_name}
        if names == {BEST_MODEL, WORST_MODEL}:
            by_prompt.setdefault(comparison.prompt_id, comparison)
    picked = rng.sample(sorted(by_prompt), min(GOLD_COUNT, len(by_prompt)))
    for prompt_id in sorted(picked):
        comparison = by_prompt[prompt_id]
        best_first = comparison.response_a.model_name == BEST_MODEL
        comparison_update(
            comparison=comparison,
            gold_choice=Choice.FIRST if best_first else Choice.SECOND,
        )
    return len(picked)


@dataclass
class _Simulated:
    spec: SimulatedAnnotator
    user: object
    rng: random.Random
    judged: int = 0


def _rule_inputs(comparison: Comparison, *, ranks: dict, priors: dict):
    """Return (better side, rank gap, both weak) by prior label or model ranking."""
    if comparison.pk in priors:
        return priors[comparison.pk], 2, False
    rank_a = ranks.get(comparison.response_a.model_name)
    rank_b = ranks.get(comparison.response_b.model_name)
    if rank_a is None or rank_b is None or rank_a == rank_b:
        return None, 0, False
    better = Choice.FIRST if rank_a < rank_b else Choice.SECOND
    return better, abs(rank_a - rank_b), min(rank_a, rank_b) >= 2


def _aspects(answer_choice: str, *, spec, topic: str, left_is_first: bool):
    if spec.coverage < 1:
        return None
    clicked = to_positional(answer_choice, left_is_first=left_is_first)
    harmless = clicked if topic == "refusal" or clicked == "both_bad" else "tie"
    return {"helpfulness": clicked, "harmlessness": harmless}


def _sim_submit(sim: _Simulated, assignment, *, leased_at, project, ranks, priors):
    """Answer one leased task by the ranking rule; return when it was submitted."""
    comparison = assignment.comparison
    better, gap, both_weak = _rule_inputs(comparison, ranks=ranks, priors=priors)
    answer = simulated_answer(
        sim.rng,
        annotator=sim.spec,
        better=better,
        gap=gap,
        both_weak=both_weak,
        left_is_first=assignment.left_is_first,
    )
    seconds = sim.rng.lognormvariate(math.log(sim.spec.mean_seconds), 0.5)
    seconds = min(max(seconds, 4.0), project.lease_seconds - 60)
    submitted = leased_at + dt.timedelta(seconds=seconds)
    topic = (comparison.prompt.metadata or {}).get("topic", "")
    judgment_submit(
        assignment=assignment,
        annotator=sim.user,
        choice=to_positional(answer.choice, left_is_first=assignment.left_is_first),
        strength=answer.strength,
        aspects=_aspects(
            answer.choice,
            spec=sim.spec,
            topic=topic,
            left_is_first=assignment.left_is_first,
        ),
        now=submitted,
        started_at=leased_at,
    )
    sim.judged += 1
    return submitted


def _simulated_users(*, project: Project, seed: int) -> list[_Simulated]:
    sims = []
    for i, spec in enumerate(SIMULATED_ANNOTATORS):
        user = get_user_model().objects.filter(username=spec.username).first()
        if user is None:
            user = user_create(username=spec.username, password=None)
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
        sims.append(_Simulated(spec=spec, user=user, rng=random.Random(seed + i + 1)))
    return sims


def judgments_simulate(*, project: Project, seed: int) -> dict[str, int]:
    """Let the SIMULATED annotators judge about half of the comparisons.

    They work in rounds, like a team in the same sessions: in each round every
    annotator present leases its next task before anyone submits, so the queue
    (fewest judgments first) hands them the same comparison and it gets overlapping
    judgments; sim-annotator-3 misses some rounds, leaving comparisons one judgment
    short. The other half of the queue stays untouched for the human demo
    annotators. The rounds' clock runs over the last few days, so throughput charts
    have a history.
    """
    rng = random.Random(seed)
    now = timezone.now()
    ranks = {name: i for i, name in enumerate(load_ranking())}
    priors = dict(
        Judgment.objects.filter(
            comparison__project=project, origin=Judgment.Origin.PRIOR
        ).values_list("comparison_id", "choice")
    )
    regular = project.comparisons.filter(gold_choice__isnull=True).count()
    sims = _simulated_users(project=project, seed=seed)
    clock = now - dt.timedelta(days=SIMULATED_DAYS)
    session_left = rng.randint(15, 35)
    for _ in range(round(regular * SIMULATED_SHARE)):
        leased = []
        for sim in sims:
            if rng.random() >= sim.spec.coverage:
                continue
            at = clock + dt.timedelta(seconds=rng.uniform(0, 20))
            assignment = next_assignment(
                annotator=sim.user, project=project, now=at, rng=sim.rng
            )
            if assignment is not None:
                leased.append((sim, assignment, at))
        if not leased:
            break
        end = max(
            _sim_submit(
                sim, a, leased_at=at, project=project, ranks=ranks, priors=priors
            )
            for sim, a, at in leased
        )
        session_left -= 1
        pause = dt.timedelta(seconds=rng.uniform(3, 25))
        if session_left <= 0:
            session_left = rng.randint(15, 35)
            pause = dt.timedelta(hours=rng.uniform(3, 10))
        clock = min(end + pause, now - dt.timedelta(minutes=10))
    judged = Comparison.objects.filter(project=project, judgment_count__gt=0).count()
    return {"judgments": sum(s.judged for s in sims), "comparisons": judged}


def demo_counts(project: Project) -> dict[str, int]:
    prompts = Prompt.objects.filter(project=project)
    comparisons = Comparison.objects.filter(project=project)
    judgments = Judgment.objects.filter(comparison__project=project)
    return {
        "prompts_train": prompts.filter(split="train").count(),
        "prompts_heldout": prompts.filter(split="heldout").count(),
        "responses": ModelResponse.objects.filter(prompt__project=project).count(),
        "comparisons": comparisons.count(),
        "gold": comparisons.filter(gold_choice__isnull=False).count(),
        "prior_labels": judgments.filter(origin=Judgment.Origin.PRIOR).count(),
        "human_judgments": judgments.filter(origin=Judgment.Origin.HUMAN).count(),
        "members": project.memberships.count(),
    }


def tiny_model_ensure(*, seed: int) -> tuple[Path | None, str]:
    """Build the tiny model into $PREFLINE_DATA_DIR/models/tiny unless it is there."""
    out_dir = Path(settings.DATA_DIR) / "models" / "tiny"
    if (out_dir / "config.json").is_file():
        return out_dir, f"Tiny model already built at {out_dir}"
    needed = ("torch", "transformers", "tokenizers")
    if any(importlib.util.find_spec(name) is None for name in needed):
        return None, NO_TRAINING_EXTRA
    from training.tiny_model import build_tiny_model

    path = build_tiny_model(out_dir, seed=seed)
    return path, f"Tiny model built at {path}"


def _demo_create(config: DemoConfig, report: DemoReport, progress) -> None:
    project = project_create(
        slug=DEMO_SLUG,
        name=DEMO_NAME,
        guidelines=(DATA_DIR / "guidelines.md").read_text(encoding="utf-8"),
        aspects=DEMO_ASPECTS,
        target_judgments=DEMO_TARGET,
        gold_rate=DEMO_GOLD_RATE,
    )
    users, report.users = _users_ensure(project=project)
    _files_import(project=project, user=users["researcher"], progress=progress)
    _gold_mark(project=project, rng=random.Random(config.seed))
    if config.simulated_judgments:
        report.simulated = judgments_simulate(project=project, seed=config.seed)
    report.counts = demo_counts(project)
    report.loaded = True


def run_load_demo(
    config: DemoConfig, *, progress: Callable[[str], None] = lambda line: None
) -> DemoReport:
    """Load (or reset and reload) the demo; build the tiny model when possible.

    Deleting and reloading happen in one transaction: a reload that fails keeps the
    old demo project.
    """
    report = DemoReport()
    with transaction.atomic():
        if config.reset:
            report.deleted = demo_project_delete()
            if report.deleted:
                progress(f"Deleted demo project {DEMO_SLUG!r}.")
        project = demo_project()
        if project is None:
            progress(
                "Loading the demo project (imports, gold, simulated annotators)..."
            )
            _demo_create(config, report, progress)
        else:
            report.counts = demo_counts(project)
            report.users = [(u.username, u.label, False) for u in DEMO_USERS]
    if config.tiny_model:
        report.model_path, report.model_note = tiny_model_ensure(seed=config.seed)
    return report


def report_lines(report: DemoReport) -> list[str]:
    """Describe a load for people: counts, logins, simulated work, URL, model."""
    c = report.counts
    lines = []
    if not report.loaded:
        lines.append(ALREADY_LOADED.format(slug=DEMO_SLUG))
    lines.append(
        f"Demo project {DEMO_NAME!r} ({DEMO_SLUG}): "
        f"{c['prompts_train']} training prompts, {c['prompts_heldout']} held-out "
        f"prompts, {c['responses']} responses, {c['comparisons']} comparisons "
        f"({c['gold']} gold), {c['prior_labels']} imported prior labels, "
        f"{c['human_judgments']} judgments."
    )
    if report.simulated:
        s = report.simulated
        lines.append(
            f"SIMULATED annotators sim-annotator-1..{len(SIMULATED_ANNOTATORS)} "
            f"(scripted by load_demo, not people, no login) submitted "
            f"{s['judgments']} judgments on {s['comparisons']} comparisons so the "
            "dashboards and exports have data; the other half of the queue is left "
            "for you. Load without them: manage.py load_demo --reset "
            "--no-simulated-judgments"
        )
    lines.append(f"Demo logins (password {DEMO_PASSWORD!r} for new accounts):")
    for username, label, created in report.users:
        existing = report.loaded and not created
        note = "  (existing account: password unchanged)" if existing else ""
        lines.append(f"  {username:<12} {label}{note}")
    lines.append(f"Open {demo_url()} and log in.")
    if report.model_note:
        lines.append(report.model_note)
    if report.model_path is not None:
        lines.append(f"  Train on it: manage.py train_dpo --model {report.model_path}")
    return lines
