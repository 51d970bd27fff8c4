"""Anthropic API errors: an error body to the SDK exception, retry-after, and which are retryable."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
from anthropic._error_classes import make_status_error

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

# Statuses after which sending the same request again may work.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


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


def error_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The API's error object of a status error (rebuilt when the body was not one)."""
    if isinstance(exc.body, dict):
        return exc.body
    message = exc.api_message or str(exc)
    return {"type": "error", "error": {"type": exc.type or "api_error", "message": message}}


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds from an API error's `retry-after` (or `retry-after-ms`) header, if any."""
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    headers = exc.response.headers
    millis = headers.get("retry-after-ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000.0)
        seconds = headers.get("retry-after")
        if seconds is not None:
            return max(0.0, float(seconds))
    except ValueError:
        return None
    return None
