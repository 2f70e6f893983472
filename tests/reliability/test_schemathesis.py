"""Schemathesis against the live front end (with an ``echo`` worker, so 200s happen too): at
least 1,000 generated requests, valid and invalid; no 5xx, every answer matches the schema."""

from __future__ import annotations

import asyncio
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from schemas.settings import Settings
from tests.conftest import API_KEY
from tests.integration.harness import front_end, wait_live, worker

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    # Schemathesis' own strategies draw from `random`, which Hypothesis deprecates.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]
CASES = 1100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _on_echo(case: Case[Any]) -> Case[Any]:
    # Generated model names are almost never registered; on "echo" a valid body is served.
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "echo"
    return case


def _strategy(schema: Any) -> st.SearchStrategy[Case[Any]]:
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE))
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
        if operation.method.upper() == "POST":
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE).map(_on_echo))
    return st.one_of(strategies)


def _run(schema: Any, base_url: str) -> tuple[list[int], list[str]]:
    statuses: list[int] = []
    failures: list[str] = []

    @hypothesis.settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=_strategy(schema))
    def one(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=AUTH, timeout=30)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as exc:  # a check failed: keep going, report them all
            failures.append(f"{case.method} {case.path} -> {response.status_code}: {exc}")

    one()
    return statuses, failures


async def test_generated_requests_get_no_5xx_and_match_the_schema(settings: Settings) -> None:
    async with worker(settings, "echo"), front_end(settings) as client:
        client.headers.update(AUTH)
        await wait_live(client, "echo")
        schema = schemathesis.openapi.from_dict((await client.get("/openapi.json")).json())
        # Blocking HTTP calls in a thread: this loop serves the front end meanwhile.
        statuses, failures = await asyncio.to_thread(_run, schema, str(client.base_url))
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print(f"\n{len(statuses)} generated requests; statuses {counts}; {len(failures)} failures")
    assert len(statuses) >= 1000
    assert counts.get(200, 0) >= 50, counts
    assert not failures, "\n\n".join(failures[:5])
