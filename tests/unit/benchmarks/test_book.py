"""benchmarks.book measures what the batch book keeps per record, in bytes."""

from __future__ import annotations

from benchmarks.book import measure


def test_the_book_keeps_bytes_for_each_kind_of_record() -> None:
    figures = measure(records=200, lines=500)
    # A batch record parsed from its bytes is kept whole; a folded line keeps only its id.
    assert figures["m_batch_bytes"] > figures["m_line_bytes"] > 0
    assert figures["m_file_bytes"] > 0
