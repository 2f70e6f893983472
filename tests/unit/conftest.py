"""Unit tests run with no KC_* or vendor variables from the caller's environment."""

from __future__ import annotations

import os

import pytest

from schemas.kinds import key_variables, url_variables

_VENDOR_VARS = (*key_variables(), *url_variables())


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: keep a developer's keys out of the assertions."""
    for name in list(os.environ):
        if name.startswith("KC_") or name in _VENDOR_VARS:
            monkeypatch.delenv(name)
