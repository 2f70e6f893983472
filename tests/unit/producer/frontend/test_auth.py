"""Bearer-key checking: the key id of a valid key, None for anything else, never the key."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from pydantic import SecretStr

from producer.frontend.auth import KeyChecker
from schemas.keys import key_id

KEYS = ("first-key-AAAA", "second-key-BBBB")


@pytest.fixture
def checker() -> KeyChecker:
    """A checker of two keys."""
    return KeyChecker([SecretStr(k) for k in KEYS])


@pytest.mark.parametrize("key", KEYS)
def test_a_valid_bearer_gives_the_key_id(checker: KeyChecker, key: str) -> None:
    found = checker.check(f"Bearer {key}")
    assert found is not None
    assert re.fullmatch(r"[0-9a-f]{16}", found)
    assert found == hashlib.sha256(key.encode()).hexdigest()[:16]
    assert key not in found


def test_each_key_has_its_own_id(checker: KeyChecker) -> None:
    ids = {checker.check(f"Bearer {k}") for k in KEYS}
    assert len(ids) == 2
    assert None not in ids


def test_the_scheme_is_case_insensitive(checker: KeyChecker) -> None:
    assert checker.check(f"bearer {KEYS[0]}") == key_id(KEYS[0])
    assert checker.check(f"BEARER {KEYS[0]}") == key_id(KEYS[0])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer wrong-key",
        f"Bearer {KEYS[0]}x",
        f"Bearer {KEYS[0][:-1]}",
        f"Bearer {KEYS[0].upper()}",
        f"Basic {KEYS[0]}",
        f"Token {KEYS[0]}",
        KEYS[0],
        f"Bearer{KEYS[0]}",
        f"Bearer {KEYS[0]},{KEYS[1]}",
    ],
)
def test_anything_else_gives_none(checker: KeyChecker, header: str | None) -> None:
    assert checker.check(header) is None


def test_no_configured_keys_accepts_nothing() -> None:
    assert KeyChecker([]).check("Bearer anything") is None


@pytest.mark.parametrize("key", ["0123456789abcdef", "0123456789abcdef0123", "ÄÖÜ-key-long"])
def test_key_id_is_stable_and_never_contains_the_key(key: str) -> None:
    kid = key_id(key)
    assert kid == key_id(key)
    assert re.fullmatch(r"[0-9a-f]{16}", kid)
    # Hex keys are where a lazy id (the key itself, or its prefix) would look plausible.
    assert kid not in key
    assert key not in kid


_COMPARE = hmac.compare_digest


class _Spy:
    """Stands in for ``hmac.compare_digest``: same answers, every call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        return _COMPARE(a, b)


@pytest.mark.parametrize("given", [*KEYS, "wrong-key-CCCC", KEYS[0][:4]])
def test_every_key_is_compared_in_constant_time_without_stopping_early(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = (*KEYS, "third-key-DDDD")
    spy = _Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    checker = KeyChecker([SecretStr(k) for k in keys])
    found = checker.check(f"Bearer {given}")
    assert found == (key_id(given) if given in keys else None)
    # One constant-time comparison per configured key, whichever key matched (the first one
    # included): a loop that stopped at the match, or an ``==``, would tell by its timing.
    assert sorted(b for _, b in spy.calls) == sorted(k.encode() for k in keys)
    assert all(a == given.encode() for a, _ in spy.calls)
