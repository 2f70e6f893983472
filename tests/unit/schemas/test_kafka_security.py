"""Kafka security settings: SASL and TLS reach every aiokafka client through client_options."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas.clients import client_options
from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings


def test_plaintext_by_default() -> None:
    options = client_options(Settings(), "kc-test")
    assert options["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in options and "ssl_context" not in options


def test_sasl_scram_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KC_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KC_KAFKA_SASL_PASSWORD", "pw-123")
    settings = load_settings()
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    options = client_options(settings, "kc-test")
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "pw-123")
    assert "pw-123" not in repr(settings)


def test_sasl_without_credentials_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KC_KAFKA_SASL_PASSWORD", "pw-123")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "KC_KAFKA_SASL_USERNAME" in str(caught.value)
    assert "pw-123" not in str(caught.value)


def test_unknown_mechanism_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ConfigError, match="KC_KAFKA_SASL_MECHANISM='GSSAPI'"):
        load_settings()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        ["openssl", *args, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_ssl_context_from_the_files(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("pw"),
        kafka_ssl_cafile=cert,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    options = client_options(settings, "kc-test")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]
    assert options["sasl_plain_username"] == "svc"


def test_ssl_with_a_missing_file_names_the_variables(tmp_path: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "none.pem")
    with pytest.raises(ConfigError, match="KC_KAFKA_SSL_CAFILE="):
        client_options(settings, "kc-test")
