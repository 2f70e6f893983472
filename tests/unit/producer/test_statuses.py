"""Every HTTP status the service answers is decided in producer.refusals, and nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import producer
from producer.refusals import FAILURE_STATUS, REFUSAL_STATUS, ApiError, failure_status, status_of
from schemas.api import ErrorDetail

_ROOT = Path(producer.__file__).parent
_SOURCES = sorted(p for p in _ROOT.rglob("*.py") if p.name != "refusals.py")


def _status_literals(path: Path) -> list[str]:
    """Integer literals 100..599 passed to an error response or ApiError in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {
            "error_response",
            "ApiError",
        }:
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
                    found.append(f"{path.relative_to(_ROOT)}:{node.lineno}: {arg.value}")
    return found


def test_no_module_but_refusals_writes_a_status_into_an_error_answer() -> None:
    assert [hit for path in _SOURCES for hit in _status_literals(path)] == []


def test_every_error_code_the_producer_writes_has_a_status() -> None:
    codes = {
        m.group(1)
        for path in _SOURCES
        for m in re.finditer(r'\bcode="([a-z_]+)"', path.read_text())
    }
    assert codes, "the scan found no error code: it no longer reads the sources"
    assert codes - set(REFUSAL_STATUS) - set(FAILURE_STATUS) == set()


@pytest.mark.parametrize(
    ("code", "spec", "openai"),
    [
        ("invalid_value", 422, 400),
        ("invalid_json", 400, 400),
        ("model_not_found", 404, 404),
        ("overloaded", 429, 429),
        ("model_unavailable", 503, 503),
    ],
)
def test_openai_routes_answer_an_invalid_parameter_with_400(
    code: str, spec: int, openai: int
) -> None:
    assert (status_of(code), status_of(code, openai=True)) == (spec, openai)


def test_an_api_error_takes_its_status_from_its_code() -> None:
    detail = ErrorDetail(type="rate_limit_error", code="overloaded", message="busy")
    assert ApiError(detail).status == 429


def test_the_most_severe_failure_of_a_request_wins() -> None:
    assert failure_status(["invalid_request", "deadline_exceeded", "rate_limited"]) == 504
    assert failure_status(["unauthorized"]) == 502  # a vendor refusing our key is our fault
    assert failure_status(["something_new"]) == 502
