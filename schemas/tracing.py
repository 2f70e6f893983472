"""Tracing shared by every process: the OpenTelemetry SDK when asked for, and Kafka headers.

One request is one trace across both Kafka hops: the W3C ``traceparent`` (and ``tracestate``)
of the span that sent a record travels in the record's headers, put there and read back by
OpenTelemetry's own propagator (``opentelemetry.propagate``), so a task published by anyone who
sets the header continues that producer's trace. The spans themselves are made where their
work happens (``producer.publisher``, ``producer.frontend.replies``, ``worker.spans``).

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is
set (``Settings.tracing``): ``install`` then sets an SDK tracer provider exporting over
OTLP/HTTP in batches from a background thread (``BatchSpanProcessor``), so a slow or
unreachable collector never holds a request up; the SDK reads the other ``OTEL_*`` variables
(headers, timeout, ``OTEL_BSP_*``) itself. Off, nothing is installed, the API's tracer is its
no-op one, and the callers skip their span work altogether (they check ``Settings.tracing``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeAlias

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.util.types import AttributeValue

from schemas.settings import Settings

Headers: TypeAlias = list[tuple[str, bytes]]
RecordHeaders: TypeAlias = Sequence[tuple[str, bytes]]
Span: TypeAlias = trace.Span
SpanKind = trace.SpanKind
Link = trace.Link
StatusCode = trace.StatusCode
Attributes: TypeAlias = dict[str, AttributeValue]
_SCOPE = "kafka-completions"


class _HeaderSetter(Setter[Headers]):
    """Writes a propagation field as a Kafka record header (UTF-8 bytes)."""

    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode()))


class _HeaderGetter(Getter[RecordHeaders]):
    """Reads a propagation field from a Kafka record's headers."""

    def get(self, carrier: RecordHeaders, key: str) -> list[str] | None:
        found = [v.decode(errors="replace") for k, v in carrier if k == key and v is not None]
        return found or None

    def keys(self, carrier: RecordHeaders) -> list[str]:
        return [k for k, _ in carrier]


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def install(settings: Settings, service: str) -> Callable[[], None]:
    """Export spans over OTLP/HTTP when an endpoint is set; the shutdown to call at exit.

    The shutdown exports what is left, within the exporter's timeout (``OTEL_EXPORTER_OTLP_
    TIMEOUT``, 10 s); without an endpoint nothing is installed and it does nothing.
    """
    if not settings.tracing:
        return lambda: None
    # Imported here: a process without an endpoint never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = settings.otel_service_name or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    # The exporter resolves the endpoint from the standard variables Settings checked.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


@functools.cache
def tracer() -> trace.Tracer:
    """The service's tracer (the no-op one unless ``install`` set a provider)."""
    # Cached: the SDK makes a new tracer per call (~25 us), and a proxy got before ``install``
    # follows the provider installed later.
    return trace.get_tracer(_SCOPE)


def inject(headers: Headers, context: Context | None = None) -> Headers:
    """Add the ``traceparent`` of ``context`` (the current one by default) to ``headers``."""
    propagate.inject(headers, context=context, setter=_SETTER)
    return headers


def extract(headers: RecordHeaders | None) -> Context:
    """The context a record's headers carry (an empty one when they carry none)."""
    return propagate.extract(headers or (), getter=_GETTER)


def sending(
    topic: str,
    key: str,
    attributes: Attributes,
    *,
    context: Context | None = None,
    links: Sequence[trace.Link] = (),
) -> trace.Span:
    """A started PRODUCER span for one record (OpenTelemetry's messaging conventions)."""
    fields: Attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": key,
    }
    return tracer().start_span(
        f"send {topic}",
        context,
        kind=trace.SpanKind.PRODUCER,
        attributes=fields | attributes,
        links=links,
    )


def new_trace() -> Context:
    """An empty context: a span started in it is the root of a trace of its own."""
    return Context()


def continues(context: Context) -> bool:
    """Whether ``context`` holds a span to continue (a record's header named a valid one)."""
    return trace.get_current_span(context).get_span_context().is_valid


def under(span: trace.Span) -> Context:
    """A context whose spans are children of ``span``."""
    return trace.set_span_in_context(span)


def annotate(attributes: Attributes) -> None:
    """Add attributes to the current span (the request's server span on the front end)."""
    trace.get_current_span().set_attributes(attributes)


def span_headers(span: trace.Span) -> Headers:
    """The headers that make ``span`` the parent of what a record's reader does."""
    return inject([], under(span))


def link_to(traceparent: str) -> trace.Link:
    """A span link to the span a ``traceparent`` value names (kept in a record, say)."""
    context = extract([("traceparent", traceparent.encode())])
    return trace.Link(trace.get_current_span(context).get_span_context())


def traceparent_of(span: trace.Span) -> str | None:
    """The ``traceparent`` value naming ``span`` (None when tracing is off)."""
    for key, value in span_headers(span):
        if key == "traceparent":
            return value.decode()
    return None
