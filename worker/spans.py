"""The spans of the tasks a worker answers, each in the trace its record's headers carry.

Per task: the queue wait (from the publisher's ``enqueued_at`` to the poll that took it), the
generation (its prediction time, ending at the outcome; not made for a task that never ran)
and the result's send (from the outcome to the commit of the transaction that published it).
The send span's ``traceparent`` goes with the result, and with its early copy, so the front
end's reply continues the same trace. The spans are made when the outcome is known, with the
times measured before: nothing is held per task while it runs. Off (``Settings.tracing``
false), every method returns at once.
"""

from __future__ import annotations

import time

from schemas import tracing
from schemas.tracing import Attributes, Headers, Span
from worker.ledger import TP
from worker.task import Completion, Outcome, Task

_NS = 1_000_000_000


class TaskSpans:
    """The open send spans of answered tasks, by the record they came from."""

    def __init__(self, enabled: bool, model: str, worker_id: str) -> None:
        self._enabled = enabled
        self._common: Attributes = {"gen_ai.request.model": model, "kc.worker_id": worker_id}
        self._sending: dict[tuple[str, int, int], Span] = {}

    def answered(self, task: Task, outcome: Outcome, topic: str) -> None:
        """Record the queue wait and the generation; open the send of the result to ``topic``."""
        if not self._enabled:
            return
        msg = task.message
        parent = tracing.extract(task.headers)
        attributes = self._common | {
            "kc.request_id": msg.request_id,
            "kc.choice_index": msg.choice_index,
        }
        queued_ms = max(0, int((task.received_at - task.enqueued_at) * 1000))
        queue = tracing.tracer().start_span(
            "queue wait",
            parent,
            start_time=int(min(task.enqueued_at, task.received_at) * _NS),
            attributes=attributes | {"kc.queue_time_ms": queued_ms, "kc.lane": msg.lane},
        )
        queue.end(end_time=int(task.received_at * _NS))
        if not tracing.continues(parent):
            # A record without a traceparent (a producer that does not trace): the queue wait
            # is the root, so the task's spans are still one trace.
            parent = tracing.under(queue)
        now = time.time_ns()
        if isinstance(outcome, Completion):
            generation = tracing.tracer().start_span(
                f"generate {msg.model}",
                parent,
                start_time=now - outcome.prediction_time_ms * 1_000_000,
                attributes=attributes | _usage(outcome),
            )
            generation.end(end_time=now)
        send = tracing.sending(topic, msg.request_id, attributes, context=parent)
        if not isinstance(outcome, Completion):
            send.set_attribute("kc.outcome", outcome.code)
            send.set_status(tracing.StatusCode.ERROR, outcome.message)
        self._sending[(task.topic, task.partition, task.offset)] = send

    def headers(self, task: Task) -> Headers | None:
        """The headers of a task's result: its send span as their reader's parent."""
        send = self._sending.get((task.topic, task.partition, task.offset))
        return tracing.span_headers(send) if send is not None else None

    def published(self, tasks: list[Task]) -> None:
        """The results of ``tasks`` are committed: their sends end."""
        for task in tasks:
            send = self._sending.pop((task.topic, task.partition, task.offset), None)
            if send is not None:
                send.end()

    def forget(self, tps: list[TP]) -> None:
        """Partitions taken away: their results are someone else's to publish (not exported)."""
        gone = set(tps)
        for key in [k for k in self._sending if (k[0], k[1]) in gone]:
            del self._sending[key]


def _usage(outcome: Completion) -> Attributes:
    return {
        "gen_ai.usage.input_tokens": outcome.prompt_tokens,
        "gen_ai.usage.output_tokens": outcome.completion_tokens,
        "gen_ai.response.finish_reasons": [outcome.finish_reason],
        "kc.prediction_time_ms": outcome.prediction_time_ms,
    }
