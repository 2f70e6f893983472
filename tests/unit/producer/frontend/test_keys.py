"""The key-management routes through TestClient, the keys topic in memory: admin keys only,
LiteLLM's shapes, a key shown once, and a managed key held to its models."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from producer.frontend.app import create_app
from producer.frontend.gateway import Gateway
from schemas.keys import key_id
from schemas.registry import load_registry
from schemas.settings import Settings
from schemas.wire import TaskMessage
from tests.unit.producer.tenants.topic import MemoryTopic

API_KEY = "static-api-key-0001"
ADMIN_KEY = "admin-key-0001"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class _Publisher:
    """Takes the place of the Kafka publisher; remembers the tasks."""

    def __init__(self) -> None:
        self.published: list[TaskMessage] = []

    async def publish(self, tasks: Sequence[TaskMessage], timeout_s: float | None = None) -> None:
        self.published.extend(tasks)


@pytest.fixture
def kafka_listener() -> Iterator[socket.socket]:
    """A listening socket standing in for Kafka: nothing may connect to it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.fixture
async def app(kafka_listener: socket.socket) -> AsyncIterator[FastAPI]:
    """The app with an API key and an admin key, its keys topic in memory."""
    host, port = kafka_listener.getsockname()
    # Nothing answers the published tasks: a short deadline ends such a request (504).
    settings = Settings(
        api_keys=(API_KEY,),
        admin_keys=(ADMIN_KEY,),
        kafka_bootstrap=f"{host}:{port}",
        request_timeout_s=0.2,
    )
    application = create_app(settings, load_registry(), CollectorRegistry())
    front: Gateway = application.state.front
    front.keybook._producer = MemoryTopic()
    kafka_publisher = front.publisher
    front.publisher = _Publisher()  # type: ignore[assignment]
    front.liveness._members = {"echo": 1}
    yield application
    front.keybook._producer = None
    front.publisher = kafka_publisher
    await front.stop()  # closes the never-started clients


def _front(app: FastAPI) -> Gateway:
    front = app.state.front
    assert isinstance(front, Gateway)
    return front


def _topic(app: FastAPI) -> MemoryTopic:
    topic = _front(app).keybook._producer
    assert isinstance(topic, MemoryTopic)
    return topic


def _published(app: FastAPI) -> list[TaskMessage]:
    publisher = _front(app).publisher
    assert isinstance(publisher, _Publisher)
    return publisher.published


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/key/generate", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    made: dict[str, Any] = response.json()
    return made


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_admin_routes_take_admin_keys_only(app: FastAPI) -> None:
    client = TestClient(app)
    made = _generate(client)
    for headers in ({}, _bearer("wrong")):
        assert _error(client.get("/key/list", headers=headers), 401)["code"] == "invalid_api_key"
    for key in (API_KEY, made["key"]):
        error = _error(client.post("/key/generate", json={}, headers=_bearer(key)), 403)
        assert error["code"] == "admin_key_required"
        _error(client.get("/key/list", headers=_bearer(key)), 403)
    # An admin key calls no model.
    body = {"prompt": "p", "model": "echo"}
    _error(client.post("/v1/completion", json=body, headers=ADMIN), 401)


def test_a_generated_key_calls_models_and_is_shown_once(app: FastAPI) -> None:
    client = TestClient(app)
    made = _generate(client, key_alias="team-a", models=["echo"], duration="1h", metadata={"t": 1})
    key = made["key"]
    assert key.startswith("sk-kc-") and made["token_id"] == key_id(key)
    assert made["key_alias"] == "team-a" and made["models"] == ["echo"]
    assert made["key_name"] == f"sk-kc-...{key[-4:]}" and made["expires"]
    response = client.post(
        "/v1/completion", json={"prompt": "p", "model": "echo"}, headers=_bearer(key)
    )
    assert response.status_code == 504, response.text  # published, and nothing answered
    assert [t.key_id for t in _published(app)] == [key_id(key)]
    # Nowhere else: not on Kafka, not in any other answer.
    assert key.encode() not in _topic(app).everything()
    info = client.get("/key/info", params={"key": key}, headers=ADMIN).json()
    full = client.get("/key/list", params={"return_full_object": "true"}, headers=ADMIN).json()
    assert key not in str(info) + str(full)
    assert info["key"] == key_id(key) and info["info"]["metadata"] == {"t": 1}


def test_a_key_outside_its_models_gets_openais_error_naming_the_model(app: FastAPI) -> None:
    client = TestClient(app)
    key = _generate(client, models=["echo"])["key"]
    chat = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
    for route, body in (
        ("/v1/chat/completions", chat),
        ("/v1/completions", {"model": "gpt-4", "prompt": "p"}),
        ("/v1/completion", {"prompt": "p", "model": ["echo", "gpt-4"]}),
    ):
        error = _error(client.post(route, json=body, headers=_bearer(key)), 403)
        assert error["type"] == "permission_error" and error["code"] == "model_not_allowed"
        assert error["models"] == ["gpt-4"] and "'gpt-4'" in error["message"]
        assert error["param"] == "model"
    assert _published(app) == []
    # A static key calls every model (here: no worker, so 503, not 403).
    static = client.post(
        "/v1/completions", json={"model": "gpt-4", "prompt": "p"}, headers=_bearer(API_KEY)
    )
    assert _error(static, 503)["code"] == "model_unavailable"


def test_update_info_list_and_delete_in_litellms_shapes(app: FastAPI) -> None:
    client = TestClient(app)
    first = _generate(client, key_alias="a", models=["echo"])
    second = _generate(client, key_alias="b", metadata={"team": "core"})
    listed = client.get("/key/list", headers=ADMIN).json()
    assert listed == {
        "keys": [second["token_id"], first["token_id"]],
        "total_count": 2,
        "current_page": 1,
        "total_pages": 1,
    }
    page = client.get("/key/list", params={"size": 1, "page": 2}, headers=ADMIN).json()
    assert page["keys"] == [first["token_id"]] and page["total_pages"] == 2
    by_alias = client.get("/key/list", params={"key_alias": "b"}, headers=ADMIN).json()
    assert by_alias["keys"] == [second["token_id"]]
    body = {"key": first["key"], "models": ["echo", "gpt-4"], "max_budget": 10}
    updated = client.post("/key/update", json=body, headers=ADMIN)
    assert updated.status_code == 200, updated.text
    assert updated.json()["key"] == first["token_id"] and updated.json()["models"] == [
        "echo",
        "gpt-4",
    ]
    assert _front(app).keybook.records[first["token_id"]].max_budget == 10
    deleted = client.post(
        "/key/delete", json={"key_aliases": ["b"], "keys": [first["token_id"]]}, headers=ADMIN
    )
    assert deleted.json() == {"deleted_keys": [first["token_id"], second["token_id"]]}
    for made in (first, second):
        error = _error(
            client.post(
                "/v1/completion",
                json={"prompt": "p", "model": "echo"},
                headers=_bearer(made["key"]),
            ),
            401,
        )
        assert error["code"] == "invalid_api_key"
    assert client.get("/key/list", headers=ADMIN).json()["keys"] == []
    revoked = client.get(
        "/key/list", params={"include_revoked": "true", "return_full_object": "true"}, headers=ADMIN
    )
    assert all(k["revoked_at"] for k in revoked.json()["keys"])


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/key/update", {"key": "sk-kc-" + "Z" * 43, "rpm_limit": 1}),
        ("/key/delete", {"keys": ["sk-kc-" + "Z" * 43]}),
    ],
)
def test_an_unknown_key_is_404_naming_its_id_never_the_key(
    app: FastAPI, route: str, body: dict[str, Any]
) -> None:
    error = _error(TestClient(app).post(route, json=body, headers=ADMIN), 404)
    assert error["code"] == "not_found" and key_id("sk-kc-" + "Z" * 43) in error["message"]
    assert "ZZZZ" not in str(error)


@pytest.mark.parametrize(
    "body",
    [
        {"key": "sk-secret-but-short"},  # fails the custom key's pattern
        {"key": ["sk-kc-secret-in-a-list-0123456789"]},
        {"keys": "sk-kc-secret-not-a-list"},
        {"new_key": "sk-kc-secret-unknown-field"},
    ],
)
def test_a_refused_key_field_is_never_echoed(app: FastAPI, body: dict[str, Any]) -> None:
    route = "/key/delete" if "keys" in body else "/key/generate"
    error = _error(TestClient(app).post(route, json=body, headers=ADMIN), 422)
    assert error["param"] in {"key", "keys", "new_key"} and "value" not in error
    assert "secret" not in str(error)


def test_generate_refuses_unknown_models_taken_aliases_and_configured_keys(app: FastAPI) -> None:
    client = TestClient(app)
    error = _error(client.post("/key/generate", json={"models": ["gpt-5"]}, headers=ADMIN), 404)
    assert error["code"] == "model_not_found" and error["models"] == ["gpt-5"]
    _generate(client, key_alias="a")
    error = _error(client.post("/key/generate", json={"key_alias": "a"}, headers=ADMIN), 409)
    assert error["param"] == "key_alias"
    custom = "sk-" + "m" * 20
    assert _generate(client, key=custom)["key"] == custom
    _error(client.post("/key/generate", json={"key": custom}, headers=ADMIN), 409)
    assert len(_topic(app).records) == 2


def test_admin_routes_are_in_the_openapi_document(app: FastAPI) -> None:
    paths = TestClient(app).get("/openapi.json").json()["paths"]
    assert {"/key/generate", "/key/update", "/key/delete", "/key/info", "/key/list"} <= set(paths)
    assert {"401", "403", "409", "422"} <= set(paths["/key/generate"]["post"]["responses"])
    assert "403" in paths["/v1/chat/completions"]["post"]["responses"]
