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
    libraries = {name: logging.getLogger(name).level for name in logs.LIBRARIES}
    yield
    root.handlers[:] = saved
    root.setLevel(level)
    for name, before in libraries.items():
        logging.getLogger(name).setLevel(before)


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


@pytest.mark.parametrize(
    ("level", "library_level"),
    [("INFO", logging.WARNING), ("ERROR", logging.ERROR), ("DEBUG", logging.DEBUG)],
)
def test_client_libraries_say_only_warnings_unless_debug(level: str, library_level: int) -> None:
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # as uvicorn's Config does
    logs.configure_logging(level, "text")
    for name in ("aiokafka", "aiokafka.consumer.group_coordinator", "uvicorn.error"):
        assert logging.getLogger(name).getEffectiveLevel() == library_level, name
    assert logging.getLogger("producer.frontend").getEffectiveLevel() == logging.getLevelName(level)


def test_a_translated_library_is_hushed_only_inside_the_block() -> None:
    logs.configure_logging("INFO", "text")
    with logs.translated("aiokafka"):
        assert not logging.getLogger("aiokafka").isEnabledFor(logging.ERROR)
    assert logging.getLogger("aiokafka").isEnabledFor(logging.ERROR)
    logs.configure_logging("DEBUG", "text")
    with logs.translated("aiokafka"):  # DEBUG asks for everything
        assert logging.getLogger("aiokafka").isEnabledFor(logging.ERROR)


def test_transformers_draws_loading_bars_only_at_debug() -> None:
    from transformers.utils import logging as transformers_logging

    try:
        logs.configure_logging("INFO", "text")
        logs.quiet_progress_bars()
        assert not transformers_logging.is_progress_bar_enabled()
        logs.configure_logging("DEBUG", "text")
        logs.quiet_progress_bars()
        assert transformers_logging.is_progress_bar_enabled()
    finally:
        transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_a_coordinator_not_elected_yet_is_no_error_line(level: str, shown: bool) -> None:
    logs.configure_logging(level, "text")
    handler = logging.getLogger().handlers[0]
    passing = logging.LogRecord(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        __file__,
        1,
        "Group Coordinator Request failed: %s",
        ("[Error 15] GroupCoordinatorNotAvailableError",),
        None,
    )
    real = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "Unable connect", (), None)
    assert bool(handler.filter(passing)) is shown
    assert handler.filter(real)
