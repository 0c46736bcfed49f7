"""The annotator's task page and the HTML fragments its script swaps in.

`annotate` renders the whole page with the current task. The page script then talks
to the fragment endpoints (`task-next`, `task-judge`, `task-skip`), which answer with
the next task's HTML, so the next task appears without a page reload. Without
JavaScript the same forms post normally and are redirected back to the page.

Blind by construction: the templates get only `selectors.queue.task_payload` (texts,
positions, the opaque assignment id) and the annotator's own counts.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from annotation.models import Assignment, Project, Role
from annotation.permissions import ROLE_RANK
from annotation.selectors.dashboard import own_progress
from annotation.selectors.queue import task_payload
from annotation.services.judgments import (
    ASSIGNMENT_NOT_FOUND,
    AssignmentNotFound,
    JudgmentConflict,
    LeaseExpiredTargetMet,
    judgment_submit,
)
from annotation.services.queue import assignment_skip, next_assignment
from annotation.views.access import is_fragment, project_page

SAVED = "Saved."
SKIPPED = "Skipped; you will not see that task again."


def _session_key(project: Project) -> str:
    return f"prefline:judged:{project.pk}"


def _task_context(request: HttpRequest, project: Project, notice: str = "") -> dict:
    """Lease (or re-serve) the annotator's task and build the fragment's context."""
    assignment = next_assignment(annotator=request.user, project=project)
    return {
        "project": project,
        "task": task_payload(assignment) if assignment is not None else None,
        "progress": own_progress(
            project=project, user=request.user, with_remaining=False
        ),
        "session_count": request.session.get(_session_key(project), 0),
        "notice": notice,
        "choices": _choice_buttons(project),
    }


def _choice_buttons(project: Project) -> list[dict]:
    buttons = [
        {"value": "left", "key": "1", "label": "Left is better"},
        {"value": "right", "key": "2", "label": "Right is better"},
    ]
    if project.allow_tie:
        buttons.append({"value": "tie", "key": "3", "label": "Tie"})
    if project.allow_both_bad:
        buttons.append({"value": "both_bad", "key": "4", "label": "Both bad"})
    return buttons


def _next_fragment(request, project, notice="", status=200) -> HttpResponse:
    if not is_fragment(request):  # without the script: the notice on the next page
        if notice:
            messages.success(request, notice)
        return redirect("annotate", slug=project.slug)
    context = _task_context(request, project, notice)
    return render(request, "annotation/_task.html", context, status=status)


def _error(request, project, status: int, message: str) -> HttpResponse:
    """An error the page shows in its alert region (the task stays as it is)."""
    return render(
        request,
        "annotation/_task_error.html"
        if is_fragment(request)
        else "annotation/error.html",
        {"project": project, "status": status, "message": message},
        status=status,
    )


def _own_assignment(request, project, assignment_id: int) -> Assignment | None:
    return Assignment.objects.filter(
        pk=assignment_id, annotator_id=request.user.pk, comparison__project=project
    ).first()


ASPECT_FIELD = "aspect:"


def _submission(request: HttpRequest, project: Project) -> dict:
    """Read the form: choice, optional strength, aspects and rationale.

    Aspects are posted by name (`aspect:<name>`), not by position, so a project
    whose aspects change while the task is open cannot file an answer under
    another aspect: a name it no longer has is refused by the service. A strength
    left selected is dropped for a tie or both-bad answer (the page has one form;
    the annotator did not mean it), where the API refuses it."""
    choice = request.POST.get("choice", "")
    strength = request.POST.get("strength", "").strip()
    if choice in ("tie", "both_bad"):
        strength = ""
    aspects = {
        key.removeprefix(ASPECT_FIELD): value.strip()
        for key, value in request.POST.items()
        if key.startswith(ASPECT_FIELD) and value.strip()
    }
    return {
        "choice": choice,
        "strength": int(strength) if strength.isdigit() else (strength or None),
        "aspects": aspects,
        "rationale": request.POST.get("rationale", ""),
    }


@project_page()
def annotate(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    context = _task_context(request, project)
    context["is_researcher"] = ROLE_RANK[role] >= ROLE_RANK[Role.RESEARCHER]
    return render(request, "annotation/annotate.html", context)


@require_POST
@project_page()
def task_next(request: HttpRequest, project: Project, role: str) -> HttpResponse:
    return _next_fragment(request, project)


@require_POST
@project_page()
def task_judge(
    request: HttpRequest, project: Project, role: str, assignment_id: int
) -> HttpResponse:
    assignment = _own_assignment(request, project, assignment_id)
    if assignment is None:
        return _error(request, project, 404, ASSIGNMENT_NOT_FOUND)
    try:
        result = judgment_submit(
            assignment=assignment,
            annotator=request.user,
            **_submission(request, project),
        )
    except ValidationError as error:
        return _error(request, project, 400, " ".join(error.messages))
    except (JudgmentConflict, LeaseExpiredTargetMet) as error:
        return _error(request, project, 409, str(error))
    except AssignmentNotFound as error:
        return _error(request, project, 404, str(error))
    if result.created:
        key = _session_key(project)
        request.session[key] = request.session.get(key, 0) + 1
    return _next_fragment(request, project, SAVED)


@require_POST
@project_page()
def task_skip(
    request: HttpRequest, project: Project, role: str, assignment_id: int
) -> HttpResponse:
    assignment = _own_assignment(request, project, assignment_id)
    if assignment is None:
        return _error(request, project, 404, ASSIGNMENT_NOT_FOUND)
    try:
        assignment_skip(assignment=assignment, annotator=request.user)
    except JudgmentConflict as error:
        return _error(request, project, 409, str(error))
    except AssignmentNotFound as error:
        return _error(request, project, 404, str(error))
    return _next_fragment(request, project, SKIPPED)
