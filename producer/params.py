"""Per-model checks of a request's parameters, made before any task is published.

The request already holds its route's ranges (``schemas.api``); a model may accept less: fewer
stop sequences (``max_stop_sequences``) or a narrower range of a field its vendor cannot map
(``accepted_ranges``, e.g. Cohere has no negative penalty). Such a value is a 422 naming the
field, the model and the value, never a vendor error later.
"""

from __future__ import annotations

from typing import Any

from producer.refusals import ApiError
from schemas.api import ErrorDetail
from schemas.registry import ModelSpec
from schemas.wire import Sampling


def check_params(params: Sampling, specs: list[ModelSpec]) -> None:
    """Raise a 422 ApiError for the first value one of the requested models cannot serve."""
    count = len(params.stop)
    for spec in specs:
        if count > spec.max_stop_sequences:
            raise _invalid(
                "stop",
                list(params.stop),
                f"{spec.name} accepts at most {spec.max_stop_sequences} stop sequences "
                f"(got {count})",
            )
        for field, (low, high) in spec.accepted_ranges.items():
            value = getattr(params, field)
            if not low <= value <= high:
                raise _invalid(
                    field,
                    value,
                    f"{spec.name} accepts {low:g} to {high:g}, as its vendor cannot map the "
                    f"rest of the range (got {value})",
                )


def _invalid(field: str, value: Any, why: str) -> ApiError:
    detail = ErrorDetail(
        type="invalid_request_error",
        code="invalid_value",
        param=field,
        value=value,
        message=f"{field}: {why}",
    )
    return ApiError(422, detail)
