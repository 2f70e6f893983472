"""Throwaway TLS certificates for the local broker, made with the JDK's ``keytool``.

The broker needs a PKCS12 keystore, clients a PEM CA bundle; ``keytool`` (already there with
the Java that runs Kafka) makes both, so no OpenSSL command or Python crypto package is
needed. ``make_ca`` creates a certificate authority; ``make_broker_keystore`` a key for
127.0.0.1 signed by it (subject alternative names ``IP:127.0.0.1`` and ``DNS:localhost``, as
clients check the name they connected to). For tests and development only: the passwords
are random per call and the certificates expire after ``_VALIDITY_DAYS``.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.broker import BrokerError
from devstack.properties import BrokerKeystore

_VALIDITY_DAYS = "7"
_KEYTOOL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Authority:
    """A CA: its keystore (to sign with) and its certificate as PEM (for clients to trust)."""

    keystore: Path
    password: str
    pem: Path


def make_ca(folder: Path, name: str = "kc-test-ca") -> Authority:
    """A new certificate authority in ``folder`` (``NAME.p12``, ``NAME.pem``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = Authority(folder / f"{name}.p12", secrets.token_hex(12), folder / f"{name}.pem")
    store = ["-keystore", str(ca.keystore), "-storetype", "PKCS12", "-storepass", ca.password]
    _keytool("-genkeypair", "-alias", "ca", "-dname", f"CN={name}", *_KEY, "-ext", "bc:c", *store)
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-file", str(ca.pem), *store)
    return ca


def make_broker_keystore(folder: Path, ca: Authority) -> BrokerKeystore:
    """A key for a broker on 127.0.0.1, signed by ``ca``, with the chain, in one keystore."""
    folder.mkdir(parents=True, exist_ok=True)
    out = BrokerKeystore(folder / "broker.p12", secrets.token_hex(12))
    store = ["-keystore", str(out.path), "-storetype", "PKCS12", "-storepass", out.password]
    ca_store = ["-keystore", str(ca.keystore), "-storepass", ca.password]
    request, signed = folder / "broker.csr", folder / "broker.pem"
    _keytool("-genkeypair", "-alias", "broker", "-dname", "CN=127.0.0.1", *_KEY, *store)
    _keytool("-certreq", "-alias", "broker", "-file", str(request), *store)
    _keytool(
        "-gencert",
        "-alias",
        "ca",
        "-rfc",
        "-infile",
        str(request),
        "-outfile",
        str(signed),
        "-validity",
        _VALIDITY_DAYS,
        "-ext",
        "SAN=IP:127.0.0.1,DNS:localhost",
        "-ext",
        "EKU=serverAuth",
        *ca_store,
    )
    # The CA first, so that keytool accepts the signed certificate as a reply to the request.
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(ca.pem), *store)
    _keytool("-importcert", "-alias", "broker", "-file", str(signed), *store)
    return out


_KEY = ("-keyalg", "RSA", "-keysize", "2048", "-validity", _VALIDITY_DAYS)


def _keytool(*args: str) -> None:
    keytool = shutil.which("keytool")
    if keytool is None:
        raise BrokerError("'keytool' is not on PATH; it comes with the JDK that runs Kafka")
    cmd = [keytool, *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=_KEYTOOL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        # Never the command line: it holds the store passwords.
        raise BrokerError(f"keytool {args[0]} failed: {(done.stdout + done.stderr).strip()}")
