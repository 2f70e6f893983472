"""The key-management bodies: LiteLLM's fields, and every bound in the published schema."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.keys import KeyRecord, duration_s
from schemas.management import (
    CUSTOM_KEY_PATTERN,
    DURATION_PATTERN,
    MAX_METADATA_BYTES,
    DeleteKeyRequest,
    GenerateKeyRequest,
    GenerateKeyResponse,
    KeyObject,
    UpdateKeyRequest,
    UpdateKeyResponse,
)

LITELLM_BODY: dict[str, Any] = {
    "key_alias": "team-a",
    "models": ["gpt-4", "echo"],
    "rpm_limit": 60,
    "tpm_limit": 10000,
    "max_budget": 25,
    "budget_duration": "30d",
    "duration": "20m",
    "metadata": {"user": "ishaan@berri.ai", "team": "core-infra"},
}


def _record(**overrides: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "key_id": "0123456789abcdef",
        "hash": "0123456789abcdef" + "0" * 48,
        "key_name": "sk-kc-...wxyz",
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_100.0,
    }
    return KeyRecord(**(fields | overrides))


def test_a_litellm_generate_body_is_taken_as_it_is() -> None:
    body = GenerateKeyRequest.model_validate(LITELLM_BODY)
    assert body.models == ["gpt-4", "echo"] and body.max_budget == 25.0
    assert body.model_dump(exclude_unset=True) == LITELLM_BODY | {"max_budget": 25.0}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm_limit", -1),
        ("rpm_limit", "60"),
        ("rpm_limit", 1.5),
        ("max_budget", -0.01),
        ("max_budget", "10"),
        ("duration", "0d"),
        ("duration", "30"),
        ("duration", "1y"),
        ("duration", "1234567s"),
        ("budget_duration", "monthly"),
        ("models", "gpt-4"),
        ("models", [""]),
        ("key_alias", ""),
        ("team_id", "team-1"),  # LiteLLM's teams are not ours: refused, not ignored
        ("user_id", "u-1"),
        ("key", "sk-short"),
        ("key", "no-sk-prefix-0123456789abcdef"),
        ("key", "sk-has a space-0123456789abcdef"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        GenerateKeyRequest.model_validate({field: value})
    assert refused.value.errors()[0]["loc"][0] == field


def test_every_duration_the_schema_takes_is_one_the_key_model_takes() -> None:
    for text in ("1s", "999999s", "30d", "1w", "1mo", "999999mo", "10m", "2h"):
        assert re.fullmatch(DURATION_PATTERN, text)
        assert duration_s(text) > 0


def test_metadata_is_bounded() -> None:
    GenerateKeyRequest(metadata={"note": "x" * (MAX_METADATA_BYTES - 20)})
    with pytest.raises(ValidationError, match="at most"):
        GenerateKeyRequest(metadata={"note": "x" * MAX_METADATA_BYTES})


def test_a_custom_key_is_sk_and_17_printable_characters_or_more() -> None:
    assert re.fullmatch(CUSTOM_KEY_PATTERN, "sk-" + "a" * 17)
    assert not re.fullmatch(CUSTOM_KEY_PATTERN, "sk-" + "a" * 16)
    assert GenerateKeyRequest(key="sk-migrated-0123456789").key == "sk-migrated-0123456789"


def test_update_needs_the_key_and_keeps_what_is_left_out() -> None:
    with pytest.raises(ValidationError):
        UpdateKeyRequest.model_validate({"models": ["echo"]})
    body = UpdateKeyRequest.model_validate({"key": "0123456789abcdef", "rpm_limit": None})
    assert body.model_dump(exclude_unset=True, exclude={"key"}) == {"rpm_limit": None}


def test_delete_takes_keys_aliases_or_both() -> None:
    assert DeleteKeyRequest.model_validate({"keys": ["a"]}).keys == ["a"]
    assert DeleteKeyRequest.model_validate({"key_aliases": ["x"]}).key_aliases == ["x"]
    with pytest.raises(ValidationError):
        DeleteKeyRequest.model_validate({"keys": "sk-kc-not-a-list"})


def test_the_answers_name_a_key_by_its_id_and_only_generate_shows_the_key() -> None:
    record = _record(models=("echo",), expires=1_700_003_600.0, metadata={"team": "a"})
    shown = KeyObject.of(record).model_dump(mode="json")
    assert shown["token"] == "0123456789abcdef" and shown["models"] == ["echo"]
    assert shown["expires"] == "2023-11-14T23:13:20Z" and shown["revoked_at"] is None
    assert record.hash not in str(shown)
    made = GenerateKeyResponse.of("sk-kc-secret", record).model_dump(mode="json")
    assert made["key"] == "sk-kc-secret" and made["token_id"] == "0123456789abcdef"
    assert "token" not in made, "LiteLLM's clients read token as the key itself"
    updated = UpdateKeyResponse.of(record).model_dump(mode="json")
    assert updated["key"] == updated["token"] == "0123456789abcdef"


def test_an_expiry_past_year_9999_shows_as_its_last_second() -> None:
    far = _record(expires=1_700_000_000.0 + duration_s("999999mo"))
    assert KeyObject.of(far).model_dump(mode="json")["expires"].startswith("9999-12-31")
