"""Reads for annotators: the payload of a leased task, and the row helpers of the queue.

Annotators work blind: nothing built here names a model, a generation parameter, a
response or comparison id, or anybody else's vote. The only id an annotator sees is
the opaque assignment id, which is theirs alone.

The queue services read their rows with plain SQL (Django's query compiler costs
more CPU than the queries themselves on the next-task path, see `services.queue`);
`loaded` and the value helpers below turn such rows into model instances that behave
like ORM-loaded ones: fields that were not read are deferred and load on access.
"""

import datetime as dt
import json
from typing import TypeVar

from django.db import connection
from django.db.models import Model, signals
from django.db.models.base import DEFERRED, ModelState

from annotation.models import Assignment

M = TypeVar("M", bound=Model)


def loaded(model: type[M], **values) -> M:
    """Return a `model` instance as if read from the database with these fields.

    Fields left out are deferred (a later access reads them), so the instance never
    shows a default in place of a stored value. Values must already be Python values
    (see `from_db_json`, `from_db_datetime`). Builds the instance the way
    `Model.from_db` does, less the generic `__init__` (a tenth of the cost), unless
    something listens to `post_init`.
    """
    if signals.post_init.has_listeners(model):
        fields = model._meta.concrete_fields
        row = [values.get(f.attname, DEFERRED) for f in fields]
        return model.from_db(connection.alias, None, row)
    instance = model.__new__(model)
    state = instance._state = ModelState()
    state.adding = False
    state.db = connection.alias
    instance.__dict__.update(values)
    return instance


def from_db_json(value):
    """JSON columns come back as text from both backends (Django loads them itself)."""
    return json.loads(value) if isinstance(value, str) else value


def from_db_datetime(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive UTC datetimes to plain SQL; PostgreSQL aware ones."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def to_db_datetime(value: dt.datetime):
    """A datetime as the backend stores it (SQLite: naive UTC text), for plain SQL."""
    return connection.ops.adapt_datetimefield_value(value)


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
