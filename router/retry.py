"""What happens after a failure: resubmit a batch result or fail it, and how long to back off.

`decide` is the single place that turns one per-request batch result into "send it again"
or "give the caller the error"; deadline-aware escalation (issue 3) hooks in here.
`Backoff` spaces out retries of API calls that failed as a whole (create, retrieve,
results), honouring the API's `retry-after`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

Decision = Literal["resubmit", "fail"]

RESUBMIT: Final = "resubmit"
FAIL: Final = "fail"

# Error types after which the same request may succeed if sent again.
RETRYABLE_ERROR_TYPES: Final = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
)


def error_type_of(result: Mapping[str, Any]) -> str | None:
    """The API error type of an `errored` result object (``result.error.error.type``)."""
    error = result.get("error")
    inner = error.get("error") if isinstance(error, Mapping) else None
    kind = inner.get("type") if isinstance(inner, Mapping) else None
    return kind if isinstance(kind, str) else None


def decide(
    result: Mapping[str, Any],
    *,
    attempts: int,
    max_attempts: int,
    deadline_at: float | None,
    now: float,
) -> Decision:
    """Resubmit or fail a request whose batch result is not `succeeded`.

    `result` is the line's ``result`` object, `attempts` the batch attempts made so far
    including the one that produced it, `deadline_at` the request's stored deadline.

    - `errored` with a non-retryable type (invalid request, auth, permission, not found,
      billing): fail at once; sending it again would fail the same way.
    - `errored` with `api_error` / `overloaded_error` / `rate_limit_error` / `timeout_error`,
      and `canceled`: resubmit while attempts remain.
    - `expired`: resubmit while attempts remain and the deadline has not passed (another
      batch could not answer in time; escalation to real time near the deadline is the
      deadline job's business, not the ingest's).
    """
    kind = result.get("type")
    if kind == "succeeded" or attempts >= max_attempts:
        return FAIL
    if kind == "errored":
        return RESUBMIT if error_type_of(result) in RETRYABLE_ERROR_TYPES else FAIL
    if kind == "canceled":
        return RESUBMIT
    if kind == "expired":
        return RESUBMIT if deadline_at is None or now < deadline_at else FAIL
    return FAIL


def should_resubmit(
    result: Mapping[str, Any],
    *,
    attempts: int,
    max_attempts: int,
    deadline_at: float | None,
    now: float,
) -> bool:
    """`decide` as the store's `RetryPolicy`: True to send the request again."""
    decision = decide(result, attempts=attempts, max_attempts=max_attempts, deadline_at=deadline_at, now=now)
    return decision == RESUBMIT


class Backoff:
    """Exponential backoff for one kind of API call, honouring `retry-after`.

    `failed(now, retry_after)` records a failure and returns the earliest time to try again
    (`retry_after`: the seconds the API asked to wait, if it did);
    `ready(now)` says whether that time has come; `succeeded()` resets it.
    """

    def __init__(self, *, base: float = 1.0, ceiling: float = 300.0) -> None:
        self.base = base
        self.ceiling = ceiling
        self.failures = 0
        self.not_before = -math.inf

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def failed(self, now: float, retry_after: float | None = None) -> float:
        self.failures += 1
        delay = min(self.ceiling, self.base * 2 ** (self.failures - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.ceiling))
        self.not_before = now + delay
        return self.not_before

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = -math.inf
