"""The OpenAPI schema declares every answer a route gives (Schemathesis checks it live)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from producer.frontend.app import create_app
from schemas.batch import UPLOAD_FILE_PATTERN
from schemas.registry import load_registry
from schemas.settings import Settings


def _schema() -> dict[str, Any]:
    app = create_app(Settings(api_keys=(SecretStr("k"),)), load_registry())
    return app.openapi()


def test_every_v1_route_declares_401_and_errors_as_error_bodies() -> None:
    schema = _schema()
    assert "ErrorBody" in schema["components"]["schemas"], "the error answers refer to it"
    paths = schema["paths"]
    v1 = [(p, op) for p, item in paths.items() if p.startswith("/v1/") for op in item.values()]
    assert v1
    for path, op in v1:
        assert "401" in op["responses"], path
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)


def test_post_routes_declare_the_refusals_with_retry_after() -> None:
    op = _schema()["paths"]["/v1/completion"]["post"]
    assert {"400", "413", "415", "422", "429", "503", "504"} <= set(op["responses"])
    assert "Retry-After" in op["responses"]["429"]["headers"]


def test_metrics_are_text() -> None:
    op = _schema()["paths"]["/metrics"]["get"]
    assert "text/plain" in op["responses"]["200"]["content"]


def test_the_upload_declares_what_it_takes() -> None:
    schema = _schema()
    body = schema["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = body["schema"]["$ref"].rsplit("/", 1)[-1]
    form = schema["components"]["schemas"][name]
    assert form["required"] == ["file", "purpose"]
    assert form["properties"]["purpose"]["enum"] == ["batch"]
    assert form["properties"]["file"]["pattern"] == UPLOAD_FILE_PATTERN


def test_a_file_content_is_declared_as_json_lines() -> None:
    op = _schema()["paths"]["/v1/files/{file_id}/content"]["get"]
    assert list(op["responses"]["200"]["content"]) == ["application/jsonl"]


def test_every_link_names_an_operation_of_the_document() -> None:
    schema = _schema()
    links = [
        link
        for item in schema["paths"].values()
        for op in item.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert len(links) == 3  # upload -> create batch -> retrieve, cancel
    for link in links:
        path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
        assert method in schema["paths"][path.replace("~1", "/")], link
