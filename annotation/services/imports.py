"""Import a file of prompts, candidate responses or preference pairs into a project.

One file is one transaction: rows are streamed from the file, validated and inserted
in batches (`bulk_create`), and if any row is bad the whole transaction is rolled back,
so a rejected file leaves prompts, responses, comparisons and judgments untouched. The
failed attempt is then recorded as an `ImportBatch` with status `failed` and the list
of errors (an audit trail that survives the rollback).

Duplicates are decided by content hash (`annotation.hashing`): a prompt, response,
comparison or prior label that is already in the project is skipped and counted. A
file whose sha256 was already imported successfully into the project is not read
again; the earlier batch is returned with `already_imported = True`.
"""

import datetime
import itertools
import random
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.db import DataError, IntegrityError, reset_queries, transaction
from django.utils import timezone

from annotation.hashing import file_sha256, prompt_hash, response_hash
from annotation.importers.readers import (
    BATCH_ROWS,
    FileUnreadable,
    SourceRow,
    detect_file_type,
    read_rows,
)
from annotation.importers.records import (
    FORMATS,
    HH_RLHF,
    TRL_IMPLICIT,
    Limits,
    ParsedRecord,
    RecordInvalid,
    detect_format,
    parse_record,
)
from annotation.models import (
    Choice,
    Comparison,
    ImportBatch,
    Judgment,
    Project,
    Prompt,
    Response,
    Split,
)

FILE_NOT_FOUND = "file or directory not found"
FILE_TOO_LARGE = "file is {size} bytes; the limit is {limit} bytes"
FILE_EMPTY = "the file holds no records"
OTHER_SPLIT = (
    "this prompt is already in the project's {split} split (prompt #{id}); a prompt "
    "is never moved between train and held-out: remove the row or import it with "
    "--split {split}"
)
DATABASE_REFUSED = (
    "the database refused a value of this file ({error}); nothing was written"
)
CONCURRENT_IMPORT = (
    "another import wrote the same rows at the same time; run this import again"
)
ALREADY_IMPORTED = (
    "{file} was already imported into {project} as batch #{id} on {date} UTC "
    "({split} split); nothing changed."
)
UNKNOWN_FORMAT_ARGUMENT = "Unknown format {format!r}; choose one of: {choices}."
UNKNOWN_SPLIT_ARGUMENT = "Unknown split {split!r}; choose train or heldout."
BAD_PAIRS_PER_PROMPT = "pairs_per_prompt must be a positive integer."
BAD_LIMIT = "{name} must be a positive integer (got {value!r})."

COUNT_KEYS = (
    "rows",
    "prompts_created",
    "prompts_duplicate",
    "responses_created",
    "responses_duplicate",
    "comparisons_created",
    "comparisons_duplicate",
    "pairs_identical_skipped",
    "prior_labels_created",
    "prior_labels_duplicate",
    "prior_labels_conflicting",
)


@dataclass(frozen=True)
class RowError:
    """Where a problem is (file, line or row, field) and what it is."""

    file: str
    line: int | None
    field: str
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"{self.unit} {self.line}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.reason}"

    def as_dict(self) -> dict:
        return asdict(self)


class ImportRejected(Exception):
    """The file was rejected and nothing was written; `errors` says why."""

    def __init__(
        self,
        errors: list[RowError],
        *,
        file_name: str,
        more: int = 0,
        batch: ImportBatch | None = None,
    ):
        self.errors = errors
        self.more = more
        self.file_name = file_name
        self.batch = batch
        super().__init__(str(self))

    def __str__(self) -> str:
        total = len(self.errors) + self.more
        noun = "error" if total == 1 else "errors"
        lines = [
            f"{self.file_name} was rejected ({total} {noun}); nothing was written."
        ]
        lines += [f"  {error}" for error in self.errors]
        if self.more:
            lines.append(
                f"  ... and {self.more} more (the limit is {len(self.errors)})"
            )
        return "\n".join(lines)


def import_file(
    *,
    project: Project,
    path: str | Path,
    format: str | None = None,
    split: str = Split.TRAIN,
    user=None,
    pairs_per_prompt: int | None = None,
    seed: int = 0,
    file_name: str | None = None,
    max_errors: int | None = None,
    max_text_chars: int | None = None,
    max_messages: int | None = None,
    max_file_bytes: int | None = None,
) -> ImportBatch:
    """Import `path` into `project` in one transaction and return its `ImportBatch`.

    `format` names the record format (detected from the first record when None);
    the file type (JSONL, JSON array, CSV, Parquet, datasets directory) is always
    detected. `pairs_per_prompt` samples that many comparisons per prompt from a
    prompt+responses file, deterministically from `seed` (all pairs when None). Limits
    default to the PREFLINE_IMPORT_* settings. Raises `ImportRejected` (after
    recording a failed batch) when anything in the file is wrong.
    """
    _check_arguments(format=format, split=split, pairs_per_prompt=pairs_per_prompt)
    max_errors, max_text_chars, max_messages, max_file_bytes = _limits_or_defaults(
        max_errors=max_errors,
        max_text_chars=max_text_chars,
        max_messages=max_messages,
        max_file_bytes=max_file_bytes,
    )
    path = Path(path)
    file_name = file_name or path.name
    limits = Limits(max_text_chars=max_text_chars, max_messages=max_messages)
    attempt = dict(project=project, file_name=file_name, split=split, user=user)
    if not path.exists():
        raise _rejection(
            **attempt,
            sha256="",
            format=format,
            errors=[_file_error(file_name, FILE_NOT_FOUND)],
        )
    size = _size(path)
    if size > max_file_bytes:
        error = FILE_TOO_LARGE.format(size=size, limit=max_file_bytes)
        raise _rejection(
            **attempt, sha256="", format=format, errors=[_file_error(file_name, error)]
        )
    sha256 = file_sha256(path)
    previous = (
        ImportBatch.objects.filter(
            project=project, sha256=sha256, status=ImportBatch.Status.SUCCEEDED
        )
        .order_by("created_at")
        .first()
    )
    if previous is not None:
        previous.already_imported = True
        return previous
    importer = None
    try:
        file_type = detect_file_type(path)
        with transaction.atomic():
            batch = ImportBatch.objects.create(
                project=project,
                file_name=file_name,
                sha256=sha256,
                format=format or "",
                split=split,
                status=ImportBatch.Status.SUCCEEDED,
                created_by=user,
            )
            importer = _Importer(
                batch=batch,
                file_name=file_name,
                format=format,
                limits=limits,
                pairs_per_prompt=pairs_per_prompt,
                seed=seed,
                max_errors=max_errors,
            )
            importer.run(
                read_rows(path, file_type, max_record_bytes=_record_cap(limits))
            )
            if importer.errors_total:
                raise _Rollback
            batch.format = importer.format
            batch.counts = {**importer.counts, "file_type": file_type}
            batch.save(update_fields=["format", "counts"])
    except _Rollback:
        raise _rejection(
            **attempt,
            sha256=sha256,
            format=importer.format or format,
            errors=importer.errors,
            more=importer.errors_total - len(importer.errors),
            counts={"rows": importer.counts["rows"]},
        ) from None
    except FileUnreadable as exc:
        raise _rejection(
            **attempt,
            sha256=sha256,
            format=format,
            errors=[_file_error(file_name, str(exc))],
        ) from None
    except IntegrityError:
        raise _rejection(
            **attempt,
            sha256=sha256,
            format=format,
            errors=[_file_error(file_name, CONCURRENT_IMPORT)],
        ) from None
    except DataError as exc:
        # Validation should have caught it (NUL, NaN, over-long ids); never a 500.
        reason = DATABASE_REFUSED.format(error=str(exc).strip().splitlines()[0])
        raise _rejection(
            **attempt,
            sha256=sha256,
            format=format,
            errors=[_file_error(file_name, reason)],
        ) from None
    batch.already_imported = False
    return batch


def import_upload(*, project: Project, upload, user=None, **options) -> ImportBatch:
    """Import an uploaded file (a Django `UploadedFile`) through `import_file`.

    The upload is copied, chunk by chunk, into a private temporary directory under
    its own base name, so the suffix still tells the file type; the copy is deleted
    afterwards whatever happens.
    """
    name = Path(upload.name or "").name
    if name in ("", ".", ".."):
        name = "upload"
    with tempfile.TemporaryDirectory(prefix="prefline-import-") as directory:
        path = Path(directory) / name
        with path.open("wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        return import_file(
            project=project, path=path, user=user, file_name=name, **options
        )


def batch_summary(batch: ImportBatch) -> str:
    """One line a person reads after an import: what happened to the file."""
    if getattr(batch, "already_imported", False):
        return ALREADY_IMPORTED.format(
            file=batch.file_name,
            project=batch.project.slug,
            id=batch.pk,
            split=batch.split,
            date=batch.created_at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        )
    counts = batch.counts
    if batch.status == ImportBatch.Status.FAILED:
        total = counts.get("errors", len(batch.errors))
        return (
            f"Rejected: {total} error{'' if total == 1 else 's'}; nothing was written."
        )
    created = ", ".join(
        f"{counts.get(f'{key}_created', 0)} {label}" for key, label in _ENTITIES
    )
    skipped = ", ".join(
        f"{counts.get(f'{key}_duplicate', 0)} {label}" for key, label in _ENTITIES
    )
    text = (
        f"Imported {batch.file_name} as batch #{batch.pk} ({batch.format}, "
        f"{counts.get('rows', 0)} rows): created {created}; skipped as duplicates "
        f"{skipped}"
    )
    if counts.get("pairs_identical_skipped"):
        text += f"; {counts['pairs_identical_skipped']} pairs of identical texts"
    if counts.get("prior_labels_conflicting"):
        text += (
            f"; {counts['prior_labels_conflicting']} prior labels contradicting an "
            "earlier label (the earlier one is kept)"
        )
    return text + "."


_ENTITIES = (
    ("prompts", "prompts"),
    ("responses", "responses"),
    ("comparisons", "comparisons"),
    ("prior_labels", "prior labels"),
)


class _Rollback(Exception):
    """Raised inside the transaction to undo every row of a rejected file."""


def _check_arguments(*, format, split, pairs_per_prompt) -> None:
    if format is not None and format not in FORMATS:
        raise ValueError(
            UNKNOWN_FORMAT_ARGUMENT.format(format=format, choices=", ".join(FORMATS))
        )
    if split not in Split.values:
        raise ValueError(UNKNOWN_SPLIT_ARGUMENT.format(split=split))
    if pairs_per_prompt is not None and (
        isinstance(pairs_per_prompt, bool)
        or not isinstance(pairs_per_prompt, int)
        or pairs_per_prompt < 1
    ):
        raise ValueError(BAD_PAIRS_PER_PROMPT)


def _limits_or_defaults(**limits: int | None) -> tuple[int, ...]:
    """Each limit as given, or its PREFLINE_IMPORT_* setting; all must be >= 1."""
    values = []
    for name, value in limits.items():
        if value is None:
            value = getattr(settings, f"PREFLINE_IMPORT_{name.upper()}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(BAD_LIMIT.format(name=name, value=value))
        values.append(value)
    return tuple(values)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _record_cap(limits: Limits) -> int:
    """The most characters one JSON record can take within the text limits."""
    return 4 * limits.max_text_chars * (limits.max_messages + 40) + (1 << 20)


def _file_error(file_name: str, reason: str) -> RowError:
    return RowError(file=file_name, line=None, field="", reason=reason)


def _rejection(
    *,
    project,
    file_name,
    split,
    user,
    sha256,
    format,
    errors,
    more=0,
    counts=None,
):
    """Record the failed attempt (outside the rolled-back transaction)."""
    batch = ImportBatch.objects.create(
        project=project,
        file_name=file_name,
        sha256=sha256,
        format=format or "unknown",
        split=split,
        status=ImportBatch.Status.FAILED,
        counts={**(counts or {}), "errors": len(errors) + more},
        errors=[error.as_dict() for error in errors],
        created_by=user,
    )
    return ImportRejected(errors, file_name=file_name, more=more, batch=batch)


def _sample_pairs(
    candidates: list[tuple[int, int]], k: int | None, *, seed: int, key: str
) -> list[tuple[int, int]]:
    """All pairs, or `k` of them drawn with an rng seeded by (seed, prompt hash)."""
    if k is None or k >= len(candidates):
        return candidates
    return sorted(random.Random(f"{seed}:{key}").sample(candidates, k))


class _Importer:
    """Validate rows and insert them chunk by chunk; stop writing at the first error."""

    def __init__(
        self,
        *,
        batch: ImportBatch,
        file_name: str,
        format: str | None,
        limits: Limits,
        pairs_per_prompt: int | None,
        seed: int,
        max_errors: int,
    ):
        self.batch = batch
        self.project = batch.project
        self.split = batch.split
        self.file_name = file_name
        self.format = format
        self.limits = limits
        self.pairs_per_prompt = pairs_per_prompt
        self.seed = seed
        self.max_errors = max_errors
        self.rng = random.Random(f"{seed}:{batch.sha256}")
        self.now = timezone.now()
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.errors: list[RowError] = []
        self.errors_total = 0

    def run(self, rows: Iterable[SourceRow]) -> None:
        chunk: list[tuple[SourceRow, ParsedRecord]] = []
        for row in rows:
            self.counts["rows"] += 1
            parsed = self._parse(row)
            if parsed is not None:
                chunk.append((row, parsed))
            if len(chunk) >= BATCH_ROWS:
                self._flush(chunk)
                chunk = []
                if settings.DEBUG:
                    # DEBUG keeps every SQL statement (with its 1,000 rows of
                    # parameters) in memory; a long import must not grow with it.
                    reset_queries()
        if chunk:
            self._flush(chunk)
        if self.counts["rows"] == 0:
            self._error(None, "", FILE_EMPTY)

    def _error(self, row: SourceRow | None, field: str, reason: str) -> None:
        self.errors_total += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(
                RowError(
                    file=self.file_name,
                    line=row.position if row else None,
                    field=field,
                    reason=reason,
                    unit=row.unit if row else "line",
                )
            )

    def _parse(self, row: SourceRow) -> ParsedRecord | None:
        if row.error is not None:
            self._error(row, row.field, row.error)
            return None
        try:
            if self.format is None:
                self.format = detect_format(row.record)
            return parse_record(row.record, self.format, self.limits)
        except RecordInvalid as exc:
            for field, reason in exc.problems:
                self._error(row, field, reason)
            return None

    def _flush(self, chunk: list[tuple[SourceRow, ParsedRecord]]) -> None:
        """Check the chunk against the database, then write it if the file is clean."""
        hashes = [prompt_hash(parsed.messages) for _, parsed in chunk]
        existing = {
            content_hash: (pk, split)
            for pk, content_hash, split in Prompt.objects.filter(
                project=self.project, content_hash__in=set(hashes)
            )
            .order_by()
            .values_list("pk", "content_hash", "split")
        }
        rows = []
        for (row, parsed), content_hash in zip(chunk, hashes, strict=True):
            found = existing.get(content_hash)
            if found is not None and found[1] != self.split:
                field = _prompt_field(row, parsed)
                self._error(row, field, OTHER_SPLIT.format(split=found[1], id=found[0]))
                continue
            hashes_of_responses = [
                response_hash(r.model_name, r.text) for r in parsed.responses
            ]
            rows.append((parsed, content_hash, hashes_of_responses))
        if self.errors_total:
            return
        prompt_ids = self._write_prompts(rows, {h: v[0] for h, v in existing.items()})
        existing_prompts = {pk for pk, _ in existing.values()}
        response_ids, existing_responses = self._write_responses(
            rows, prompt_ids, existing_prompts
        )
        self._write_comparisons(rows, prompt_ids, response_ids, existing_responses)

    def _write_prompts(self, rows, existing: dict[str, int]) -> dict[str, int]:
        new: dict[str, Prompt] = {}
        for parsed, content_hash, _ in rows:
            if content_hash in existing or content_hash in new:
                self.counts["prompts_duplicate"] += 1
                continue
            new[content_hash] = Prompt(
                project=self.project,
                messages=parsed.messages,
                external_id=parsed.external_id,
                metadata=parsed.metadata,
                split=self.split,
                content_hash=content_hash,
                import_batch=self.batch,
            )
        Prompt.objects.bulk_create(new.values())
        self.counts["prompts_created"] += len(new)
        return {**existing, **{h: prompt.pk for h, prompt in new.items()}}

    def _write_responses(
        self, rows, prompt_ids, existing_prompts: set[int]
    ) -> tuple[dict[tuple[int, str], int], set[int]]:
        """Insert the chunk's new responses.

        Returns the map (prompt id, response hash) -> id of all the chunk's responses
        and the ids of those that were in the database before.

        Only prompts that were already in the database can have responses there, so
        only theirs are read (all of them: a prompt has a handful). Matching two IN
        lists instead (prompt ids x response hashes) costs PostgreSQL one index probe
        per combination, and with a generic prepared plan on a table growing inside
        the import's transaction it turned into scans that made a 100k-row import
        quadratic.
        """
        wanted = {
            (prompt_ids[h], rh)
            for _, h, response_hashes in rows
            for rh in response_hashes
        }
        ids = {}
        if existing_prompts:
            ids = {
                (prompt_id, content_hash): pk
                for pk, prompt_id, content_hash in Response.objects.filter(
                    prompt_id__in=existing_prompts
                )
                .order_by()
                .values_list("pk", "prompt_id", "content_hash")
                if (prompt_id, content_hash) in wanted
            }
        new: dict[tuple[int, str], Response] = {}
        for parsed, h, response_hashes in rows:
            for r, rh in zip(parsed.responses, response_hashes, strict=True):
                key = (prompt_ids[h], rh)
                if key in ids or key in new:
                    self.counts["responses_duplicate"] += 1
                    continue
                new[key] = Response(
                    prompt_id=key[0],
                    text=r.text,
                    model_name=r.model_name,
                    generation_params=r.params,
                    external_id=r.external_id,
                    content_hash=key[1],
                )
        Response.objects.bulk_create(new.values())
        self.counts["responses_created"] += len(new)
        created = {key: response.pk for key, response in new.items()}
        return {**ids, **created}, set(ids.values())

    def _pairs(self, parsed: ParsedRecord, content_hash: str):
        """Index pairs of the record's responses to compare (chosen is index 0)."""
        texts = [r.text for r in parsed.responses]
        candidates = []
        for i, j in itertools.combinations(range(len(texts)), 2):
            if texts[i] == texts[j]:
                self.counts["pairs_identical_skipped"] += 1
            else:
                candidates.append((i, j))
        if parsed.is_preference:
            return candidates
        return _sample_pairs(
            candidates, self.pairs_per_prompt, seed=self.seed, key=content_hash
        )

    def _write_comparisons(
        self, rows, prompt_ids, response_ids, existing_responses: set[int]
    ) -> None:
        wanted = []  # (prompt id, response a, response b, chosen response or None)
        for parsed, h, response_hashes in rows:
            prompt_id = prompt_ids[h]
            ids = [response_ids[(prompt_id, rh)] for rh in response_hashes]
            for i, j in self._pairs(parsed, h):
                a, b = sorted((ids[i], ids[j]))
                chosen = ids[0] if parsed.is_preference else None
                wanted.append((prompt_id, a, b, chosen))
        if not wanted:
            return
        # Only a pair of responses that were both in the database before can have a
        # comparison there; those of their prompts are read by the prompt index (the
        # prompts are this project's, so no project filter is needed).
        pairs = {
            (a, b)
            for _, a, b, _ in wanted
            if a in existing_responses and b in existing_responses
        }
        existing = {}
        if pairs:
            existing = {
                (a, b): pk
                for pk, a, b in Comparison.objects.filter(
                    prompt_id__in={w[0] for w in wanted if w[1:3] in pairs}
                )
                .order_by()
                .values_list("pk", "response_a_id", "response_b_id")
                if (a, b) in pairs
            }
        new: dict[tuple[int, int], Comparison] = {}
        for prompt_id, a, b in (w[:3] for w in wanted):
            if (a, b) in existing or (a, b) in new:
                self.counts["comparisons_duplicate"] += 1
                continue
            new[(a, b)] = Comparison(
                project=self.project,
                prompt_id=prompt_id,
                response_a_id=a,
                response_b_id=b,
                origin=Comparison.Origin.IMPORT,
                random_key=self.rng.random(),
                import_batch=self.batch,
            )
        Comparison.objects.bulk_create(new.values())
        self.counts["comparisons_created"] += len(new)
        comparison_ids = {**existing, **{k: c.pk for k, c in new.items()}}
        labels = [
            (comparison_ids[(a, b)], Choice.FIRST if chosen == a else Choice.SECOND)
            for _, a, b, chosen in wanted
            if chosen is not None
        ]
        self._write_prior_labels(labels, set(existing.values()))

    def _write_prior_labels(
        self, labels: list[tuple[int, str]], existing_comparisons: set[int]
    ) -> None:
        """Only a comparison that was already in the database can have a label there."""
        if not labels:
            return
        known = {}
        if existing_comparisons:
            known = dict(
                Judgment.objects.filter(
                    comparison_id__in=existing_comparisons,
                    origin=Judgment.Origin.PRIOR,
                )
                .order_by()
                .values_list("comparison_id", "choice")
            )
        new: dict[int, Judgment] = {}
        for comparison_id, choice in labels:
            earlier = known.get(comparison_id)
            if earlier is None and comparison_id in new:
                earlier = new[comparison_id].choice
            if earlier is not None:
                key = (
                    "prior_labels_duplicate"
                    if earlier == choice
                    else ("prior_labels_conflicting")
                )
                self.counts[key] += 1
                continue
            new[comparison_id] = Judgment(
                comparison_id=comparison_id,
                annotator=None,
                origin=Judgment.Origin.PRIOR,
                choice=choice,
                import_batch=self.batch,
                submitted_at=self.now,
            )
        Judgment.objects.bulk_create(new.values())
        self.counts["prior_labels_created"] += len(new)


def _prompt_field(row: SourceRow, parsed: ParsedRecord) -> str:
    if parsed.format in (TRL_IMPLICIT, HH_RLHF):
        return "chosen"
    return "messages" if "messages" in (row.record or {}) else "prompt"
