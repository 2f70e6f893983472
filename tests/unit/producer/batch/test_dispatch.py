"""The dispatcher's pure decisions: how its window moves, and the bound on per-key labels."""

from __future__ import annotations

from collections import Counter

from producer.jobs.batch.book import BatchBook
from producer.jobs.batch.dispatch import KEY_LABELS, Dispatcher, Window, _bounded
from producer.jobs.batch.output import DISPATCHER, LineFold
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.wire import ChoiceResult, ResultMessage, TaskError

SETTINGS = Settings(bulk_queue_s=0.5, bulk_window_min=32, bulk_window_max=100)


def test_the_window_is_the_rate_times_the_task_time_plus_the_queue_target() -> None:
    window = Window(32.0)
    for turn in range(40):  # 2 s of turns: 50 tasks/s answered, 1 s of model time each
        window.update(turn * 0.05, answered=5 if turn % 2 else 0, work_ms=5000, settings=SETTINGS)
    assert 70 <= window.size <= 80  # 50/s x (1 s + 0.5 s) = 75


def test_a_fast_model_opens_the_window_up_to_its_largest() -> None:
    window = Window(32.0)
    for turn in range(20):  # 1,000 tasks/s, no model time: 500 would do; the largest is 100
        window.update(turn * 0.05, answered=50, work_ms=0, settings=SETTINGS)
    assert window.size == 100


def test_a_slow_model_keeps_the_smallest_window_and_a_burst_is_not_a_rate() -> None:
    window = Window(32.0)
    window.update(0.0, answered=16, work_ms=16 * 600, settings=SETTINGS)  # one batch at once
    # 16 over at least 0.5 s, x (0.6 s + 0.5 s) = 35.2; not 16 over one turn's 0.05 s (352).
    assert window.size == 35.2
    window = Window(32.0)
    window.update(0.0, answered=4, work_ms=4 * 600, settings=SETTINGS)
    assert window.size == 32  # 8.8 wanted: never under KC_BULK_WINDOW_MIN


def test_no_answers_lately_keeps_the_size() -> None:
    window = Window(50.0)
    window.update(0.0, answered=0, work_ms=0, settings=SETTINGS)
    assert window.size == 50
    window.update(1.0, answered=100, work_ms=0, settings=SETTINGS)
    opened = window.size
    window.update(10.0, answered=0, work_ms=0, settings=SETTINGS)  # long idle: answers aged out
    assert opened == 100 and window.size == opened and not window.answers


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
        prediction_time_ms=7,
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


def test_the_fold_counts_worker_results_and_their_time_not_the_dispatchers() -> None:
    fold = LineFold(3)
    fold.add(_result("a", "w1", 200), 1)
    fold.add(_result("a", "w1", 200), 2)  # a second copy: counted once
    fold.add(_result("b", "w2", 400), 3)
    fold.add(_result("c", DISPATCHER, 0), 4)
    assert fold.tasks == {"echo": 2} and fold.work_ms == {"echo": 7 + 7}
    assert fold.answered == 3 and fold.cancelled == 1


def test_a_line_larger_than_the_window_goes_alone_once_the_window_is_empty() -> None:
    settings = Settings(bulk_window_min=16, bulk_window_max=16)

    async def write(_: object) -> None:
        return None

    dispatcher = Dispatcher(settings, load_registry(), BatchBook(settings, write))
    assert dispatcher._fits({}, Counter(), "echo", 20)  # nothing in flight: it goes
    assert not dispatcher._fits({}, Counter({"echo": 1}), "echo", 20)  # waits for the rest
    budget: dict[str, int] = {}
    assert dispatcher._fits(budget, Counter({"echo": 10}), "echo", 6)
    assert not dispatcher._fits(budget, Counter({"echo": 10}), "echo", 7)
