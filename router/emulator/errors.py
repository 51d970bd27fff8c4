"""API errors as the emulator raises and renders them (the real API's error body and statuses)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router.providers.anthropic.errors import STATUS_BY_ERROR_TYPE

__all__ = ["STATUS_BY_ERROR_TYPE", "ApiError", "error_body", "error_response"]

# The inverse, for faults given as an HTTP status.
ERROR_TYPE_BY_STATUS: dict[int, str] = {status: kind for kind, status in STATUS_BY_ERROR_TYPE.items()}


class ApiError(Exception):
    """An error the emulator answers with: `{"type":"error","error":{...},"request_id":...}`."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status if status is not None else STATUS_BY_ERROR_TYPE.get(error_type, 500)
        self.headers: dict[str, str] = dict(headers or {})

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        """A 400 `invalid_request_error`."""
        return cls("invalid_request_error", message)

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        """A 404 `not_found_error`."""
        return cls("not_found_error", message)

    @classmethod
    def for_status(cls, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> ApiError:
        """The error the API sends with `status` (unknown statuses become `api_error`)."""
        return cls(ERROR_TYPE_BY_STATUS.get(status, "api_error"), message, status=status, headers=headers)


def page_limit(query: Mapping[str, str]) -> int:
    """A list endpoint's `limit` (1 to 1,000, default 20), refused as the API refuses it."""
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ApiError.invalid(f"limit: Input should be a valid integer, got {raw_limit!r}") from None
    if not 1 <= limit <= 1000:
        raise ApiError.invalid(f"limit: Input should be between 1 and 1000, got {limit}")
    return limit


def error_body(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The API's error object; `request_id` is left out when None."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_response(error: ApiError, request_id: str) -> web.Response:
    """Render `error` as the JSON response the real API sends."""
    text = json.dumps(error_body(error.error_type, error.message, request_id))
    headers = {**error.headers, "request-id": request_id}
    return web.Response(status=error.status, text=text, content_type="application/json", headers=headers)
