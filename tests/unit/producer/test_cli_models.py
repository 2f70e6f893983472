"""`kafka-completions models add` and `models list`: an operator's weights into the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.cli import main
from schemas.registry import load_registry
from tests.llama2_fixture import Llama2Fixture


def test_models_add_writes_the_entry_and_list_shows_it_ready(
    llama2: Llama2Fixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry_file = tmp_path / "models.toml"
    monkeypatch.setenv("KC_REGISTRY_PATH", str(registry_file))
    monkeypatch.setenv("KC_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["models", "add", "llama-2-70b-chat", "--path", str(llama2.chat)]) == 0
    assert main(["models", "add", "my-base", "--path", str(llama2.base), "--base"]) == 0
    registry = load_registry(registry_file)
    assert registry.get("llama-2-70b-chat").path == str(llama2.chat)
    assert registry.get("llama-2-70b-chat").chat_template  # the spec entry's, kept
    assert not registry.get("my-base").chat_template
    assert "gpt-4" in registry  # a new file starts from the default registry
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert f"ready: checkpoint {llama2.chat}" in lines["llama-2-70b-chat"]
    assert f"ready: checkpoint {llama2.base}" in lines["my-base"]
    assert "not configured" in lines["llama-2-7b"]
    assert "to convert:" in lines["smollm2-135m-instruct"]  # this test's cache is empty


def test_models_add_refuses_a_path_that_holds_no_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_file = tmp_path / "models.toml"
    monkeypatch.setenv("KC_REGISTRY_PATH", str(registry_file))
    missing = tmp_path / "nothing-here"
    assert main(["models", "add", "llama-2-7b", "--path", str(missing)]) == 2
    assert f"--path {missing}" in capsys.readouterr().err
    assert not registry_file.exists()


def test_models_add_needs_a_registry_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["models", "add", "llama-2-7b", "--path", str(tmp_path)]) == 2
    assert "KC_REGISTRY_PATH" in capsys.readouterr().err


def test_make_run_starts_a_worker_for_the_local_models_added(
    llama2: Llama2Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack.stack import worker_sets

    from schemas.settings import Settings

    registry_file = tmp_path / "models.toml"
    monkeypatch.setenv("KC_REGISTRY_PATH", str(registry_file))
    for name in ("llama-2-7b-chat", "llama-2-70b"):
        assert main(["models", "add", name, "--path", str(llama2.chat)]) == 0
    assert worker_sets(Settings()) == [
        ["smollm2-135m-instruct"],
        ["llama-2-70b", "llama-2-7b-chat"],
    ]
