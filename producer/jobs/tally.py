"""Folding a job's results into one outcome per (custom_id, model), and the output line of each.

Workers publish each result once per transaction, but a resubmitted task (an interrupted
submission, ``--retry-failed``) can be answered twice; the tally decides which answer counts:
a success wins over an error, the first success over a later one, and an error stamped at or
before the job's retry cutoff was resubmitted, so its line counts as pending until it is
answered again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from producer.assemble import to_choice
from schemas.api import CompletionResponse, Usage
from schemas.wire import ResultMessage, TaskError

Key = tuple[str, str]  # (custom_id, model)


class OutputLine(BaseModel):
    """One line of ``collect``'s output: the spec's response object, or the error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    custom_id: str
    model: str
    response: CompletionResponse | None = None
    error: TaskError | None = None

    @classmethod
    def of(cls, result: ResultMessage) -> OutputLine:
        """The output line of a job result."""
        assert result.custom_id is not None
        if result.choice is None:
            return cls(custom_id=result.custom_id, model=result.model, error=result.error)
        choice = to_choice(result)
        response = CompletionResponse(
            id=UUID(result.request_id),
            created=datetime.fromtimestamp(choice.created, UTC),
            choices=[choice],
            usage=Usage.total([choice.usage]),
        )
        return cls(custom_id=result.custom_id, model=result.model, response=response)

    @property
    def key(self) -> Key:
        """The (custom_id, model) this line answers."""
        return self.custom_id, self.model

    def dumps(self) -> str:
        """The line as written (deterministic: the same result always gives the same text)."""
        return self.model_dump_json(exclude_none=True)


@dataclass(slots=True)
class JobTally:
    """The counted outcome of each task of one job."""

    tasks: int
    retry_cutoff_ms: int | None = None
    final: dict[Key, ResultMessage] = field(default_factory=dict)
    last_error_ms: int = 0

    def add(self, result: ResultMessage, timestamp_ms: int) -> bool:
        """Count one result; True when it changed the outcome of its (custom_id, model)."""
        if result.custom_id is None:
            return False
        key = (result.custom_id, result.model)
        current = self.final.get(key)
        if result.choice is not None:
            if current is not None and current.choice is not None:
                return False
            self.final[key] = result
            return True
        if current is not None or self._retried(timestamp_ms):
            return False
        self.final[key] = result
        self.last_error_ms = max(self.last_error_ms, timestamp_ms)
        return True

    def _retried(self, timestamp_ms: int) -> bool:
        return self.retry_cutoff_ms is not None and timestamp_ms <= self.retry_cutoff_ms

    @property
    def done(self) -> int:
        """Tasks answered with a completion."""
        return sum(1 for r in self.final.values() if r.choice is not None)

    @property
    def failed(self) -> int:
        """Tasks answered with an error (and not resubmitted since)."""
        return len(self.final) - self.done

    @property
    def pending(self) -> int:
        """Tasks with no counted answer yet."""
        return max(0, self.tasks - len(self.final))

    @property
    def tokens(self) -> int:
        """Total tokens (prompt and completion) of the completed tasks."""
        return sum(
            r.choice.prompt_tokens + r.choice.completion_tokens
            for r in self.final.values()
            if r.choice is not None
        )

    def failed_keys(self) -> set[Key]:
        """The (custom_id, model) of every task counted as failed."""
        return {k for k, r in self.final.items() if r.error is not None}
