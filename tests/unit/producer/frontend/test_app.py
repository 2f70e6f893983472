"""The HTTP front end through TestClient, without its lifespan: no Kafka is ever contacted.

``TestClient(app)`` outside a ``with`` block does not run the lifespan, so ``Gateway.start``
(topics, producer, reply consumer, liveness) never runs. The Kafka address given to the app
is a socket of ours that listens and is checked to have received no connection. Where a test
needs a live worker it sets the liveness count, and where it needs results it replaces the
publisher with one that answers through the reply router, as the results consumer would.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from producer.frontend.app import create_app
from producer.frontend.gateway import Gateway
from schemas.keys import key_id
from schemas.registry import ModelSpec, Registry, load_registry
from schemas.settings import Settings
from schemas.wire import ChoiceResult, ResultMessage, TaskMessage, encode
from tests.conftest import SPEC_EXAMPLE
from tests.unit.factories import task
from worker.backends.echo import EchoBackend, echo_text
from worker.task import Completion

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROUTE = "/v1/completion"


class _RecordingPublisher:
    """Takes the place of the Kafka publisher; remembers what was published."""

    def __init__(self) -> None:
        self.published: list[TaskMessage] = []

    async def publish(self, tasks: Sequence[TaskMessage], timeout_s: float | None = None) -> None:
        self.published.extend(tasks)


class _EchoPublisher(_RecordingPublisher):
    """Runs each task on the echo backend and routes the result like the results consumer."""

    def __init__(self, front: Gateway) -> None:
        super().__init__()
        self._front = front

    async def publish(self, tasks: Sequence[TaskMessage], timeout_s: float | None = None) -> None:
        await super().publish(tasks, timeout_s)
        backend = EchoBackend(self._front.registry.get("echo"))
        async for done, outcome in backend.run([task(t) for t in tasks]):
            assert isinstance(outcome, Completion)
            choice = ChoiceResult(
                text=outcome.text,
                finish_reason=outcome.finish_reason,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                prediction_time_ms=outcome.prediction_time_ms + 7,
                created=int(time.time()),
            )
            result = ResultMessage(
                request_id=done.message.request_id,
                choice_index=done.message.choice_index,
                model=done.message.model,
                worker_id="fake-worker",
                choice=choice,
            )
            self._front.replies.deliver_early(encode(result))


@pytest.fixture
def kafka_listener() -> Iterator[socket.socket]:
    """A listening socket standing in for Kafka: any connection to it is a failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected while the test ran


def _settings(listener: socket.socket, **overrides: Any) -> Settings:
    host, port = listener.getsockname()
    fields: dict[str, Any] = {"api_keys": (KEY,), "kafka_bootstrap": f"{host}:{port}"}
    return Settings(**(fields | overrides))


def _never_started(front: Gateway) -> list[str]:
    calls: list[str] = []

    async def start() -> None:
        calls.append("start")
        raise AssertionError("Gateway.start ran: the lifespan (and Kafka) was used")

    front.start = start  # type: ignore[method-assign]
    return calls


@pytest.fixture
async def app(
    request: pytest.FixtureRequest, kafka_listener: socket.socket
) -> AsyncIterator[FastAPI]:
    """The app on the default registry (override: indirect params of settings, registry)."""
    params: dict[str, Any] = getattr(request, "param", {})
    settings = _settings(kafka_listener, **params.get("settings", {}))
    registry = params.get("registry") or load_registry()
    # Built inside the running loop: see test_create_app_needs_no_running_loop for why.
    application = create_app(settings, registry, CollectorRegistry())
    front: Gateway = application.state.front
    starts = _never_started(front)
    kafka_publisher = front.publisher
    front.publisher = _RecordingPublisher()  # type: ignore[assignment]
    yield application
    assert starts == []
    assert not front.ready
    front.publisher = kafka_publisher
    await front.stop()  # closes the never-started clients (no connection: see kafka_listener)


def _front(app: FastAPI) -> Gateway:
    front = app.state.front
    assert isinstance(front, Gateway)
    return front


def _published(app: FastAPI) -> list[TaskMessage]:
    publisher = _front(app).publisher
    assert isinstance(publisher, _RecordingPublisher)
    return publisher.published


def _live(app: FastAPI, *models: str) -> None:
    _front(app).liveness._members = dict.fromkeys(models, 1)


def _client(app: FastAPI) -> TestClient:
    return TestClient(app)  # no ``with``: the lifespan does not run


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"type", "code", "message"} <= set(error)
    return error


# --- construction -------------------------------------------------------------------------


def test_create_app_needs_no_running_loop(kafka_listener: socket.socket) -> None:
    # `kafka-completions serve` calls create_app from plain synchronous code (cli/services.py).
    app = create_app(_settings(kafka_listener), load_registry(), CollectorRegistry())
    front = _front(app)
    starts = _never_started(front)
    response = _client(app).get("/healthz")
    assert response.status_code == 200
    assert starts == []


def test_create_app_refuses_no_api_keys(kafka_listener: socket.socket) -> None:
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="KC_API_KEYS"):
        Gateway(_settings(kafka_listener, api_keys=()), load_registry(), CollectorRegistry())


def test_without_the_lifespan_the_app_is_not_ready(app: FastAPI) -> None:
    client = _client(app)
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["ready"] is False


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"X-Key": KEY}],
    ids=["missing", "wrong-key", "wrong-scheme", "other-header"],
)
def test_401_without_a_valid_key(app: FastAPI, headers: dict[str, str]) -> None:
    response = _client(app).post(ROUTE, json=SPEC_EXAMPLE, headers=headers)
    error = _error(response, 401)
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert "Bearer" in error["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert _published(app) == []


def test_401_comes_before_the_model_check(app: FastAPI) -> None:
    # Without a key nobody learns which models exist.
    response = _client(app).post(ROUTE, json={"prompt": "p", "model": "gpt-5"})
    _error(response, 401)


def test_a_key_id_in_the_query_is_no_key(app: FastAPI) -> None:
    response = _client(app).post(f"{ROUTE}?key_id=someone", json=SPEC_EXAMPLE)
    _error(response, 401)


def test_models_listing_needs_a_key(app: FastAPI) -> None:
    _error(_client(app).get("/v1/models"), 401)


def test_models_listing_says_which_are_configured(app: FastAPI) -> None:
    _live(app, "echo")
    response = _client(app).get("/v1/models", headers=AUTH)
    assert response.status_code == 200, response.text
    data = {m["id"]: m for m in response.json()["data"]}
    assert set(data) == set(load_registry().names)
    assert data["echo"]["configured"] is True
    assert data["echo"]["live_workers"] == 1
    assert data["gpt-4"]["configured"] is False
    assert "OPENAI_API_KEY" in data["gpt-4"]["reason"]


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, -0.1, True])
def test_422_names_temperature_and_its_value(app: FastAPI, value: Any) -> None:
    body = SPEC_EXAMPLE | {"temperature": value}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 422)
    assert error["param"] == "temperature"
    assert error["value"] == value
    assert error["message"].startswith("temperature: ")
    assert _published(app) == []


def test_422_names_an_unknown_field(app: FastAPI) -> None:
    body = SPEC_EXAMPLE | {"max_token": 10}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 422)
    assert error["param"] == "max_token"
    assert "unknown field" in error["message"]


def test_422_for_an_empty_model_list(app: FastAPI) -> None:
    body = SPEC_EXAMPLE | {"model": []}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 422)
    assert error["param"] == "model"
    assert "non-empty list of model names" in error["message"]


@pytest.mark.parametrize("raw", [b'{"prompt": "p", "model": ', b"not json", b"{'a': 1}"])
def test_400_for_invalid_json(app: FastAPI, raw: bytes) -> None:
    headers = AUTH | {"Content-Type": "application/json"}
    error = _error(_client(app).post(ROUTE, content=raw, headers=headers), 400)
    assert error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"]


# --- models -------------------------------------------------------------------------------


def test_404_names_the_unknown_model(app: FastAPI) -> None:
    body = SPEC_EXAMPLE | {"model": ["gpt-4", "gpt-5"]}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 404)
    assert error["code"] == "model_not_found"
    assert error["models"] == ["gpt-5"]
    assert "gpt-5" in error["message"]
    assert _published(app) == []


def test_503_for_the_spec_example_names_every_model_and_why(app: FastAPI) -> None:
    response = _client(app).post(ROUTE, json=SPEC_EXAMPLE, headers=AUTH)
    error = _error(response, 503)
    assert error["code"] == "model_unavailable"
    assert error["models"] == ["gpt-4", "llama-2-70b"]
    message = error["message"]
    assert "gpt-4: not configured: set OPENAI_API_KEY" in message
    assert "llama-2-70b: not configured" in message
    assert "KC_REGISTRY_PATH" in message
    assert response.headers["Retry-After"] == "5"
    assert _published(app) == []


def test_503_for_a_configured_model_without_a_live_worker(app: FastAPI) -> None:
    body = {"prompt": "Once upon a time", "model": ["echo", "echo"]}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 503)
    assert error["models"] == ["echo"]
    assert "no live worker" in error["message"]
    assert "--model echo" in error["message"]
    assert _published(app) == []


@pytest.mark.parametrize(
    "app", [{"settings": {"openai_api_key": "sk-test"}}], indirect=True, ids=["openai-key"]
)
def test_an_openai_key_leaves_only_the_worker_missing(app: FastAPI) -> None:
    body = SPEC_EXAMPLE | {"model": "gpt-4"}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 503)
    assert error["models"] == ["gpt-4"]
    assert "OPENAI_API_KEY" not in error["message"]
    assert "no live worker" in error["message"]


@pytest.mark.parametrize(
    "app",
    [{"registry": Registry([ModelSpec(name="echo", backend="echo", max_stop_sequences=2)])}],
    indirect=True,
    ids=["two-stops"],
)
def test_422_when_a_model_takes_fewer_stop_sequences(app: FastAPI) -> None:
    _live(app, "echo")
    body = {"prompt": "p", "model": "echo", "stop": [".", "!", "?"]}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 422)
    assert error["param"] == "stop"
    assert "echo accepts at most 2" in error["message"]
    assert _published(app) == []


# --- the request path with a stand-in for Kafka -------------------------------------------


def test_200_with_results_routed_back(app: FastAPI) -> None:
    front = _front(app)
    front.publisher = _EchoPublisher(front)  # type: ignore[assignment]
    _live(app, "echo")
    body = {
        "prompt": "one two three",
        "model": ["echo", "echo"],
        "max_tokens": 5,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["zzz"],
        "presence_penalty": 1.0,
        "frequency_penalty": -1.0,
    }
    before = time.time()
    response = _client(app).post(ROUTE, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()

    assert set(answer) == {"id", "object", "created", "choices", "usage"}
    request_id = UUID(answer["id"])
    created = datetime.fromisoformat(answer["created"].replace("Z", "+00:00"))
    assert created.timestamp() >= before - 1
    expected_text = echo_text("one two three", 5)
    assert [c["text"] for c in answer["choices"]] == [expected_text, expected_text]
    assert [c["model"] for c in answer["choices"]] == ["echo", "echo"]
    assert {c["finish_reason"] for c in answer["choices"]} == {"length"}
    per_choice = [c["usage"] for c in answer["choices"]]
    for usage in per_choice:
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert answer["usage"] == {
        key: sum(u[key] for u in per_choice)
        for key in ("prompt_tokens", "completion_tokens", "total_tokens", "prediction_time_ms")
    }
    assert answer["usage"]["completion_tokens"] == 10
    assert answer["usage"]["prediction_time_ms"] >= 14

    published = _published(app)
    assert [t.choice_index for t in published] == [0, 1]
    for t in published:
        assert t.request_id == str(request_id)
        assert t.model == "echo"
        assert t.prompt == "one two three"
        assert t.key_id == key_id(KEY)
        assert KEY not in json.dumps(t.model_dump())
        assert t.reply_partition == front.settings.reply_partition
        assert t.enqueued_at is not None, "our producers stamp their tasks"
        assert t.deadline == pytest.approx(t.enqueued_at + front.settings.request_timeout_s)
        s = t.sampling
        assert (s.max_tokens, s.temperature, s.top_p, s.stop) == (5, 0.3, 0.9, ("zzz",))
        assert (s.presence_penalty, s.frequency_penalty) == (1.0, -1.0)


@pytest.mark.parametrize(
    "app", [{"settings": {"request_timeout_s": 0.2}}], indirect=True, ids=["short-deadline"]
)
def test_504_when_no_result_arrives(app: FastAPI) -> None:
    _live(app, "echo")
    body = {"prompt": "p", "model": "echo"}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 504)
    assert error["code"] == "deadline_exceeded"
    assert error["failures"] == [
        {
            "index": 0,
            "model": "echo",
            "code": "deadline_exceeded",
            "message": "no result within the request deadline of 0.2 s",
        }
    ]
    assert len(_published(app)) == 1


def test_requests_are_counted_by_status(app: FastAPI) -> None:
    client = _client(app)
    client.post(ROUTE, json=SPEC_EXAMPLE)
    metrics = client.get("/metrics").text
    assert 'kc_http_requests_total{model="",route="/v1/completion",status="401"} 1.0' in metrics
    client.post(ROUTE, json={"prompt": "p", "model": ["echo", "made-up"]}, headers=AUTH)
    metrics = client.get("/metrics").text
    assert 'kc_http_requests_total{model="echo",route="/v1/completion",status="404"} 1.0' in metrics
    assert 'model="unknown",route="/v1/completion",status="404"} 1.0' in metrics
    assert "made-up" not in metrics, "a made-up model name became a label value"
    assert 'kc_http_requests_total{model="",route="other",status="200"} 1.0' in metrics


# --- body limits and overload -------------------------------------------------------------


def test_400_for_invalid_utf8(app: FastAPI) -> None:
    headers = AUTH | {"Content-Type": "application/json"}
    raw = b'{"prompt": "\xff\xfe", "model": "echo"}'
    error = _error(_client(app).post(ROUTE, content=raw, headers=headers), 400)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_415_for_a_body_that_is_not_json(app: FastAPI, media: str) -> None:
    headers = AUTH | {"Content-Type": media}
    error = _error(_client(app).post(ROUTE, content=b"prompt=x", headers=headers), 415)
    assert error["param"] == "content-type"
    assert "application/json" in error["message"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/v1/models"])
@pytest.mark.parametrize("media", ["text/plain", "application/json"])
def test_an_undeclared_method_is_405_with_allow_whatever_the_body(
    app: FastAPI, path: str, media: str
) -> None:
    # The body guard refuses media types only where a route takes the body: elsewhere the
    # router's 405 (with Allow) is the truth, not a 415 about a body nobody reads.
    headers = AUTH | {"Content-Type": media}
    response = _client(app).post(path, content=b"x" * 10, headers=headers)
    _error(response, 405)
    assert response.headers["allow"] == "GET"


def test_an_unknown_path_is_404_even_with_a_body_that_is_not_json(app: FastAPI) -> None:
    headers = AUTH | {"Content-Type": "text/plain"}
    _error(_client(app).post("/v1/nothing-here", content=b"x", headers=headers), 404)


def test_413_names_the_limit(app: FastAPI) -> None:
    limit = app.state.front.settings.max_body_bytes
    body = SPEC_EXAMPLE | {"prompt": "x" * (limit + 1)}
    error = _error(_client(app).post(ROUTE, json=body, headers=AUTH), 413)
    assert error["code"] == "body_too_large"
    assert str(limit) in error["message"] and error["value"] > limit


def _chunked(body: bytes, piece: int = 65_536) -> Iterator[bytes]:
    """A body sent without Content-Length (Transfer-Encoding: chunked)."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


def test_413_for_a_chunked_body_past_the_limit(app: FastAPI) -> None:
    limit = app.state.front.settings.max_body_bytes
    raw = json.dumps(SPEC_EXAMPLE | {"prompt": "x" * (limit + 1)}).encode()
    headers = AUTH | {"Content-Type": "application/json"}
    response = _client(app).post(ROUTE, content=_chunked(raw), headers=headers)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    error = _error(response, 413)
    assert error["code"] == "body_too_large" and error["value"] > limit


def test_a_chunked_body_within_the_limit_reaches_the_route(app: FastAPI) -> None:
    raw = json.dumps({"prompt": "p", "model": "echo", "temperature": 7}).encode()
    headers = AUTH | {"Content-Type": "application/json"}
    response = _client(app).post(ROUTE, content=_chunked(raw, 8), headers=headers)
    error = _error(response, 422)  # the route read the whole body and validated it
    assert error["param"] == "temperature" and error["value"] == 7


def test_429_with_retry_after_past_the_in_flight_limit(app: FastAPI) -> None:
    front: Gateway = app.state.front
    front.in_flight = front.settings.max_in_flight
    response = _client(app).post(ROUTE, json=SPEC_EXAMPLE | {"model": "echo"}, headers=AUTH)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
    front.in_flight = 0
    assert _client(app).post(ROUTE, json=SPEC_EXAMPLE, headers=AUTH).status_code == 503
