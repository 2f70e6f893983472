"""A lean HTTP/1.1 keep-alive client, so the load generator costs less CPU than the server.

httpx spends about a millisecond of CPU per request; on two shared cores that would cap the
generator below the rates B2 asks for. This client pre-encodes each request and parses only
the status line and ``Content-Length`` (uvicorn always sends one).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class Connection:
    """One keep-alive connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """POST ``body`` as JSON; the status and the response body."""
        payload = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
            f"{head}Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        self._writer.write(request)
        status_line = await self._reader.readuntil(b"\r\n")
        length = 0
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        """Close the socket."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Pool:
    """A fixed set of connections, each used by one request at a time."""

    def __init__(self, host: str, port: int, size: int) -> None:
        # Last in, first out: the warm connections are reused, and the rest are left to close
        # at the server's keep-alive timeout instead of failing the request that reuses them.
        self._idle: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
        for _ in range(size):
            self._idle.put_nowait(Connection(host, port))

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """POST on an idle connection (waiting for one); a broken one is replaced."""
        conn = await self._idle.get()
        try:
            try:
                return await conn.post(path, body, headers)
            except (OSError, asyncio.IncompleteReadError):
                # The server closed an idle keep-alive connection: reconnect once.
                await conn.close()
                return await conn.post(path, body, headers)
        except (OSError, asyncio.IncompleteReadError):
            await conn.close()
            raise
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        """Close every idle connection."""
        while not self._idle.empty():
            await self._idle.get_nowait().close()
