"""Reads for annotators: the payload of a leased task.

Annotators work blind: nothing built here names a model, a generation parameter, a
response or comparison id, or anybody else's vote. The only id an annotator sees is
the opaque assignment id, which is theirs alone.
"""

from annotation.models import Assignment


def task_payload(assignment: Assignment) -> dict:
    """Return the next-task JSON for `assignment` (positional: left / right).

    Expects the comparison, its prompt, responses and project to be loaded (as
    `services.queue.next_assignment` returns them); otherwise they are fetched.
    """
    comparison = assignment.comparison
    project = comparison.project
    first, second = comparison.response_a, comparison.response_b
    left, right = (first, second) if assignment.left_is_first else (second, first)
    return {
        "assignment": assignment.pk,
        "prompt": [
            {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
            for m in comparison.prompt.messages
        ],
        "left": {"text": left.text},
        "right": {"text": right.text},
        "aspects": list(project.aspects or []),
        "allow_tie": project.allow_tie,
        "allow_both_bad": project.allow_both_bad,
        "lease_expires_at": assignment.expires_at,
    }
