"""The topics' public contract as JSON Schema documents, generated from the wire models.

``python -m schemas.contract`` writes one document per message into ``docs/wire/``;
``--check`` writes nothing and exits 1 naming each document that differs from the models (the
unit tests do the same), so the committed documents cannot drift from what the code reads.
``docs/topics.md`` says which topic carries which message.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel

from schemas.wire import CancelMessage, DeadLetterHeaders, ResultMessage, StreamChunk, TaskMessage

DIALECT = "https://json-schema.org/draft/2020-12/schema"
DIRECTORY = Path(__file__).resolve().parents[1] / "docs" / "wire"
MESSAGES: dict[str, type[BaseModel]] = {
    "task.schema.json": TaskMessage,
    "result.schema.json": ResultMessage,
    "stream-chunk.schema.json": StreamChunk,
    "cancel.schema.json": CancelMessage,
    "dlq-headers.schema.json": DeadLetterHeaders,
}


def document(model: type[BaseModel]) -> str:
    """The JSON Schema of what a v1 reader of ``model`` accepts, as committed (stable text)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return json.dumps({"$schema": DIALECT, **schema}, indent=2, ensure_ascii=False) + "\n"


def stale(directory: Path = DIRECTORY) -> list[str]:
    """The names of the documents in ``directory`` that are missing or differ from the models."""
    return [
        name
        for name, model in MESSAGES.items()
        if not (directory / name).is_file() or (directory / name).read_text() != document(model)
    ]


def write(directory: Path = DIRECTORY) -> None:
    """Write every document into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, model in MESSAGES.items():
        (directory / name).write_text(document(model))


def main(argv: list[str] | None = None) -> int:
    """Write the documents, or with ``--check`` report the stale ones (exit code 1)."""
    parser = argparse.ArgumentParser(prog="python -m schemas.contract", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    if not args.check:
        write()
        return 0
    drifted = stale()
    for name in drifted:
        print(f"{DIRECTORY / name} differs from the models: run python -m schemas.contract")
    return 1 if drifted else 0


if __name__ == "__main__":
    raise SystemExit(main())
