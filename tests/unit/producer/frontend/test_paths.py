"""The route table through the app: a 405's Allow, and which POSTs the body guard checks.

The app is built without its lifespan and pointed at a port nothing listens on: every answer
here comes from the router, the guard or a lookup in the (empty) batch book, never from Kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from producer.frontend.app import create_app
from schemas.registry import load_registry
from schemas.settings import Settings

KEY = "guard-key"


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    """The front end, its lifespan never run (so Kafka is never contacted)."""
    settings = Settings(api_keys=(KEY,), kafka_bootstrap="127.0.0.1:9")
    app = create_app(settings, load_registry(), CollectorRegistry())
    yield TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
    await app.state.front.stop()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/batches", "GET, POST"),
        ("OPTIONS", "/v1/files", "GET, POST"),
        ("PUT", "/v1/files/file-abc", "DELETE, GET"),
        ("GET", "/v1/batches/batch_abc/cancel", "POST"),
        ("POST", "/v1/batches/batch_abc", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_405_names_every_method_its_path_declares(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    # GET and POST of /v1/batches are two routes: the router alone would name only one.
    response = client.request(method, path, content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "405"


@pytest.mark.parametrize(
    "headers",
    # openai-python's cancel sends no body but its default Content-Type: application/json.
    [{}, {"Content-Type": "application/json"}, {"Content-Type": "text/plain"}],
    ids=["no-content-type", "sdk", "text"],
)
def test_a_bodiless_cancel_reaches_its_route(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/batches/batch_abc/cancel", headers=headers)
    assert response.status_code == 404, response.text  # the book's answer: no such batch
    assert response.json()["error"]["param"] == "batch_id"


def test_a_route_that_takes_a_body_still_refuses_one_that_is_not_json(client: TestClient) -> None:
    response = client.post("/v1/batches", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415, response.text
