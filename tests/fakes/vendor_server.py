"""A small HTTP server on 127.0.0.1 that speaks OpenAI's and Cohere's wire formats.

It answers what the vendors' API references document: ``POST /v1/chat/completions`` (a
``chat.completion``), ``POST /v1/completions`` (a legacy ``text_completion``) and
``POST /v2/chat`` (a Cohere v2 chat response), with their error bodies. The happy answer
cycles the prompt's words to ``max_tokens`` words and, like some compatible servers, ignores
stop sequences, so the backends' own stop handling shows. It checks ``Authorization: Bearer``
against its key and, on a wrong key, echoes the key it got in the error (as careless servers
do), so a test can prove the key never travels further. ``script`` queues faults for the next
requests: any status, headers (``Retry-After``), body (malformed JSON) or delay. Every request
is recorded in ``seen``. It runs in threads, so a slow answer never blocks the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Body = dict[str, Any] | bytes | None


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``body`` None means the happy answer (after ``delay_s``)."""

    status: int = 200
    body: Body = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    """One request as the server got it."""

    at: float
    path: str
    authorization: str
    body: dict[str, Any]


def chat_answer(
    text: str, finish_reason: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 5
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _openai_usage(prompt_tokens, completion_tokens),
    }


def text_answer(
    text: str, finish_reason: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 5
) -> dict[str, Any]:
    """An OpenAI legacy ``text_completion`` object."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:12]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": "fake",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": _openai_usage(prompt_tokens, completion_tokens),
    }


def cohere_answer(
    text: str, finish_reason: str = "COMPLETE", prompt_tokens: int = 3, completion_tokens: int = 5
) -> dict[str, Any]:
    """A Cohere v2 chat response."""
    counts = {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
    return {
        "id": str(uuid.uuid4()),
        "finish_reason": finish_reason,
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "usage": {"billed_units": dict(counts), "tokens": dict(counts)},
    }


def openai_error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> Any:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def cohere_error(message: str) -> dict[str, Any]:
    """Cohere's error body."""
    return {"id": str(uuid.uuid4()), "message": message}


def _openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class VendorServer:
    """The fake vendor; use as a context manager."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> VendorServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        """The root URL (Cohere's base URL)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def openai_url(self) -> str:
        """OpenAI's base URL (with ``/v1``)."""
        return self.url + "/v1"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order, then happily again."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        """Forget the script and the requests seen."""
        with self._lock:
            self._script.clear()
            self.seen.clear()
            self.most_in_flight = 0

    async def until(self, check: Callable[[VendorServer], bool], timeout_s: float = 10) -> None:
        """Wait (without blocking the loop) until ``check(self)`` holds; AssertionError after."""
        deadline = time.monotonic() + timeout_s
        while not check(self):
            assert time.monotonic() < deadline, f"fake vendor: still waiting after {timeout_s} s"
            await asyncio.sleep(0.02)

    def requests_to(self, suffix: str) -> list[Seen]:
        """The requests seen whose path ends with ``suffix``."""
        with self._lock:
            return [s for s in self.seen if s.path.endswith(suffix)]

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count a request as in flight while it is being answered."""
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def answer(self, path: str, authorization: str, body: dict[str, Any]) -> Reply:
        """Record a request and decide its reply."""
        with self._lock:
            self.seen.append(Seen(time.time(), path, authorization, body))
            scripted = self._script.popleft() if self._script else None
        if scripted is not None and (scripted.body is not None or scripted.status != 200):
            return scripted
        delay = scripted.delay_s if scripted else 0.0
        if authorization != f"Bearer {self.key}":
            got = authorization.removeprefix("Bearer ")
            return _unauthorized(path, f"Incorrect API key provided: {got}", delay)
        return Reply(body=_happy(path, body), delay_s=delay)


def _unauthorized(path: str, message: str, delay_s: float) -> Reply:
    if path.endswith("/v2/chat"):
        return Reply(401, cohere_error(message), delay_s=delay_s)
    return Reply(401, openai_error(message, code="invalid_api_key"), delay_s=delay_s)


def _happy(path: str, body: dict[str, Any]) -> dict[str, Any]:
    max_tokens = int(body.get("max_tokens") or 16)
    if path.endswith("/v2/chat"):
        prompt = str(body["messages"][-1]["content"])
        make: Any = cohere_answer
        reason = "MAX_TOKENS"
    elif path.endswith("/chat/completions"):
        prompt = str(body["messages"][-1]["content"])
        make, reason = chat_answer, "length"
    else:
        prompt = str(body["prompt"])
        make, reason = text_answer, "length"
    words = prompt.split() or ["echo"]
    text = " ".join(words[i % len(words)] for i in range(max_tokens))
    answer: dict[str, Any] = make(text, reason, len(prompt.split()), max_tokens)
    return answer


_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v2/chat")


def _handler_for(server: VendorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path not in _ROUTES:
                self._send(Reply(404, openai_error(f"no route {self.path}")))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(Reply(400, openai_error("the body is not JSON")))
                return
            with server.counting():
                reply = server.answer(self.path, self.headers.get("Authorization") or "", body)
                time.sleep(reply.delay_s)
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
            data = payload.encode() if isinstance(payload, str) else payload
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read ``seen``, not stderr."""

    return Handler


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def vendor_server(key: str) -> Iterator[VendorServer]:
    """A started fake vendor, stopped at the end of the block."""
    with VendorServer(key) as server:
        yield server
