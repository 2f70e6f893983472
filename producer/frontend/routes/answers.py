"""How Batch API errors and objects are answered over HTTP (shared by files and batches)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from producer.jobs.batch.service import BatchService, OutputView
from producer.refusals import ApiError
from schemas.api import ErrorDetail
from schemas.batch import BatchObject, BatchRecord, FileObject, FileRecord, ListPage
from schemas.errors import BatchError, Conflict, NotFound


class HasBatches(Protocol):
    """The front end, as these routes need it."""

    batches: BatchService


@contextmanager
def answered() -> Iterator[None]:
    """Turn a BatchError into OpenAI's error answer (404, 409, 400), naming the field."""
    try:
        yield
    except BatchError as exc:
        if isinstance(exc, NotFound):
            code = "not_found"
        elif isinstance(exc, Conflict):
            code = "conflict"
        else:
            code = "invalid_request"
        detail = ErrorDetail(
            type="invalid_request_error", code=code, message=str(exc), param=exc.param
        )
        raise ApiError(detail) from exc


def file_object(file: FileRecord | OutputView) -> FileObject:
    """OpenAI's File object of an upload or of a batch's output."""
    if isinstance(file, FileRecord):
        return FileObject.model_validate(file.model_dump(include=_FILE_FIELDS))
    batch = file.batch
    return FileObject(
        id=file.id,
        bytes=file.bytes,
        created_at=batch.finalizing_at or batch.created_at,
        filename=f"{batch.id}_{file.kind}.jsonl",
        purpose="batch_output",
        expires_at=batch.output_expires_at,
    )


def batch_object(service: BatchService, batch: BatchRecord) -> BatchObject:
    """OpenAI's Batch object, with its counts as they stand."""
    return BatchObject.model_validate(
        batch.model_dump(include=_BATCH_FIELDS)
        | {
            "output_file_id": batch.output.id if batch.output else None,
            "error_file_id": batch.error_file.id if batch.error_file else None,
            "request_counts": service.counts(batch),
        }
    )


# What the kept records and OpenAI's objects share, copied across by name.
_FILE_FIELDS = set(FileObject.model_fields) & set(FileRecord.model_fields)
_BATCH_FIELDS = set(BatchObject.model_fields) & set(BatchRecord.model_fields)


def page(items: list[Any], ids: list[str], after: str | None, limit: int) -> ListPage:
    """OpenAI's cursor page of ``items`` (newest first) after the one with id ``after``."""
    start = ids.index(after) + 1 if after in ids else 0
    chosen = items[start : start + limit]
    chosen_ids = ids[start : start + limit]
    return ListPage(
        data=chosen,
        has_more=start + limit < len(items),
        first_id=chosen_ids[0] if chosen_ids else None,
        last_id=chosen_ids[-1] if chosen_ids else None,
    )
