"""docs/API.md, the API reference in the repository, says what the code does.

Field names, required flags, defaults and every bound of the request table come from
``schemas.api``; the response tables name the response models' fields; the model list is the
default registry's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.api import CompletionChoice, CompletionRequest, CompletionResponse, Usage
from schemas.registry import load_registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
_BOUND_KEYS = {"minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"}


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _tables(section: str) -> list[list[list[str]]]:
    """Each Markdown table of ``section`` as rows of cells, the header and rule left out."""
    tables: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            tables.append(rows[2:])
            rows = []
    return tables


def _name(cell: str) -> str:
    return cell.strip("`")


def _bounds(schema: Any) -> set[float]:
    """Every length, count and value bound anywhere in a field's JSON schema."""
    if isinstance(schema, dict):
        found = {float(v) for k, v in schema.items() if k in _BOUND_KEYS}
        return found.union(*(_bounds(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_bounds(v) for v in schema))
    return set()


def _numbers(text: str) -> set[float]:
    return {float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)}


def test_request_table_is_the_request_model() -> None:
    (rows,) = _tables(_section("Request"))
    fields = CompletionRequest.model_fields
    properties = CompletionRequest.model_json_schema()["properties"]
    assert [_name(r[0]) for r in rows] == list(fields)
    for name, _type, required, default, bounds, _ in rows:
        field = fields[_name(name)]
        assert (required == "yes") == field.is_required(), name
        if not field.is_required():
            expected = None if default == "none" else float(default)
            assert field.default == expected, name
        assert _numbers(bounds) == _bounds(properties[_name(name)]), name


def test_response_tables_are_the_response_models() -> None:
    tables = _tables(_section("Response"))
    models: list[type[BaseModel]] = [CompletionResponse, CompletionChoice, Usage]
    assert len(tables) == len(models)
    for rows, model in zip(tables, models, strict=True):
        assert [_name(r[0]) for r in rows] == list(model.model_fields), model.__name__


def test_model_list_is_the_default_registry() -> None:
    named = set(re.findall(r"`([a-z0-9][a-z0-9.-]*)`", _section("Models")))
    assert named == {spec.name for spec in load_registry()}
