"""Child processes: launch one, wait until it is ready, stop it within a bound.

One helper for the dev stack, the local broker, the benchmarks and the test harnesses, so
that a child that dies during start-up is reported at once (not after the whole timeout),
and a child that ignores SIGTERM is killed after a bound instead of outliving its owner.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

Child = subprocess.Popen[bytes]
HOST = "127.0.0.1"
_POLL_S = 0.3


class ChildExited(RuntimeError):
    """A child process exited before it was ready."""


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def launch(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    new_session: bool = False,
) -> Child:
    """Start ``cmd``; with ``log``, its stdout and stderr are appended to that file."""
    if log is not None:
        with log.open("ab") as out:  # the child keeps its own descriptor
            return launch(cmd, env=env, cwd=cwd, stdout=out, stderr=out, new_session=new_session)
    return subprocess.Popen(
        list(cmd),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL if new_session else None,
        stdout=stdout,
        stderr=stderr,
        start_new_session=new_session,
    )


def _check_alive(children: Sequence[Child], what: str) -> None:
    for child in children:
        code = child.poll()
        if code is not None:
            raise ChildExited(f"{what}: a process ({child.args!r}) exited with {code}")


def wait_ready(
    ready: Callable[[], bool],
    children: Sequence[Child],
    what: str,
    timeout_s: float,
    *,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Poll ``ready`` until true; ChildExited as soon as a child exits, TimeoutError at the end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cancelled():
            raise ChildExited(f"{what}: stopped before it was ready")
        if ready():
            return
        _check_alive(children, what)
        time.sleep(_POLL_S)
    raise TimeoutError(f"{what}: not ready after {timeout_s:g} s")


async def await_ready(
    ready: Callable[[], Awaitable[bool]], children: Sequence[Child], what: str, timeout_s: float
) -> None:
    """``wait_ready`` for a probe that is a coroutine (an HTTP client of the caller's loop)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await ready():
            return
        _check_alive(children, what)
        await asyncio.sleep(_POLL_S)
    raise TimeoutError(f"{what}: not ready after {timeout_s:g} s")


def stop(*children: Child, timeout_s: float = 30) -> None:
    """SIGTERM every child still running, then SIGKILL those not gone after ``timeout_s``."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
