"""The usage and costs routes through TestClient, without the lifespan (no Kafka): what they
take, refuse and declare; the book is filled by hand."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from producer.frontend.app import create_app
from producer.tenants.usagebook import UsageBook
from schemas.keys import key_id
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.usage import UsageBucket

KEY, ADMIN = "usage-test-key", "usage-test-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}
D0 = 1_710_028_800  # 2024-03-10 00:00 UTC
USAGE = "/v1/organization/usage/completions"
COSTS = "/v1/organization/costs"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The app with one minute of this key's usage in its book (reported as read)."""
    # Port 9 (discard): never contacted, the lifespan does not run without ``with``.
    settings = Settings(
        api_keys=(SecretStr(KEY),),
        admin_keys=(SecretStr(ADMIN),),
        kafka_bootstrap="127.0.0.1:9",
    )
    application = create_app(settings, load_registry(), CollectorRegistry())
    book: UsageBook = application.state.front.usage
    for model, batch in (("gpt-4", False), ("echo", True)):
        book.apply(
            UsageBucket(key_id=key_id(KEY), model=model, batch=batch, start=D0 + 60, requests=1)
        )
    monkeypatch.setattr(UsageBook, "ready", property(lambda _: True))
    return application


def get(app: FastAPI, path: str, query: str, headers: dict[str, str] = AUTH) -> Any:
    return TestClient(app).get(f"{path}?{query}", headers=headers)


def test_503_until_the_ledger_is_read(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(UsageBook, "ready", property(lambda _: False))
    for path in (USAGE, COSTS):
        answer = get(app, path, f"start_time={D0}")
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert "usage ledger" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "lists",
    ["group_by[]=model&group_by[]=batch", "group_by%5B%5D=model&group_by%5b%5d=batch"],
    ids=["brackets", "escaped"],
)
def test_lists_as_openais_sdk_sends_them_are_read_as_repeated_ones(
    app: FastAPI, lists: str
) -> None:
    repeated = get(app, USAGE, f"start_time={D0}&group_by=model&group_by=batch")
    sdk_style = get(app, USAGE, f"start_time={D0}&{lists}")
    assert repeated.status_code == sdk_style.status_code == 200
    assert sdk_style.json() == repeated.json()
    models = [(r["model"], r["batch"]) for r in sdk_style.json()["data"][0]["results"]]
    assert models == [("echo", True), ("gpt-4", False)]


@pytest.mark.parametrize(
    ("path", "query", "param", "value"),
    [
        (USAGE, "bucket_width=1w", "bucket_width", "1w"),
        (USAGE, "limit=0", "limit", "0"),
        (USAGE, "batch=maybe", "batch", "maybe"),
        (USAGE, "group_by=project", "group_by.0", "project"),
        (COSTS, "bucket_width=1h", "bucket_width", "1h"),
        (COSTS, "limit=181", "limit", "181"),
    ],
)
def test_400_names_the_param_and_value(
    app: FastAPI, path: str, query: str, param: str, value: str
) -> None:
    answer = get(app, path, f"start_time={D0}&{query}")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"], error["value"]) == (
        "invalid_request_error",
        param,
        value,
    )


def test_a_missing_start_time_is_a_400_and_a_missing_key_a_401(app: FastAPI) -> None:
    assert get(app, USAGE, "").json()["error"]["param"] == "start_time"
    assert get(app, USAGE, "", headers={}).status_code == 401


def test_a_page_cursor_this_service_did_not_give_is_a_404(app: FastAPI) -> None:
    answer = get(app, USAGE, f"start_time={D0}&page=cursor")
    assert answer.status_code == 404
    assert answer.json()["error"]["param"] == "page"


def test_a_limit_past_the_widths_maximum_is_that_maximum(app: FastAPI) -> None:
    # Any limit the schema admits is served (OpenAI's maxima depend on bucket_width).
    answer = get(app, USAGE, f"start_time={D0}&bucket_width=1d&limit=1000")
    assert answer.status_code == 200
    assert len(answer.json()["data"]) == 31
    assert answer.json()["has_more"] is True


def test_an_end_before_the_start_is_an_empty_page(app: FastAPI) -> None:
    answer = get(
        app, COSTS, f"start_time={D0}&end_time={D0 - 1}", {"Authorization": f"Bearer {ADMIN}"}
    )
    assert answer.json() == {"object": "page", "data": [], "has_more": False, "next_page": None}


def test_the_schema_declares_both_routes_and_their_errors(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path in (USAGE, COSTS):
        op = paths[path]["get"]
        assert {"200", "400", "401", "404", "503"} <= set(op["responses"]), path
        assert "Retry-After" in op["responses"]["503"]["headers"]
        params = {p["name"]: p for p in op["parameters"]}
        assert params["start_time"]["required"] is True
    usage_groups = {p["name"]: p for p in paths[USAGE]["get"]["parameters"]}["group_by"]
    assert usage_groups["schema"]["anyOf"][0]["items"]["enum"] == [
        "model",
        "api_key_id",
        "batch",
        "project_id",
        "user_id",
    ]
