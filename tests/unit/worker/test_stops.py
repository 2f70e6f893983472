"""cut_at_stop: the text before the earliest stop sequence."""

from __future__ import annotations

import pytest

from worker.stops import cut_at_stop


def test_no_stop_sequences_leaves_the_text() -> None:
    assert cut_at_stop("Once upon a time.", []) == ("Once upon a time.", False)


def test_a_stop_that_does_not_occur_leaves_the_text() -> None:
    assert cut_at_stop("Once upon a time", [".", "END"]) == ("Once upon a time", False)


def test_cut_before_the_stop() -> None:
    assert cut_at_stop("Once upon. a time.", ["."]) == ("Once upon", True)


@pytest.mark.parametrize(
    "stops",
    [["time", "upon", "a"], ["a", "upon", "time"], ["upon", "time"]],
)
def test_the_earliest_of_several_stops_wins_whatever_their_order(stops: list[str]) -> None:
    assert cut_at_stop("Once upon a time", stops) == ("Once ", True)


def test_a_longer_stop_starting_earlier_wins_over_a_shorter_later_one() -> None:
    assert cut_at_stop("abcdef", ["ef", "bcd"]) == ("a", True)


def test_stop_at_position_zero_gives_empty_text() -> None:
    assert cut_at_stop("\n\nhello", ["\n\n"]) == ("", True)


def test_empty_stop_strings_are_ignored() -> None:
    assert cut_at_stop("hello", [""]) == ("hello", False)
    assert cut_at_stop("hello.", ["", "."]) == ("hello", True)


def test_empty_text() -> None:
    assert cut_at_stop("", ["."]) == ("", False)


def test_tuple_of_stops() -> None:
    assert cut_at_stop("a|b", ("|",)) == ("a", True)
