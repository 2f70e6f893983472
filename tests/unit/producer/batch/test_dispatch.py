"""The dispatcher's pure decisions: how its window moves, and the bound on per-key labels."""

from __future__ import annotations

from collections import Counter

from producer.jobs.batch.dispatch import KEY_LABELS, Window, _bounded
from producer.jobs.batch.output import DISPATCHER, LineFold
from schemas.settings import Settings
from schemas.wire import ChoiceResult, ResultMessage, TaskError

SETTINGS = Settings(bulk_queue_s=0.5, bulk_window_min=32, bulk_window_max=100)


def test_the_window_grows_by_what_was_answered_while_it_held_lines_back() -> None:
    window = Window(32.0, held_back=True)
    window.update(answered=10, queued_ms=10 * 100, settings=SETTINGS)  # 0.1 s each: short
    assert window.size == 42
    window.update(answered=100, queued_ms=100 * 100, settings=SETTINGS)
    assert window.size == 100  # never past KC_BULK_WINDOW_MAX


def test_the_window_stays_when_it_held_nothing_back() -> None:
    window = Window(40.0, held_back=False)
    window.update(answered=10, queued_ms=10 * 100, settings=SETTINGS)
    assert window.size == 40


def test_the_window_shrinks_when_tasks_waited_longer_than_the_target() -> None:
    window = Window(50.0, held_back=True)
    window.update(answered=10, queued_ms=10 * 900, settings=SETTINGS)  # 0.9 s each: long
    assert window.size == 40
    for _ in range(10):
        window.update(answered=10, queued_ms=10 * 900, settings=SETTINGS)
    assert window.size == 32  # never under KC_BULK_WINDOW_MIN


def test_nothing_answered_moves_nothing() -> None:
    window = Window(50.0, held_back=True)
    window.update(answered=0, queued_ms=0, settings=SETTINGS)
    assert window.size == 50


def test_per_key_labels_are_bounded_and_other_is_always_there() -> None:
    waiting = Counter({f"key{i:02d}": 100 - i for i in range(30)})
    shown = _bounded(waiting, waiting)
    assert len(shown) == KEY_LABELS + 1 and "key00" in shown and "key29" not in shown
    assert shown["other"] == sum(100 - i for i in range(KEY_LABELS, 30))
    assert sum(shown.values()) == sum(waiting.values())
    assert _bounded(Counter(), Counter()) == {"other": 0}


def _result(custom_id: str, worker: str, queued_ms: int) -> ResultMessage:
    choice = ChoiceResult(
        text="t",
        finish_reason="length",
        prompt_tokens=1,
        completion_tokens=1,
        prediction_time_ms=1,
        created=1,
    )
    error = TaskError(code="cancelled", message="m") if worker == DISPATCHER else None
    return ResultMessage(
        request_id="r",
        choice_index=0,
        model="echo",
        worker_id=worker,
        choice=None if error else choice,
        error=error,
        custom_id=custom_id,
        queued_ms=queued_ms,
    )


def test_the_fold_counts_worker_results_and_their_wait_not_the_dispatchers() -> None:
    fold = LineFold(3)
    fold.add(_result("a", "w1", 200), 1)
    fold.add(_result("a", "w1", 200), 2)  # a second copy: counted once
    fold.add(_result("b", "w2", 400), 3)
    fold.add(_result("c", DISPATCHER, 0), 4)
    assert fold.tasks == {"echo": 2} and fold.queued_ms == {"echo": 600}
    assert fold.answered == 3 and fold.cancelled == 1
