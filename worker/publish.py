"""Turning decisions into Kafka records: results to the results topic, dead letters to the DLQ."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from schemas import clients
from schemas.topics import Topics
from schemas.tracing import Headers
from schemas.wire import ChoiceResult, DeadLetterHeaders, ResultMessage, TaskError, encode
from worker.ledger import Ready
from worker.task import Completion, DeadLetter, Outcome, Task


async def publish(
    producer: AIOKafkaProducer,
    topics: Topics,
    ready: list[Ready],
    headers_of: Callable[[Task], Headers | None] = lambda _task: None,
) -> None:
    """Send every decision of ``ready`` (inside the caller's transaction) and wait for them.

    A result's record carries ``headers_of(its task)`` (its trace, see ``worker.spans``).
    """
    results_partitions = await producer.partitions_for(topics.results)
    sends = []
    for r in ready:
        for decision in r.decisions:
            if isinstance(decision, DeadLetter):
                headers = DeadLetterHeaders(reason=decision.reason, source=decision.source).kafka()
                sends.append(
                    await producer.send(topics.dlq, decision.value, decision.key, headers=headers)
                )
                continue
            task, result = decision
            reply = task.message.reply_partition
            partition = reply if reply in results_partitions else None
            value = encode(result)
            key = task.message.request_id.encode()
            topic = result_topic(task, topics)
            if topic != topics.results:
                partition = None
            trace = headers_of(task)
            sends.append(await producer.send(topic, value, key, partition=partition, headers=trace))
    await clients.delivered(sends)


def result_topic(task: Task, topics: Topics) -> str:
    """Where a task's result goes: a batch line's to its batch's own topic (checked at
    admission), every other to the results topic."""
    return task.message.results_topic or topics.results


def result_message(task: Task, outcome: Outcome, worker_id: str) -> ResultMessage:
    """The results-topic message for one task's outcome."""
    msg = task.message
    common = {
        "request_id": msg.request_id,
        "choice_index": msg.choice_index,
        "model": msg.model,
        "worker_id": worker_id,
        "job_id": msg.job_id,
        "custom_id": msg.custom_id,
        "line_tasks": msg.line_tasks,
        "choices_per_prompt": msg.choices_per_prompt,
        "queued_ms": max(0, int((task.received_at - task.enqueued_at) * 1000)),
        "key_id": msg.key_id,
    }
    if isinstance(outcome, Completion):
        choice = ChoiceResult(
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            prediction_time_ms=outcome.prediction_time_ms,
            created=int(time.time()),
        )
        return ResultMessage(choice=choice, **common)
    return ResultMessage(error=TaskError(code=outcome.code, message=outcome.message), **common)
