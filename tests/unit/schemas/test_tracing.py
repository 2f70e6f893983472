"""Trace context in Kafka record headers, and no SDK at all while no endpoint is set."""

from __future__ import annotations

import subprocess
import sys

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from schemas import tracing

TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _span() -> trace.Span:
    return NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, False, TraceFlags(1)))


def test_a_span_travels_as_a_w3c_traceparent_header() -> None:
    assert tracing.span_headers(_span()) == [("traceparent", TRACEPARENT)]


def test_a_records_traceparent_is_the_parent_of_what_its_reader_does() -> None:
    headers = [("kc-kind", b"result"), ("traceparent", TRACEPARENT)]
    parent = trace.get_current_span(tracing.extract(headers)).get_span_context()
    assert (parent.trace_id, parent.span_id, parent.is_remote) == (TRACE_ID, SPAN_ID, True)


def test_a_record_without_a_traceparent_continues_no_trace() -> None:
    for headers in (None, (), [("kc-kind", b"result")], [("traceparent", b"garbage")]):
        assert not trace.get_current_span(tracing.extract(headers)).get_span_context().is_valid


def test_without_an_endpoint_nothing_is_installed_or_loaded() -> None:
    # A process of its own: the SDK must not even be imported, and the global provider stays
    # the API's proxy (its tracers are no-ops).
    program = (
        "import sys\n"
        "from opentelemetry import trace\n"
        "from schemas import tracing\n"
        "from schemas.settings import load_settings\n"
        "tracing.install(load_settings(), 'test')()\n"
        "print(type(trace.get_tracer_provider()).__name__,"
        " any(m.startswith('opentelemetry.sdk') for m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["ProxyTracerProvider", "False"]
