"""``python -m benchmarks.book [--records N] [--lines L]``: what the batch book holds in memory.

Every front end keeps every file and batch record the compacted topics hold, and a fold of each
running batch's results (``producer.jobs.batch``), so its memory grows with them. This feeds
``BatchBook`` the records a real service writes (no Kafka: the same ``_file`` and ``apply``
its reader calls, and the fold it keeps per running batch) and measures the bytes Python
allocates for them with ``tracemalloc``: per finished file record (``m_file``), per finished
batch record (``m_batch``) and per result line of a running batch (``m_line``). The capacity
model (docs/capacity.md) multiplies them out.
"""

from __future__ import annotations

import argparse
import json
import platform
import tracemalloc
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from producer.jobs.batch.book import BatchBook
from schemas.batch import BatchRecord, ChunkRef, FileRecord, OutputFile, RequestCounts
from schemas.settings import Settings
from schemas.wire import ChoiceResult, ResultMessage

_T0 = 1_764_763_200


def _file(i: int) -> FileRecord:
    return FileRecord(
        id=f"file-{i:032x}", key_id="k0123456789abcdef", filename=f"batch-{i}.jsonl",
        purpose="batch", bytes=250_000, lines=1_000, created_at=_T0 + i,
        upload=f"u{i:016x}", chunks=(ChunkRef(partition=0, offset=i),),
    )  # fmt: skip


def _batch(i: int) -> BatchRecord:
    return BatchRecord(
        id=f"batch_{i:032x}", key_id="k0123456789abcdef", input_file_id=f"file-{i:032x}",
        endpoint="/v1/chat/completions", completion_window="24h", status="completed",
        created_at=_T0 + i, expires_at=_T0 + i + 86_400, output_expires_after_s=2_592_000,
        total=1_000, tasks=1_000, models=("smollm2-135m-instruct",),
        metadata={"team": "search"}, counts=RequestCounts(total=1_000, completed=1_000),
        output=OutputFile(id=f"file-out-{i:028x}", bytes=600_000, lines=1_000),
        in_progress_at=_T0 + i + 1, finalizing_at=_T0 + i + 60, completed_at=_T0 + i + 61,
    )  # fmt: skip


def _result(batch_id: str, line: int) -> ResultMessage:
    return ResultMessage(
        request_id=str(uuid.UUID(int=line)), choice_index=0, model="smollm2-135m-instruct",
        worker_id="host-0", custom_id=f"request-{line}", job_id=batch_id,
        choice=ChoiceResult(
            text=" a completion of about forty tokens " * 5, finish_reason="length",
            prompt_tokens=120, completion_tokens=40, prediction_time_ms=900, created=_T0,
        ),
    )  # fmt: skip


def _allocated(fill: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated after ``fill`` ran (what it keeps), and what it returned."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = fill()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def measure(records: int, lines: int) -> dict[str, Any]:
    """Bytes per file record, per finished batch record and per folded line."""
    book = BatchBook(Settings(api_keys="benchmark-key"), lambda *_: None)  # type: ignore[arg-type]
    files = [
        SimpleNamespace(key=f.id.encode(), value=f.model_dump_json().encode())
        for f in map(_file, range(records))
    ]

    def read_files() -> None:
        for record in files:
            book._file(record)

    def read_batches() -> None:
        for value in batches:
            book.apply(BatchRecord.model_validate_json(value))

    files_bytes, _ = _allocated(read_files)
    # As read back from the topic: the record built from its bytes, inside the measurement.
    batches = [_batch(i).model_dump_json().encode() for i in range(records)]
    batch_bytes, _ = _allocated(read_batches)
    running = _batch(records).moved(status="in_progress", total=lines, counts=None, output=None)
    book.apply(running)
    results = [_result(running.id, n) for n in range(lines)]
    fold = book._folds[running.id]
    line_bytes, _ = _allocated(lambda: [fold.add(r, _T0 * 1000) for r in results])
    return {
        "records": records,
        "lines": lines,
        "m_file_bytes": round(files_bytes / records),
        "m_batch_bytes": round(batch_bytes / records),
        "m_line_bytes": round(line_bytes / lines),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the per-record figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.book", description=__doc__)
    parser.add_argument("--records", type=int, default=10_000, help="file and batch records")
    parser.add_argument("--lines", type=int, default=50_000, help="lines of the running batch")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.records, args.lines), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
