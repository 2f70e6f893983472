"""Logging set-up shared by every process: text or JSON lines, with the request id.

The request id travels in a context variable on the front end and in the task message on the
worker, and every log record made while handling a request carries it, so one request can be
followed from the front end through Kafka to the worker (``grep`` the id, or filter the JSON
field ``request_id``). ``KC_LOG_FORMAT=json`` writes one JSON object per line.

A person reads our own lines: the client libraries (aiokafka, uvicorn, transformers and the
HTTP clients) log at WARNING and transformers draws no loading bars, unless
``KC_LOG_LEVEL=DEBUG`` asks for everything.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator
from typing import Literal

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_FIELDS = ("request_id", "model", "choice_index", "outcome", "status", "job_id")
# Their INFO lines narrate connections and group joins that our own lines already summarise
# (a fresh `make run` printed 17 of them, one a 900-character partition list).
LIBRARIES = ("aiokafka", "uvicorn", "transformers", "httpx", "httpcore", "huggingface_hub")
_LIBRARY_CHILDREN = tuple(f"{name}." for name in LIBRARIES)


class _RequestIdFilter(logging.Filter):
    """Copies the current request id onto every record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class _PassingStates(logging.Filter):
    """Drops aiokafka's errors about a group coordinator that is not there yet.

    A fresh broker elects one on the first group lookup, and every consumer logs ERROR lines
    while it waits: a state that passes by itself, not an error (shown at DEBUG).
    """

    _STATES = ("GroupCoordinatorNotAvailable", "CoordinatorLoadInProgress")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno >= logging.CRITICAL:
            return True
        message = record.getMessage()
        return not any(state in message for state in self._STATES)


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
    if level != "DEBUG":
        handler.addFilter(_PassingStates())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    libraries = logging.NOTSET if level == "DEBUG" else max(logging.WARNING, root.level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(libraries)
    # A library's own loggers follow it: one that set a level of its own (uvicorn's Config
    # sets uvicorn.error's when given a log level) would otherwise keep it.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(_LIBRARY_CHILDREN):
            logger.setLevel(logging.NOTSET)


def quiet_progress_bars() -> None:
    """No transformers loading bars unless the root logger is at DEBUG (call after importing it)."""
    from transformers.utils import logging as transformers_logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    else:
        transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def translated(library: str) -> Iterator[None]:
    """Hush a library's log while our boundary turns its failure into one error of ours.

    aiokafka logs each refused connection before raising; the caller's one line says it.
    """
    logger = logging.getLogger(library)
    before = logger.level
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)
