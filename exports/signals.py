"""Signals of the export pipeline.

`export_stage` is sent inside the export's consistent read each time a stage ends
(`stage` is "snapshot" once PostgreSQL's snapshot is exported for the second read
connection, with `project` None; "comparisons" and "votes" inside the first pass,
"plan" after it, and "batch" after each batch of the second pass, with the
`project`). Receivers run in
the exporting thread: progress reporting hooks here, and the tests use it to commit
judgments from another connection in the middle of an export.
"""

from django.dispatch import Signal

export_stage = Signal()
