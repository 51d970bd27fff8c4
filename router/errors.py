"""Exceptions raised by hybrid-router, and the mapping from API error bodies to SDK exceptions."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
from anthropic._error_classes import make_status_error

__all__ = [
    "BatchResultMissingError",
    "ConfigError",
    "DeadlineError",
    "InvalidRequestError",
    "RequestCanceledError",
    "RequestExpiredError",
    "RouterError",
    "StoreError",
    "StoreFullError",
    "api_error_from_body",
]

# The HTTP status the real-time endpoint answers with for each error type, so a deferred
# failure raises exactly the exception class the same failure would raise in real time.
STATUS_BY_ERROR_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class RouterError(Exception):
    """Base class of every error hybrid-router raises itself."""


class ConfigError(RouterError):
    """A configuration file is missing, malformed, or holds a value of the wrong form."""


class StoreError(RouterError):
    """The database cannot be opened, read or written; the message names the file (or the host
    and port) and the cause, never a password."""


class StoreFullError(StoreError):
    """The disk holding the database is full: the requests of the failed write were not stored.

    Requests acknowledged before it are stored; once space is free, the store works again.
    """


class InvalidRequestError(RouterError, ValueError):
    """The parameters of a request are wrong; raised at call time, before anything is stored."""


class RequestCanceledError(RouterError):
    """The batch holding this request was canceled before the request was processed."""


class RequestExpiredError(RouterError):
    """The batch holding this request expired (24 h) before the request was processed."""


class DeadlineError(RouterError):
    """A batch could not meet the request's deadline and its class says `on_deadline_risk = "fail"`."""


class BatchResultMissingError(RouterError):
    """A batch ended but its results could no longer be downloaded (e.g. past the 29-day limit)."""


def api_error_from_body(
    body: dict[str, Any], *, url: str = "https://api.anthropic.com/v1/messages"
) -> anthropic.APIStatusError:
    """Build the SDK exception the real-time endpoint would raise for an error body.

    `body` is the API's error object: ``{"type": "error", "error": {"type": T, "message": M}}``.
    """
    inner = body.get("error")
    error: dict[str, Any] = inner if isinstance(inner, dict) else {}
    status = STATUS_BY_ERROR_TYPE.get(str(error.get("type")), 500)
    request = httpx2.Request("POST", url)
    response = httpx2.Response(status, request=request, json=body)
    return make_status_error(f"Error code: {status} - {body}", body=body, response=response)
