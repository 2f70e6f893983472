"""Logging set-up shared by every process: text or JSON lines, with the request id.

The request id travels in a context variable on the front end and in the task message on the
worker, and every log record made while handling a request carries it, so one request can be
followed from the front end through Kafka to the worker (``grep`` the id, or filter the JSON
field ``request_id``). ``KC_LOG_FORMAT=json`` writes one JSON object per line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Literal

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_FIELDS = ("request_id", "model", "choice_index", "outcome", "status", "job_id")


class _RequestIdFilter(logging.Filter):
    """Copies the current request id onto every record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the request fields."""

    def __init__(self) -> None:
        super().__init__()
        # ``ts`` ends in ``Z``, so it must be UTC whatever the machine's zone (logging's
        # default converter is local time).
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with ``[request_id]`` after the logger when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    """Install the root handler once per process (replacing any earlier one)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
