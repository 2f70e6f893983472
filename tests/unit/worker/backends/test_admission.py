"""When the local backend prefills waiting rows into its running batch."""

from __future__ import annotations

from worker.backends.transformers import ADMIT_EVERY_STEPS, should_admit


def test_nothing_waiting_is_never_admitted() -> None:
    assert not should_admit(0, 0, 0)
    assert not should_admit(0, 5, ADMIT_EVERY_STEPS + 3)


def test_an_idle_batch_admits_at_once() -> None:
    assert should_admit(1, 0, 0)


def test_a_few_late_rows_wait_to_be_admitted_together() -> None:
    steps = [s for s in range(ADMIT_EVERY_STEPS + 2) if should_admit(2, 8, s)]
    assert steps[0] == ADMIT_EVERY_STEPS


def test_rows_that_would_double_the_batch_join_at_the_next_step() -> None:
    assert should_admit(8, 8, 0)
    assert should_admit(7, 1, 0)
    assert not should_admit(7, 8, 0)
