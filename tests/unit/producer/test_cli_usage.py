"""``kafka-completions usage`` without Kafka: its options, its refusals (before any broker is
asked), and the table it prints from a report."""

from __future__ import annotations

import argparse

import pytest

from producer.cli import build_parser
from producer.cli.usage import report, table
from producer.tenants.report import costs_page, period, usage_page
from schemas.errors import ReportError
from schemas.settings import Settings
from schemas.usage import UsageBucket

D0 = 1_710_028_800  # 2024-03-10 00:00 UTC
KEY = "27df4730427975dd"
LEDGER = [
    UsageBucket(
        key_id=KEY,
        model="gpt-4",
        batch=False,
        start=D0 + 60,
        requests=3,
        failed=1,
        input_tokens=30,
        output_tokens=60,
        input_cost=0.0009,
        output_cost=0.0036,
    ),
    UsageBucket(key_id="", model="echo", batch=True, start=D0 + 3600, requests=2),
]


def _never(_: argparse.Namespace) -> Settings:
    raise AssertionError("Kafka was asked: the refusal should have come first")


def test_the_options_parse_to_seconds_and_group_names() -> None:
    args = build_parser().parse_args(
        ["usage", "--start", "2024-03-10", "--until", "2024-03-11T01:00+01:00", "--by", "key,model"]
    )
    assert (args.start, args.until, args.by) == (D0, D0 + 86400, ("key", "model"))
    assert build_parser().parse_args(["usage", "--since", "12h"]).since == 12 * 3600


@pytest.mark.parametrize(
    "argv",
    [["--since", "3x"], ["--start", "yesterday"], ["--by", "project"], ["--bucket", "1w"]],
)
def test_a_malformed_option_is_refused_by_name(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["usage", *argv])
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "param"),
    [(["--costs", "--bucket", "1h"], "--bucket"), (["--costs", "--by", "batch"], "--by")],
)
def test_costs_by_the_day_and_by_model_or_key_only(argv: list[str], param: str) -> None:
    args = build_parser().parse_args(["usage", *argv])
    with pytest.raises(ReportError) as refused:
        report(args, _never)
    assert refused.value.param == param


def test_the_table_shows_grouped_columns_named_keys_and_a_total() -> None:
    span = period(D0, D0 + 86400)
    page = usage_page(LEDGER, span, ["api_key_id", "batch"])
    lines = table(page, {KEY: "team-a"}).splitlines()
    assert [line.split() for line in lines] == [
        ["start", "(UTC)", "key", "batch", "requests", "failed", "input", "output"],
        ["2024-03-10", "00:00", "(no", "key)", "batch", "2", "0", "0", "0"],
        ["2024-03-10", "00:00", "team-a", "interactive", "3", "1", "30", "60"],
        ["total", "5", "1", "30", "60"],
    ]


def test_the_costs_table_sums_the_line_items() -> None:
    page = costs_page(LEDGER, period(D0, D0 + 86400), ["line_item"])
    lines = table(page, {}).splitlines()
    assert lines[0].split() == ["start", "(UTC)", "line", "item", "cost", "(USD)"]
    assert lines[-1].split() == ["total", "0.004500"]
    assert "gpt-4, output" in lines[-2]


def test_a_period_without_usage_prints_no_table() -> None:
    assert table(usage_page([], period(D0, D0 + 86400)), {}) == ""
