"""The one exception root of kafka-completions.

    KCError
    ├── ConfigError          a setting, the registry or the environment is wrong (start-up)
    ├── BrokerUnavailable    Kafka could not be reached or refused us (translated aiokafka errors)
    ├── WireError            a Kafka record is not a message of ours (goes to the DLQ)
    ├── ModelError           a model cannot serve a request
    │   ├── UnknownModel     the name is not in the registry (a client mistake)
    │   └── ModelUnavailable known, but not configured or without a live worker
    ├── JobError             a bulk job cannot be submitted or collected (producer/jobs/jobfile.py)
    │   └── JobFileInvalid   a job file has invalid lines; nothing was published
    ├── BatchError           a Batch API file or batch request cannot be served (producer/batch)
    │   ├── NotFound         no such file or batch for this API key (HTTP 404)
    │   ├── Refused          the request or the file is invalid, with every reason (HTTP 400)
    │   └── Conflict         the batch is past the state the request needs (HTTP 409)
    ├── KeyRefused           a managed-key request cannot be served (producer/tenants/keybook.py)
    │   ├── UnknownKey       no live managed key by that key, key id or alias (HTTP 404)
    │   └── KeyConflict      the alias or the custom key is taken already (HTTP 409)
    └── ReportError          a usage or costs query is invalid, naming the parameter (HTTP 400)

Third-party errors are translated where they are caught, with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any


class KCError(Exception):
    """Root of every error kafka-completions raises on purpose."""


class ConfigError(KCError):
    """A setting, the model registry or the environment is wrong; fix it and start again."""


class BrokerUnavailable(KCError):
    """Kafka could not be reached, or refused an operation."""


class WorkerFenced(BrokerUnavailable):
    """Kafka fenced a worker's results producer again and again: another worker has its id."""


class WireError(KCError):
    """A Kafka record could not be read as a message of this service."""


class ModelError(KCError):
    """A model cannot serve a request."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"{model}: {reason}")
        self.model = model
        self.reason = reason


class UnknownModel(ModelError):
    """The model name is not in the registry."""


class ModelUnavailable(ModelError):
    """The model is known but not configured, or no live worker serves it."""


class BatchError(KCError):
    """A Batch API request cannot be served; ``param`` names the field when one is at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFound(BatchError):
    """No such file or batch for this API key (another key's objects are not found either)."""


class Refused(BatchError):
    """The request or its file is invalid; the message gives every reason (and line)."""


class Conflict(BatchError):
    """The batch is past the state the request needs (e.g. cancelling a completed batch)."""


class KeyRefused(KCError):
    """A managed-key request cannot be served; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownKey(KeyRefused):
    """No live managed key by that key, key id or alias (a revoked key is not found either)."""


class KeyConflict(KeyRefused):
    """The alias or the custom key of a request is taken by another live key already."""


class ReportError(KCError):
    """A report's query is invalid: ``param`` names the parameter and ``value`` what it was."""

    def __init__(self, param: str, value: Any, message: str) -> None:
        super().__init__(f"{param}: {message} (got {value!r})")
        self.param = param
        self.value = value
