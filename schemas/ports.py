"""Listening ports: a port that cannot be bound stops the process with one line naming its setting.

Without this, a second worker beside a running one dies with an ``OSError: [Errno 98]``
traceback from the metrics server, and a second front end with uvicorn's log line, neither
saying which variable to change.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from schemas.errors import ConfigError


@contextlib.contextmanager
def binding(setting: str, host: str, port: int) -> Iterator[None]:
    """Turn a failure to listen on ``host:port`` inside the block into a ConfigError."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(
            f"{setting}={port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            f"stop what holds the port or set {setting} to another one (0 picks a free port)"
        ) from exc


def listening_socket(setting: str, host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (for uvicorn), or ConfigError naming ``setting``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds: a port in TIME_WAIT after a restart is not "in use".
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        with binding(setting, host, port):
            sock.bind((host, port))
    except ConfigError:
        sock.close()
        raise
    return sock
