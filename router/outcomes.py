"""Turning a stored final result into what the caller gets: a Message, or the exception
the same failure would have raised on the real-time endpoint."""

from __future__ import annotations

from typing import Any

import pydantic_core
from anthropic.types import Message

from .errors import (
    BatchResultMissingError,
    DeadlineError,
    RequestCanceledError,
    RequestExpiredError,
    RouterError,
    api_error_from_body,
)
from .store import RequestRow, states

Outcome = Message | BaseException


def outcome_of(row: RequestRow) -> Outcome:
    """The Message of a succeeded row, else the exception to raise. The row must be final."""
    if row.state not in states.FINAL_STATES or row.result is None:
        raise RouterError(f"request {row.key!r} has no result yet (state {row.state})")
    line: dict[str, Any] = pydantic_core.from_json(row.result)
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        return Message.model_validate(result["message"])
    if kind == "errored":
        return api_error_from_body(result.get("error") or {})
    if kind == "canceled":
        return RequestCanceledError(
            f"request {row.key!r} was canceled in its batch before it was processed"
            f" (after {row.attempts} attempt(s))"
        )
    if kind == "expired":
        return RequestExpiredError(
            f"request {row.key!r} expired: its batch ended (24 h limit) before it was processed"
            f" (after {row.attempts} attempt(s))"
        )
    if kind == "deadline":
        return DeadlineError(str(result.get("reason") or f"request {row.key!r} cannot meet its deadline"))
    if kind == "missing":
        return BatchResultMissingError(str(result.get("reason") or f"request {row.key!r} has no result"))
    return RouterError(f"request {row.key!r} ended with an unknown result type {kind!r}")


def unwrap(outcome: Outcome) -> Message:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
