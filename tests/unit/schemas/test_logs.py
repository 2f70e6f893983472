"""Log records carry the request id, as text or JSON lines."""

from __future__ import annotations

import json
import logging
import time

import pytest

from schemas import logs


def _format(fmt: str, **extra: object) -> str:
    handler_logs: list[str] = []
    logs.configure_logging("INFO", fmt)  # type: ignore[arg-type]
    root = logging.getLogger()
    handler = root.handlers[0]
    record = logging.LogRecord("kc.test", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    assert handler.filter(record)
    handler_logs.append(handler.format(record))
    return handler_logs[0]


@pytest.fixture(autouse=True)
def _restore_root() -> object:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_json_lines_carry_the_request_id_from_the_context() -> None:
    token = logs.request_id.set("req-1")
    try:
        line = json.loads(_format("json", outcome="done"))
    finally:
        logs.request_id.reset(token)
    assert line["request_id"] == "req-1"
    assert line["message"] == "hello there"
    assert line["outcome"] == "done" and line["level"] == "INFO" and line["logger"] == "kc.test"


def test_an_explicit_request_id_wins_over_the_context() -> None:
    token = logs.request_id.set("ctx")
    try:
        line = json.loads(_format("json", request_id="task-7"))
    finally:
        logs.request_id.reset(token)
    assert line["request_id"] == "task-7"


def test_text_lines_show_the_request_id_only_when_there_is_one() -> None:
    assert "[r-9]" in _format("text", request_id="r-9")
    assert "[" not in _format("text")


def test_json_ts_is_utc_on_a_machine_in_another_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30 all year: no daylight saving
    time.tzset()
    try:
        logs.configure_logging("INFO", "json")
        handler = logging.getLogger().handlers[0]
        record = logging.LogRecord("kc.test", logging.INFO, __file__, 1, "x", (), None)
        record.created, record.msecs = 1_700_000_000.25, 250.0  # 2023-11-14T22:13:20.250Z
        assert time.localtime(record.created).tm_hour == 3, "TZ did not take effect"
        assert json.loads(handler.format(record))["ts"] == "2023-11-14T22:13:20.250Z"
    finally:
        monkeypatch.undo()
        time.tzset()
