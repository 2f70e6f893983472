"""benchmarks.hops: per-topic rates from two snapshots, and which log folders are topics."""

from __future__ import annotations

from pathlib import Path

from benchmarks.hops import Snapshot, _partitions, per_topic


def test_rates_and_per_request_costs_of_the_topics_that_grew() -> None:
    before = Snapshot(
        {"p.completions.results": 100, "idle": 5}, {"p.completions.results": 1000, "idle": 50}
    )
    after = Snapshot(
        {"p.completions.results": 300, "idle": 5, "__consumer_offsets": 40},
        {"p.completions.results": 21000, "idle": 50, "__consumer_offsets": 4000},
    )
    rows = per_topic(before, after, seconds=10.0, requests=100, prefix="p.")
    assert rows == [
        {
            "topic": "__consumer_offsets",
            "records_per_s": 4.0,
            "bytes_per_s": 400,
            "records_per_request": 0.4,
            "bytes_per_request": 40.0,
        },
        {
            "topic": "completions.results",
            "records_per_s": 20.0,
            "bytes_per_s": 2000,
            "records_per_request": 2.0,
            "bytes_per_request": 200.0,
        },
    ]


def test_partition_folders_are_topics_but_not_the_metadata_log(tmp_path: Path) -> None:
    for name in ("a.b-c-0", "a.b-c-11", "__cluster_metadata-0", "__consumer_offsets-3", "x"):
        (tmp_path / name).mkdir()
    (tmp_path / "meta.properties").write_text("")
    found = {(tp.topic, tp.partition) for tp in _partitions(tmp_path)}
    assert found == {("a.b-c", 0), ("a.b-c", 11), ("__consumer_offsets", 3)}
