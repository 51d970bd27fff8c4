"""OpenAI batch output and error file lines in the canonical result form (router/providers/base.py).

A line of either file is ``{"id", "custom_id", "response": {"status_code", "request_id",
"body"} | null, "error": {"code", "message"} | null}``. It becomes:

- status 200: ``succeeded``, `result.message` the ChatCompletion body with the canonical
  usage keys added to its `usage` (`input_tokens` = prompt tokens not read from the cache,
  `output_tokens` = completion tokens, `cache_read_input_tokens` = cached tokens,
  `cache_creation_input_tokens` = 0: OpenAI bills no cache writes);
- another status: ``errored``, the error typed by its status with the Anthropic names the
  retry decision reads, and ``result.openai = {"status_code", "request_id", "body"}`` kept
  so `outcome` rebuilds the exact `openai` exception;
- no response, error code ``batch_expired``: ``expired``; ``batch_cancelled``: ``canceled``;
  another code: ``errored`` as an `api_error`, its error object in ``result.openai.error``.

Lines are parsed and written with pydantic_core (Rust), one line at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

__all__ = [
    "CANONICAL_USAGE_KEYS",
    "ERROR_TYPE_BY_STATUS",
    "STATUS_BY_ERROR_TYPE",
    "canonical_line",
    "canonical_message",
    "canonical_result",
    "error_type_for",
    "provider_usage",
]

# Anthropic's error type for each HTTP status OpenAI may answer with.
ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_BY_ERROR_TYPE: dict[str, int] = {
    kind: status for status, kind in ERROR_TYPE_BY_STATUS.items() if status != 529
}
CANONICAL_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
_EXPIRED_CODE = "batch_expired"
_CANCELLED_CODE = "batch_cancelled"


def error_type_for(status: int) -> str:
    """The canonical (Anthropic) error type of an HTTP status."""
    known = ERROR_TYPE_BY_STATUS.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def _int(value: object) -> int:
    return value if type(value) is int else 0


def _with_canonical_usage(body: dict[str, Any]) -> dict[str, Any]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = {}
        body["usage"] = usage
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    usage["input_tokens"] = max(0, _int(usage.get("prompt_tokens")) - cached)
    usage["output_tokens"] = _int(usage.get("completion_tokens"))
    usage["cache_read_input_tokens"] = cached
    usage["cache_creation_input_tokens"] = 0
    return body


def canonical_message(body: dict[str, Any]) -> dict[str, Any]:
    """A ChatCompletion body with the canonical usage keys added to its `usage` (in place)."""
    return _with_canonical_usage(body)


def _error_message(body: object, status: int) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else f"HTTP {status}"


def canonical_result(line: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical `result` object of one output or error file line."""
    response = line.get("response")
    if isinstance(response, dict):
        status = _int(response.get("status_code"))
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            return {
                "type": "succeeded",
                "message": _with_canonical_usage(body),
                "openai": {"status_code": 200, "request_id": response.get("request_id")},
            }
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": error_type_for(status), "message": _error_message(body, status)},
            },
            "openai": {"status_code": status, "request_id": response.get("request_id"), "body": body},
        }
    error = line.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if code == _EXPIRED_CODE:
        return {"type": "expired"}
    if code == _CANCELLED_CODE:
        return {"type": "canceled"}
    message = error.get("message") if isinstance(error, dict) else None
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": "api_error", "message": str(message or code or "the request failed")},
        },
        "openai": {"status_code": None, "request_id": None, "error": error},
    }


def canonical_line(raw: bytes) -> bytes:
    """One output or error file line (bytes, newline optional) as a canonical line, no newline."""
    line = pydantic_core.from_json(raw)
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        raise ValueError(f"not a batch result line: {raw[:200]!r}")
    return pydantic_core.to_json({"custom_id": line["custom_id"], "result": canonical_result(line)})


def provider_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical line's usage without the keys the codec added: OpenAI's own `usage`."""
    return {key: value for key, value in usage.items() if key not in CANONICAL_USAGE_KEYS}
